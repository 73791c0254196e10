# The MQTT agent: bring up Wi-Fi and MQTT, report state, run triggers, and hold the ONE retry loop of
# the program (STYLE.md 5; the resilience contract of mqtt_as: `while True: try ... except OSError`).
#
# Topics (config "topics"): commands on /switch/cmd/root and /switch/cmd/<id> (QoS 1), the retained
# state on /switch/state/<id> (state.py), last will: the retained {"state": "offline"} message.
#
# MQTT during the download (README "MQTT during the download"): over TLS the agent publishes
# "downloading", DISCONNECTs (a clean disconnect: the broker keeps the retained "downloading", no last
# will) and reconnects after the download: two mbedTLS sessions at once do not fit a C3 (PLATFORM.md §5).
# Over plain MQTT it stays connected: progress is published (rate-limited), the socket is polled
# between chunks (keepalive, and a second trigger is answered "busy"), and a broker that drops
# mid-download does not stop the download: the result is published after the reconnect.
#
# Bad config: config.load()/validate() failing is printed (reason and detail only, never the values)
# and the agent runs on config.DEFAULTS, so a device with a broken config.json still boots, and a NEW
# image whose config does not validate fails its self-test and is rolled back.
import time

import esp32
import machine

from ota import config, health, jobs, selftest, signature, state, trigger, version
from ota import mqtt as mqtt_client
from ota.errors import OtaError

CONFIG_PATH = "config.json"
_BACKOFF_MIN_S = 2
_BACKOFF_MAX_S = 60
_WIFI_WAIT_MS = 20000
_POLL_S = 0.1
_ENOMEM = 12


def _section(cfg, name):
    return cfg.get(name) or {}


def load_config(path=CONFIG_PATH):
    # config.load validates; its details name the field, never a secret's value.
    try:
        return config.load(path)
    except OtaError as e:
        print("agent: %s; running on the defaults" % e)
    except OSError as e:
        print("agent: config unreadable (%s); running on the defaults" % e)
    return config.merge({})


class Agent:
    def __init__(self, cfg, mqtt_class=None, network_module=None, updater=None, jobs_path=jobs.PATH):
        self.cfg = cfg
        self.ota = _section(cfg, "ota")
        self.network = network_module
        self.mqtt_class = mqtt_class
        self.tls = bool(_section(cfg, "mqtt").get("tls"))
        self.updater = updater
        device_id = cfg.get("device_id")
        if not device_id:
            from binascii import hexlify

            device_id = hexlify(machine.unique_id()).decode()
        self.device_id = device_id
        topics = _section(cfg, "topics")
        self.cmd_topics = (topics.get("cmd_root", "/switch/cmd/root"),
                           topics.get("cmd_device", "/switch/cmd/{id}").replace("{id}", device_id))
        self.state_topic = topics.get("state", "/switch/state/{id}").replace("{id}", device_id)
        running = esp32.Partition(esp32.Partition.RUNNING)
        self.slot = running.info()[4]
        try:  # allocates 4 KiB: early, before the heap fragments (MP #8382)
            self.other = running.get_next_update()
        except OSError:  # no OTA slots (factory-only build): updates and reverts are refused
            self.other = None
        try:
            self.version = version.running_version()
        except (OtaError, OSError) as e:  # reported as null: the agent must run all the same
            print("agent: running version unknown:", e)
            self.version = None
        self.reporter = state.Reporter(device_id, self.version, self.slot)
        self.throttle = None  # per job
        self.jobs = jobs.Jobs(jobs_path)
        self.client = None
        self.clock_set = False
        self.pending = None  # the parsed trigger waiting for the loop (never run inside the callback)
        self.busy = None  # the job being run, while its download polls MQTT
        self.gate = None
        self._boot()

    # --- boot: what the job record says about this boot (health.py) -------------------------------
    def _boot(self):
        kind, reason, detail = health.classify(self.jobs.current, self.slot)
        record = self.jobs.current or {}
        job = record.get("id")
        if kind == "update":
            self.gate = health.Gate(self.ota.get("health_timeout_s", 120))
            self.reporter.message("confirming", job=job)
        elif kind == "normal":
            if record.get("state") in jobs.TERMINAL:  # the last outcome stays visible after a reboot
                self.reporter.message(record["state"], job=job, reason=record.get("reason"),
                                      detail=record.get("detail"))
            else:
                self.reporter.message("idle")
        else:
            final = "rolled_back" if kind == "rolled_back" else "failed"
            self.jobs.update(state=final, reason=reason, detail=detail)
            self.reporter.message(final, job=job, reason=reason, detail=detail)

    # --- connections ---------------------------------------------------------------------------------
    def _wifi(self):
        # Raises OSError when the link is not up within _WIFI_WAIT_MS (or the health deadline).
        network = self.network
        if network is None:
            import network
        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        if wlan.isconnected():
            return
        wifi = _section(self.cfg, "wifi")
        wlan.connect(wifi.get("ssid"), wifi.get("password"))
        wait_ms = _WIFI_WAIT_MS if self.gate is None else min(_WIFI_WAIT_MS, self.gate.remaining_ms())
        start = state.ticks_ms()
        while not wlan.isconnected():
            if state.ticks_diff(state.ticks_ms(), start) > wait_ms:
                raise OSError(110, "wifi not connected")
            time.sleep(_POLL_S)

    def _set_clock(self):
        # TLS certificate checks need the time; a failure is tolerated (plain MQTT, http URLs work).
        if self.clock_set:
            return
        try:
            import ntptime

            ntptime.settime()
            self.clock_set = True
        except (OSError, OverflowError, ImportError) as e:
            print("agent: ntptime failed:", e)

    def _tls_context(self, mqtt):
        # The verified context for MQTT over TLS; ota.mqtt.client hands it to either umqtt.simple
        # flavour (micropython-lib's ssl=<SSLContext>, PyPI 1.3.4's ssl=True + `import ussl`) with
        # server_hostname = the broker host: SNI and the name check. Raises OSError (CA file).
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED  # the MPL default is CERT_NONE (PLATFORM.md §6)
        with open(mqtt.get("ca_path", "ca.der"), "rb") as f:
            ctx.load_verify_locations(cadata=f.read())  # DER
        return ctx

    def _mqtt(self):
        # Connects, subscribes, publishes the retained state. Raises OSError (MQTTException is
        # turned into OSError: the loop handles both the same way).
        mqtt_class = self.mqtt_class
        if mqtt_class is None:
            from umqtt.simple import MQTTClient as mqtt_class
        mqtt = _section(self.cfg, "mqtt")
        context = self._tls_context(mqtt) if self.tls else None
        client = mqtt_client.client(mqtt_class, self.device_id, mqtt.get("host"),
                                    mqtt.get("port") or 0,  # 0: umqtt picks 1883, or 8883 with TLS
                                    mqtt.get("user"), mqtt.get("password"),
                                    mqtt.get("keepalive_s", 60), ssl_context=context,
                                    max_payload=trigger.MAX_PAYLOAD, on_oversize=self._oversize)
        client.set_callback(self._on_message)
        client.set_last_will(self.state_topic.encode(), self.reporter.offline(), retain=True, qos=1)
        try:
            client.connect()
            self.client = client
            for topic in self.cmd_topics:
                client.subscribe(topic.encode(), qos=1)
        except Exception as e:  # umqtt's MQTTException (CONNACK refused), assert on a garbled reply
            self._drop()
            if isinstance(e, OSError):
                raise
            raise OSError(111, "mqtt: %r" % e)
        self.last_send = state.ticks_ms()
        self._publish_again()

    def _drop(self):
        client, self.client = self.client, None
        if client is not None and client.sock is not None:
            try:
                client.sock.close()
            except OSError:
                pass

    def _disconnect(self):
        # A clean DISCONNECT: the broker discards the last will, the retained state stays as it is.
        client, self.client = self.client, None
        if client is not None:
            try:
                client.disconnect()
            except OSError:
                pass

    def publish(self, state_name, **fields):
        # Builds the state message; sends it if connected. QoS 0: umqtt's QoS 1 publish waits for the
        # PUBACK inside wait_msg, which would re-enter _on_message. Raises OSError.
        msg = self.reporter.message(state_name, **fields)
        if self.client is not None:
            self.client.publish(self.state_topic.encode(), msg, retain=True)
            self.last_send = state.ticks_ms()

    def _publish_again(self):
        # After a (re)connect: the latest state, rebuilt with fresh heap/uptime/ts.
        last = self.reporter.last_state
        self.publish(last[0], **last[1])

    # --- the loop ----------------------------------------------------------------------------------
    def run(self):
        backoff = _BACKOFF_MIN_S
        while True:
            try:
                if self.client is None:
                    self._wifi()
                    self._set_clock()
                    self._mqtt()
                    backoff = _BACKOFF_MIN_S
                if self.gate is not None:
                    self._confirm()
                self._serve()
            except (OSError, MemoryError) as e:  # MemoryError: a fragmented heap while connecting
                print("agent: connection lost:", e)
                self._drop()
                if self.gate is not None and self.gate.expired():
                    health.roll_back(self.jobs, machine, "health_timeout", "no MQTT: %s" % e)
                pause = backoff if self.gate is None else min(backoff, self.gate.remaining_ms() // 1000 + 1)
                time.sleep(pause)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _serve(self):
        # Polls MQTT and runs the queued trigger; returns never, raises OSError when the link drops.
        keepalive_ms = _section(self.cfg, "mqtt").get("keepalive_s", 60) * 1000
        while True:
            self.client.check_msg()
            if self.pending is not None:
                self.run_pending()
                if self.client is None:  # the job ended without MQTT (TLS, or a drop): reconnect
                    raise OSError(104, "reconnect after job")
            if keepalive_ms and state.ticks_diff(state.ticks_ms(), self.last_send) > keepalive_ms // 2:
                self.client.ping()
                self.last_send = state.ticks_ms()
            time.sleep(_POLL_S)

    def _confirm(self):
        # The health gate, once Wi-Fi and MQTT are up. Does not return on failure (reset).
        gate_state, reason, detail = health.confirm(selftest.run, self.cfg, esp32)
        job = (self.jobs.current or {}).get("id")
        if gate_state != "ok":
            try:
                self.publish("failed", job=job, reason=reason, detail=detail)
            except OSError:
                pass
            health.roll_back(self.jobs, machine, reason, detail)
            return
        self.gate = None
        self.jobs.update(state="ok", reason=reason, detail=detail)
        self.publish("ok", job=job, reason=reason, detail=detail)

    # --- triggers ----------------------------------------------------------------------------------
    def _on_message(self, topic, payload):
        # umqtt's callback: parse and queue only; the job runs from the loop once the PUBACK is sent.
        try:
            job = trigger.parse(payload)
        except OtaError as e:
            print("agent: bad trigger:", e)
            self._refuse(e.reason, e.detail)
            return
        if job is None:
            return
        if not signature.target_matches(job["target"], self.device_id):
            # On the fleet topic a trigger for other devices is none of our business; on our own
            # topic it is a mistake (or a replay) worth saying so.
            if topic == self.cmd_topics[1] or topic == self.cmd_topics[1].encode():
                self._refuse("wrong_target", "for %s, not %s" % (job["target"], self.device_id))
            return
        if job["id"] is None and job["signature"] is None:  # a signed trigger must carry its own id
            job["id"] = _auto_id(job)
        if job["id"] is not None and (self.jobs.seen_before(job["id"])
                                      or (self.pending or {}).get("id") == job["id"]):
            # Silent for a QoS 1 redelivery or a retained trigger seen again; a signed trigger
            # replayed is said out loud (the state stays what it is, with the reason added).
            print("agent: duplicate job ignored:", job["id"])
            if job["signature"] is not None and (self.busy or {}).get("id") != job["id"]:
                self._refuse("replayed", "job %s was seen before" % job["id"], keep_state=True)
            return
        if self.busy is not None or self.pending is not None:
            self._refuse("busy", "refused " + job["id"])
            return
        self.pending = job

    def _oversize(self, topic, size):
        # ota.mqtt drained a payload too big to hold: refused as trigger.parse would refuse it.
        print("agent: bad trigger: too_long:", size, "bytes")
        self._refuse("too_long", "%d bytes > %d" % (size, trigger.MAX_PAYLOAD))

    def _refuse(self, reason, detail, keep_state=False):
        # A trigger that is not run. While a job runs (or keep_state) the state stays, with the
        # reason added.
        if self.busy is None and not keep_state:
            self.publish("failed", reason=reason, detail=detail)
        else:
            name, fields = self.reporter.last_state
            fields = dict(fields)
            fields.update(reason=reason, detail=detail)
            self.publish(name, **fields)

    def _try_publish(self, state_name, **fields):
        # For the job path: a broker gone mid-job must not fail the job. The loop reconnects later
        # and publishes the latest state again.
        try:
            self.publish(state_name, **fields)
        except OSError as e:
            print("agent: MQTT lost during the job:", e)
            self._drop()

    def run_pending(self):
        # Runs the queued trigger to its end: reset (does not return), or a published "ok"/"failed".
        job, self.pending = self.pending, None
        try:
            self._check_policy(job)
            if self.other is None:
                raise OtaError("no_ota_slot", "this build has no second OTA slot")
            if job["type"] == "ota_revert":
                self._revert(job)
            else:
                self._update(job)
        except OtaError as e:
            self._finish(job, "failed", e.reason, e.detail)
        except OSError as e:  # update.run maps I/O to reasons; this is the job file or the flash
            self._finish(job, "failed", "low_memory" if e.errno == _ENOMEM else "io_error", str(e))
        except MemoryError:  # the GC heap ran out (an import or a buffer): report it, keep running
            import gc

            gc.collect()
            self._finish(job, "failed", "low_memory", "MemoryError")
        finally:
            self.busy = None

    def _finish(self, job, final, reason=None, detail=None):
        record = self.jobs.current
        if record is not None and record.get("id") == job["id"]:
            self.jobs.update(state=final, reason=reason, detail=detail)
        else:  # refused before it started: remembered, so a retained trigger is not refused again
            self.jobs.start(job, final, reason=reason, detail=detail, from_slot=self.slot,
                            from_version=self.version)
        self._try_publish(final, job=job["id"], reason=reason, detail=detail)

    def _check_policy(self, job):
        # Raises OtaError sha256_required, expired, and the signature reasons below.
        if job["type"] == "ota_trigger" and job["sha256"] is None and self.ota.get("require_sha256"):
            raise OtaError("sha256_required", "policy ota.require_sha256: the trigger has no sha256")
        if job["type"] == "ota_trigger" and job["url"][:7].lower() == "http://" and not self.ota.get("allow_http"):
            # Said before "downloading" is published (https.open would refuse it all the same).
            raise OtaError("http_not_allowed", "policy ota.allow_http is off: use https://")
        now = state.unix_time()
        if job["expires"] is not None and now is not None and now > job["expires"]:
            raise OtaError("expired", "expired %d s ago" % (now - job["expires"]))
        # Before anything is downloaded (docs/SIGNING.md). Raises unsigned, no_signing_key,
        # bad_signature, missing_id, missing_expires, clock_not_set, expired, expires_too_far,
        # wrong_target, replayed. With a verified signature the trigger's sha256 is the operator's
        # word: the web server is untrusted storage.
        job["verified"] = signature.check(job, self.ota, self.device_id, now, self.jobs.seen,
                                          signature.public_keys(self.ota))

    def _update(self, job):
        updater = self.updater
        if updater is None:
            from ota import update

            updater = update.run
        self.jobs.start(job, "downloading", from_version=self.version, from_slot=self.slot,
                        to_slot=self.other.info()[4], started=state.unix_time())
        self.busy = job
        self.throttle = state.Throttle(self.ota.get("progress_interval_s", 5) * 1000, 5)
        self._try_publish("downloading", job=job["id"], progress=0 if job["size"] else None, done=0,
                          total=job["size"])
        if self.tls:
            self._disconnect()  # one TLS session at a time on a C3 (PLATFORM.md §5)
        policy = self.ota
        downgrade = signature.allow_downgrade(job, self.ota, job.get("verified"))
        if downgrade != bool(self.ota.get("allow_downgrade")):
            policy = dict(self.ota)
            policy["allow_downgrade"] = downgrade  # only a verified trigger can say so
        result = updater(job["url"], sha256=job["sha256"], size=job["size"], version=job["version"],
                         token=self.ota.get("token"), config=policy, progress=self._progress)
        if result["result"] == "same_version":
            self._finish(job, "ok", "same_version", "already running %s" % result.get("version"))
            return
        self.jobs.update(state="rebooting", to_slot=result.get("slot"), to_version=result.get("version"))
        self._reboot(job, done=result.get("bytes"), total=result.get("bytes"), progress=100)

    def _progress(self, done, total):
        # update.run's callback, every ota.progress_bytes. Polls MQTT (keepalive, triggers -> busy)
        # and publishes rate-limited progress. Never raises: the download matters more than MQTT.
        if self.client is None:
            return
        try:
            self.client.check_msg()
            if total and done >= total:
                self.publish("verifying", job=self.busy["id"], progress=100, done=done, total=total)
            elif self.throttle.due(done, total):
                self.publish("downloading", job=self.busy["id"], progress=state.percent(done, total),
                             done=done, total=total)
        except OSError as e:
            print("agent: MQTT lost during the download:", e)
            self._drop()

    def _revert(self, job):
        # ota_revert: boot the other slot, if it holds an app image. Raises OtaError revert_no_image,
        # revert_invalid_image.
        from ota import image

        label, size = self.other.info()[4], self.other.info()[3]
        first = bytearray(0x100)
        self.other.readblocks(0, first)
        try:
            info = image.check_header(first, size)
        except OtaError as e:
            raise OtaError("revert_no_image", "%s: %s" % (label, e))
        self.jobs.start(job, "rebooting", from_version=self.version, from_slot=self.slot, to_slot=label,
                        to_version=info.get("version"), started=state.unix_time())
        try:
            self.other.set_boot()  # validates the whole image (esp_image_verify)
        except OSError as e:
            raise OtaError("revert_invalid_image", "%s: %s" % (label, e))
        self._reboot(job)

    def _reboot(self, job, **fields):
        # Never returns. set_boot() already pointed otadata at the new slot: whatever goes wrong
        # while saying so (even a MemoryError), the reset must happen, or the next unrelated reset
        # would boot the new image with no one watching its health gate.
        try:
            if self.client is None:
                try:  # one attempt to say "rebooting"; the new image reports the outcome in any case
                    self._mqtt()
                except OSError as e:
                    print("agent: no MQTT before reboot:", e)
            self._try_publish("rebooting", job=job["id"], **fields)
            self._disconnect()  # clean: no "offline" last will over the "rebooting" state
        finally:
            machine.reset()


def _auto_id(job):
    # A trigger without "id" (the seed guide's minimal message) gets one from its content, so its
    # redelivery is still recognised. To run the same URL again, send an "id".
    import hashlib
    from binascii import hexlify

    text = "%s|%s|%s|%s" % (job["type"], job.get("url"), job.get("sha256"), job.get("version"))
    return "auto-" + hexlify(hashlib.sha256(text.encode()).digest()[:6]).decode()


def main():
    cfg = load_config()
    Agent(cfg).run()
