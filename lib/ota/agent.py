# The MQTT agent: bring up Wi-Fi and MQTT, report state, take triggers in, and hold the ONE retry loop
# of the program (one retry loop; the resilience contract of mqtt_as: `while True: try ... except OSError`).
#
# Topics (config "topics"): commands on /switch/cmd/root and /switch/cmd/<id> (QoS 1), the retained
# state on /switch/state/<id> (state.py), last will: the retained {"state": "offline"} message.
#
# The Agent is the one place that holds what a job's life depends on: `pending` (the job the intake
# took, waiting for the loop), `busy` (the job being run), the health gate, and the loop. It owns the
# objects that do the work, each given what it needs: link.py (Wi-Fi, clock, the MQTT session,
# publishing), intake.py (a message -> a job, or a refusal), jobrun.py (one job to its end: policy,
# the update or revert, the outcome, the reboot), slots.py (what runs, where an update goes).
#
# Bad config: config.load()/validate() failing is printed (reason and detail only, never the values)
# and the agent runs on config.DEFAULTS, so a device with a broken config.json still boots. The
# problem decides the first boot of a new image: one that cannot read the device's config.json is
# rolled back at once with `bad_config` (on the defaults it has no broker to prove its health on, and
# would only wait out health_timeout_s), and the old firmware reports why.
import time

import esp32
import machine

from ota import config, health, intake, jobrun, jobs, otadata, replay, selftest, state
from ota.errors import OtaError, unexpected
from ota.link import Link, topics
from ota.slots import Slots

CONFIG_PATH = "config.json"
_BACKOFF_MIN_S = 2
_BACKOFF_MAX_S = 60
_POLL_S = 0.1


def load_config(path=CONFIG_PATH):
    # -> (cfg, problem): problem is None, or why config.json was set aside for the defaults.
    # config.load validates; its details name the field, never a secret's value.
    try:
        return config.load(path), None
    except OtaError as e:
        problem = str(e)
    except OSError as e:
        problem = "config unreadable (%s)" % e
    print("agent: %s; running on the defaults" % problem)
    return config.merge({}), problem


class Agent:
    # cfg: a whole config as config.load()/merge() return it: every key is there, and its defaults
    # live in config.DEFAULTS only.
    # feed: the watchdog's feed (main() arms machine.WDT); called by the loop and handed to the link
    # (the Wi-Fi wait) and the runner (the update's data path). None: no watchdog (unit tests).
    # mqtt_class, network_module, updater: None for the real ones (unit tests pass fakes).
    def __init__(self, cfg, mqtt_class=None, network_module=None, updater=None, jobs_path=jobs.PATH,
                 config_problem=None, feed=None):
        # jobs_path: the job file; the replay file (replay.py) lives beside it.
        self.cfg = cfg
        self.feed = feed or state.no_watchdog
        device_id = cfg.get("device_id")
        if not device_id:
            from binascii import hexlify

            device_id = hexlify(machine.unique_id()).decode()
        self.slots = Slots(esp32)  # early: get_next_update() allocates 4 KiB (slots.py)
        self.reporter = state.Reporter(device_id, self.slots.version, self.slots.running)
        self.jobs = jobs.Jobs(jobs_path)
        replay_store = replay.Replay(jobs_path[:jobs_path.rfind("/") + 1] + replay.PATH)
        self.ha = None  # Home Assistant's update entity (ha.py), when ha.discovery is on
        if cfg["ha"]["discovery"]:
            from ota import ha

            cmd_topics, state_topic = topics(cfg, device_id)
            self.ha = ha.HomeAssistant(cfg["ha"], device_id, self.slots.version, cmd_topics[1], state_topic)
        self.link = Link(cfg, device_id, self.reporter, self.on_message, self.on_oversize,
                         network_module, mqtt_class, self.feed, ha=self.ha, jobs=self.jobs)
        self.intake = intake.Intake(device_id, self.link.cmd_topics[1], self.jobs)
        self.runner = jobrun.Runner(self.link, self.jobs, replay_store, self.slots, cfg["ota"], updater,
                                    self.feed, network_module)
        self.pending = None  # the job the intake took, waiting for the loop (never run in the callback)
        self.busy = None  # the job being run (its download polls MQTT: the intake answers "busy")
        self.gate = None  # health.Gate on the first boot of a new image, until it confirms
        self._boot(config_problem)

    # --- boot: what the job record says about this boot (health.py) -------------------------------
    def _boot(self, config_problem):
        # config_problem: from load_config; a new image with one rolls back at once.
        record = self.jobs.current or {}
        slot_states = None
        if record.get("state") == "downloading":  # only a job cut before its reboot needs otadata
            try:
                slot_states = otadata.read(esp32)
            except OSError as e:  # unreadable: classify as without it; the agent must run
                print("agent: otadata unreadable:", e)
        self.reset_cause = machine.reset_cause()  # the telemetry's "reset" (telemetry.py)
        kind, reason, detail = health.classify(self.jobs.current, self.slots.running, slot_states,
                                               self.reset_cause)
        job_id = record.get("id")
        if kind == "update" and config_problem:
            health.roll_back(self.jobs, machine, "bad_config", "the new image set config.json aside: %s"
                             % config_problem)
        if kind == "update":
            self.gate = health.Gate(self.cfg["ota"]["health_timeout_s"])
            self.reporter.message("confirming", job=job_id)
        elif kind == "normal":
            if record.get("state") in jobs.TERMINAL:  # the last outcome stays visible after a reboot
                self.reporter.message(record["state"], job=job_id, reason=record.get("reason"),
                                      detail=record.get("detail"))
            else:
                self.reporter.message("idle")
        else:
            final = "rolled_back" if kind == "rolled_back" else "failed"
            cost = {"t_reset": _telemetry().reset_name(self.reset_cause)} if "t_to" in record else {}
            self.jobs.update(state=final, reason=reason, detail=detail, **cost)
            self.reporter.message(final, job=job_id, reason=reason, detail=detail)

    # --- the loop ----------------------------------------------------------------------------------
    def run(self):
        backoff = _BACKOFF_MIN_S
        link = self.link
        while True:
            self.feed()
            try:
                if not link.connected:
                    link.connect(None if self.gate is None else self.gate.remaining_ms())
                    backoff = _BACKOFF_MIN_S
                    self.runner.radio_up()  # the update's SSLContext, seeded with the radio on
                if self.gate is not None:
                    self._confirm()
                self._serve()
            except (OSError, MemoryError) as e:  # MemoryError: a fragmented heap while connecting
                print("agent: connection lost:", e)
                link.drop(resync=True)  # ask NTP again: a wrong time would fail every TLS check for good
                if self.gate is not None and self.gate.expired():
                    health.roll_back(self.jobs, machine, "health_timeout", "no MQTT: %s" % e)
                pause = backoff if self.gate is None else min(backoff, self.gate.remaining_ms() // 1000 + 1)
                for _ in range(pause):  # in steps the watchdog outlasts
                    self.feed()
                    time.sleep(1)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _serve(self):
        # Polls MQTT and runs the queued job; returns never, raises OSError when the link drops.
        link = self.link
        while True:
            self.feed()
            link.check()
            if self.pending is not None:
                self.run_pending()
                if not link.connected:  # the job ended without MQTT (TLS, or a drop): reconnect
                    raise OSError(104, "reconnect after job")
            link.keepalive()
            time.sleep(_POLL_S)

    def _confirm(self):
        # The health gate, once Wi-Fi and MQTT are up. Does not return on failure (reset).
        gate_state, reason, detail = health.confirm(selftest.run, self.cfg, esp32)
        job_id = (self.jobs.current or {}).get("id")
        if gate_state != "ok":
            try:
                self.link.publish("failed", job=job_id, reason=reason, detail=detail)
            except OSError:
                pass
            health.roll_back(self.jobs, machine, reason, detail)
            return
        self.gate = None
        record = self.jobs.current or {}
        cost = {}
        if "t_to" in record:  # what the update cost, with the new image's share
            uptime_ms = state.ticks_diff(state.ticks_ms(), self.reporter.started)
            cost = _telemetry().confirmed(record, self.reset_cause, uptime_ms)
        self.jobs.update(state="ok", reason=reason, detail=detail, **cost)
        self.link.publish("ok", job=job_id, reason=reason, detail=detail)

    # --- jobs: the intake takes them in from the MQTT callback, the loop runs them -----------------
    def on_message(self, topic, payload):
        # umqtt's callback: take the message in and queue its job; the job runs from the loop once the
        # PUBACK is sent. A refusal is published with its reason (the state stays while a job runs).
        # Raises OSError (publishing).
        try:
            ha = self.ha
            if ha is not None and ha.mine(topic, payload):  # HA's Install, or the release announcement
                job = ha.take(topic, payload)
                if job is None:  # an announcement: what the entity offers may have changed
                    self.link.publish_entity()
                    return
                job = self.intake.admit(job, topic, self.busy, self.pending, pressed=True)
            else:
                job = self.intake.take(topic, payload, self.busy, self.pending)
        except OtaError as e:
            self._refuse(e)
            return
        except MemoryError:
            # umqtt has read the whole packet already, so the connection is still in step: the heap
            # running out costs this one message, said as such, not the broker connection (and the
            # messages sent while reconnecting). Its PUBACK still goes out: no redelivery loop.
            print("agent: trigger refused: low_memory")
            self._refuse(OtaError("low_memory", "MemoryError while taking in the message"))
            return
        except Exception as e:  # a message the checks missed costs that message, never the agent
            self._refuse(unexpected(e))
            return
        if job is not None:
            self.pending = job

    def on_oversize(self, topic, size):
        # ota.mqtt drained a payload too big to hold: refused as trigger.parse would refuse it.
        self._refuse(intake.too_long(size))

    def _refuse(self, error):
        self.link.refuse(error.reason, error.detail, keep_state=self.busy is not None)

    def run_pending(self):
        # Runs the queued job to its end: reset (does not return), or a published "ok"/"failed".
        job, self.pending = self.pending, None
        self.busy = job
        try:
            self.runner.run(job)
        finally:
            self.busy = None


def _telemetry():
    # Imported only where a job's record has telemetry: an idle device keeps the RAM (telemetry.py).
    from ota import telemetry

    return telemetry


def main():
    # Never returns. The watchdog is armed first thing after the config is read (its timeout is
    # config, ota.watchdog_ms): from here on a hang anywhere resets the board, and on the first boot
    # of a new image that reset means the bootloader rolls it back (docs/HARDWARE.md "Watchdog").
    # An exception out of run() goes to main.py, which prints it and resets; on a new image's first
    # boot the job record says why first, so the old firmware can report it.
    cfg, problem = load_config()
    watchdog = machine.WDT(timeout=cfg["ota"]["watchdog_ms"])
    agent = Agent(cfg, config_problem=problem, feed=watchdog.feed)
    try:
        agent.run()
    except Exception as e:
        if agent.gate is not None:
            agent.jobs.update(state="rolling_back", reason="boot_failed",
                              detail="crashed: %s: %s" % (type(e).__name__, e))
        raise
