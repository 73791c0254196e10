# Running one job to its end: the policy checks, then the update or ota_revert, then the outcome: a
# reset into the new slot (does not return), or a published "ok"/"failed". A job is a trigger that
# intake.py took (trigger.parse's dict); the agent's loop hands it over once the PUBACK is out.
#
#   runner = Runner(link, jobs, replay, slots, cfg["ota"], updater=None, feed=watchdog.feed)
#   runner.run(job)     # never raises for a failed job; resets the board for a good one
#
# MQTT during the download (README "MQTT during the download"): over TLS the runner publishes
# "downloading", DISCONNECTs (a clean disconnect: the broker keeps the retained "downloading", no last
# will) and reconnects after the download: two mbedTLS sessions at once do not fit a C3 (docs/CHIP.md §5).
# Over plain MQTT it stays connected: progress is published (rate-limited), the link is polled between
# chunks (keepalive, and a second trigger is answered "busy" by the agent's intake), and a broker that
# drops mid-download does not stop the download: the result is published after the reconnect.
import machine

from ota import otadata, signature, state
from ota.errors import OtaError, from_oserror, unexpected


class Runner:
    # link: link.Link (publish, poll, drop, reconnect); jobs: jobs.Jobs, the job records; replay:
    # replay.Replay (signature.check); slots: slots.Slots (running slot and version, the other
    # slot); ota: the "ota" config section. updater: update.run's signature (unit tests pass a fake);
    # feed: the watchdog's, for the download. network_module: for the Wi-Fi RSSI the telemetry samples
    # (telemetry.py; None imports network).
    def __init__(self, link, jobs, replay, slots, ota, updater=None, feed=None, network_module=None):
        self.link = link
        self.jobs = jobs
        self.replay = replay
        self.slots = slots
        self.ota = ota
        self.updater = updater
        self.feed = feed or state.no_watchdog
        self.network = network_module
        self.job = None  # the job being run
        self.throttle = None  # per job
        self.started = None  # the job whose record jobs.start wrote (update, revert)
        self.meter = None  # the update job's telemetry.Meter
        # The update's buffer, taken now, at start-up, while the heap is still in one piece, and its
        # SSLContext once the radio is on (radio_up), both lent to every update (workspace.py). An
        # injected updater (tests) has none.
        self.workspace = None
        if updater is None:
            from ota.workspace import Workspace

            self.workspace = Workspace(ota)

    # The link connected (Wi-Fi is up, so the chip's RNG is a true one): the workspace's context is
    # made now, the first time. Never raises.
    def radio_up(self):
        if self.workspace is not None:
            self.workspace.make_context()

    def run(self, job):
        # Never raises for a failed job: the reason goes into the job record and the state topic.
        self.job = job
        self.started = self.meter = None
        # The clock again if NTP failed when the link came up (the RTC starts at 2000-01-01): the
        # download's certificate check and a signed trigger's expiry need it. A no-op once it is set.
        self.link.set_clock()
        try:
            self._check_policy(job)
            if self.slots.other is None:
                raise OtaError("no_ota_slot", "this build has no second OTA slot")
            if job["type"] == "ota_revert":
                self._revert(job)
            else:
                self._update(job)
        except OtaError as e:
            if e.reason == "replayed":  # the operator's own trigger again: its outcome stays as it is
                self.link.refuse(e.reason, e.detail, keep_state=True)
            else:
                self._finish(job, "failed", e.reason, e.detail)
        except OSError as e:  # update.run maps I/O to reasons; this is the job file or the flash
            self._finish(job, "failed", from_oserror(e).reason, str(e))
        except MemoryError:  # the GC heap ran out (an import or a buffer): report it, keep running
            import gc

            gc.collect()
            self._finish(job, "failed", "low_memory", "MemoryError")
        except Exception as e:  # a bug or an unchecked input: reported, the agent keeps running
            error = unexpected(e)
            self._finish(job, "failed", error.reason, error.detail)
        finally:
            self.job = None

    def _try_publish(self, state_name, **fields):
        # For the job path: a broker gone mid-job must not fail the job. The loop reconnects later
        # and publishes the latest state again.
        try:
            self.link.publish(state_name, **fields)
        except OSError as e:
            print("agent: MQTT lost during the job:", e)
            self.link.drop()

    def _finish(self, job, final, reason=None, detail=None):
        if self.started is job:  # its own record, written when it started
            cost = self.meter.fields() if self.meter is not None else {}
            self.jobs.update(state=final, reason=reason, detail=detail, **cost)
        else:  # refused before it started: remembered, so a retained trigger is not refused again
            # ...but only an unsigned one (its id is all there is) or one whose signature verified.
            # A signed trigger refused before or by the signature check proves nothing: remembering
            # its id would let anyone who guesses a job id block the operator's real trigger.
            self.jobs.start(job, final, remember=job["signature"] is None or bool(job.get("verified")),
                            reason=reason, detail=detail, from_slot=self.slots.running,
                            from_version=self.slots.version)
        self._try_publish(final, job=job["id"], reason=reason, detail=detail)

    def _check_policy(self, job):
        # Raises OtaError sha256_required, expired, and the signature reasons below.
        ota = self.ota
        if job["type"] == "ota_trigger" and job["sha256"] is None and ota.get("require_sha256"):
            raise OtaError("sha256_required", "policy ota.require_sha256: the trigger has no sha256")
        if job["type"] == "ota_trigger" and job["url"][:7].lower() == "http://" and not ota.get("allow_http"):
            # Said before "downloading" is published (https.open would refuse it all the same).
            raise OtaError("http_not_allowed", "policy ota.allow_http is off: use https://")
        now = state.unix_time()
        if job["expires"] is not None and now is not None and signature.has_expired(job["expires"], now):
            raise OtaError("expired", "expired %d s ago" % (now - job["expires"]))
        # Before anything is downloaded (docs/SIGNING.md). Raises unsigned, no_signing_key,
        # bad_signature, missing_id, missing_expires, missing_seq, clock_not_set, expired,
        # expires_too_far, wrong_target, replayed. With a verified signature the trigger's sha256 is
        # the operator's word (the web server is untrusted storage), and its seq is persisted.
        job["verified"] = signature.check(job, ota, self.link.device_id, now, self.replay,
                                          signature.public_keys(ota))

    def _update(self, job):
        updater = self.updater
        slots, ota = self.slots, self.ota
        self.meter = meter = _meter(job, self.network)
        target, https = slots.other, None  # an injected updater (tests) gets them as they are
        if updater is None:
            from ota import https, update

            updater = update.run
            # What the update costs, timed from outside the data path (telemetry.py).
            target, https = meter.partition(target), meter.https(https)
        to_slot = slots.other.info()[4]
        # to_otadata: the target's otadata state before this job, so that after a double power cut an
        # ABORTED entry can be told apart from one an earlier job left there (health.classify).
        self.jobs.start(job, "downloading", from_version=slots.version, from_slot=slots.running,
                        to_slot=to_slot, to_otadata=otadata.read().get(to_slot),
                        started=state.unix_time())
        self.started = job
        self.throttle = state.Throttle(ota["progress_interval_s"] * 1000, 5)
        self._try_publish("downloading", job=job["id"], progress=0 if job["size"] else None, done=0,
                          total=job["size"])
        if self.link.tls:
            self.link.disconnect()  # one TLS session at a time on a C3 (docs/CHIP.md §5)
        policy = ota
        downgrade = signature.allow_downgrade(job, ota, job.get("verified"))
        if downgrade != bool(ota.get("allow_downgrade")):
            policy = dict(ota)
            policy["allow_downgrade"] = downgrade  # only a verified trigger can say so
        kwargs = _artifact(job)
        if https is not None:
            kwargs["https"] = https
        if self.workspace is not None:
            kwargs["workspace"] = self.workspace
        result = updater(job["url"], sha256=job["sha256"], size=job["size"], version=job["version"],
                         token=ota.get("token"), config=policy, progress=self._progress,
                         running=slots.version, target=target,  # known since start-up
                         running_project=slots.project, project=job.get("project"),
                         feed=self.feed, **kwargs)
        if result["result"] == "same_version":
            self._finish(job, "ok", "same_version", "already running %s" % result.get("version"))
            return
        meter.to = result.get("version") or meter.to  # the image's own, when the trigger named none
        self.jobs.update(state="rebooting", to_slot=result.get("slot"), to_version=result.get("version"),
                         **meter.fields())
        self._reboot(job, done=result.get("bytes"), total=result.get("bytes"), progress=100)

    def _progress(self, done, total):
        # update.run's callback, every ota.progress_bytes. Polls MQTT (keepalive, triggers -> busy)
        # and publishes rate-limited progress. Never raises: the download matters more than MQTT.
        link = self.link
        if self.meter is not None:
            self.meter.sample()  # lowest heap and RSSI while the download runs
        if not link.connected:
            return
        try:
            link.check()
            if total and done >= total:
                link.publish("verifying", job=self.job["id"], progress=100, done=done, total=total)
            elif self.throttle.due(done, total):
                link.publish("downloading", job=self.job["id"], progress=state.percent(done, total),
                             done=done, total=total)
        except OSError as e:
            print("agent: MQTT lost during the download:", e)
            link.drop()

    def _revert(self, job):
        # ota_revert: boot the other slot, if it holds an app image of this product that did not fail
        # its last boot and is not a downgrade the policy refuses. Raises OtaError revert_no_image,
        # wrong_product, bad_version, downgrade, revert_aborted_image, revert_invalid_image; OSError
        # from the flash reads.
        from ota import image

        slots = self.slots
        other = slots.other
        part = other.info()
        label, size = part[4], part[3]
        first = bytearray(image.HEADER_BYTES)
        other.readblocks(0, first)
        try:
            info = image.check_header(first, size)
        except OtaError as e:
            raise OtaError("revert_no_image", "%s: %s" % (label, e))
        # Booting the other slot is an update to its version: the same product and downgrade rules
        # (compat.check), so an unsigned ota_revert cannot install an older firmware the policy
        # refuses. Raises wrong_product, bad_version, downgrade.
        from ota import compat

        compat.check(info, slots.project, slots.version, None, job.get("project"),
                     signature.allow_downgrade(job, self.ota, job.get("verified")))
        # ABORTED: the image booted in PENDING_VERIFY and reset before it confirmed (health gate failed,
        # crashed, power cut); INVALID: it was declared bad. Booting it again would only roll back.
        last = otadata.read().get(label)
        if last in ("ABORTED", "INVALID"):
            raise OtaError("revert_aborted_image", "%s: its last boot ended %s" % (label, last))
        self.jobs.start(job, "rebooting", from_version=slots.version, from_slot=slots.running,
                        to_slot=label, to_version=info.get("version"), started=state.unix_time())
        self.started = job
        try:
            other.set_boot()  # validates the whole image (esp_image_verify)
        except OSError as e:
            raise OtaError("revert_invalid_image", "%s: %s" % (label, e))
        self._reboot(job)

    def _reboot(self, job, **fields):
        # Never returns. set_boot() already pointed otadata at the new slot: whatever goes wrong
        # while saying so (even a MemoryError), the reset must happen, or the next unrelated reset
        # would boot the new image with no one watching its health gate.
        try:
            if not self.link.connected:
                try:  # one attempt to say "rebooting"; the new image reports the outcome in any case
                    self.link.open()
                except OSError as e:
                    print("agent: no MQTT before reboot:", e)
            self._try_publish("rebooting", job=job["id"], **fields)
            self.link.disconnect()  # clean: no "offline" last will over the "rebooting" state
        finally:
            machine.reset()


# update.run's artifact argument for a compressed or delta trigger; nothing at all for a plain one.
def _artifact(job):
    if not job.get("encoding"):
        return {}
    from ota import artifact

    found = artifact.of(job)
    return {"artifact": found} if found else {}


def _meter(job, network):
    # The job's telemetry.Meter: RSSI from the station interface, IDF heap from esp32 (absent on the
    # host: not sampled). network: the link's network module (None imports it).
    from ota import telemetry

    try:
        import esp32
    except ImportError:
        esp32 = None
    if network is None:
        try:
            import network
        except ImportError:
            network = None
    try:
        wlan = network.WLAN(network.STA_IF) if network is not None else None
    except (AttributeError, OSError):  # a network module without a station interface (tests)
        wlan = None
    return telemetry.Meter(job.get("version"), esp32, wlan, job.get("encoding") or "full")
