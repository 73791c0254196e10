# The MQTT agent: bring up Wi-Fi and MQTT, report state, take triggers in, and hold the ONE retry loop
# of the program (one retry loop; the resilience contract of mqtt_as: `while True: try ... except OSError`).
#
# Topics (config "topics"): commands on /switch/cmd/root and /switch/cmd/<id> (QoS 1), the retained
# state on /switch/state/<id> (state.py), last will: the retained {"state": "offline"} message.
#
# The Agent is a Link (link.py: Wi-Fi, clock, the MQTT session, publishing); intake.py takes command
# messages in and queues a trigger; commands.py runs it (policy, the update or revert, the outcome,
# the reboot, MQTT during the download).
#
# Bad config: config.load()/validate() failing is printed (reason and detail only, never the values)
# and the agent runs on config.DEFAULTS, so a device with a broken config.json still boots. The
# problem decides the first boot of a new image: one that cannot read the device's config.json is
# rolled back at once with `bad_config` (on the defaults it has no broker to prove its health on, and
# would only wait out health_timeout_s), and the old firmware reports why.
import time

import esp32
import machine

from ota import commands, config, health, intake, jobs, otadata, replay, selftest, state, version
from ota.errors import OtaError
from ota.link import Link

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


class Agent(Link):
    # cfg: a whole config as config.load()/merge() return it: every key is there, and its defaults
    # live in config.DEFAULTS only.
    # feed: the watchdog's feed (main() arms machine.WDT); called by the loop, the Wi-Fi wait and
    # the update's data path. None: no watchdog (unit tests).
    def __init__(self, cfg, mqtt_class=None, network_module=None, updater=None, jobs_path=jobs.PATH,
                 config_problem=None, feed=None):
        # jobs_path: the job file; the replay file (replay.py) lives beside it.
        self.cfg = cfg
        self.feed = feed or state.no_watchdog
        self.config_problem = config_problem  # from load_config: a new image with one rolls back
        self.ota = cfg["ota"]
        self.network = network_module
        self.mqtt_class = mqtt_class
        self.tls = bool(cfg["mqtt"]["tls"])
        self.updater = updater
        device_id = cfg.get("device_id")
        if not device_id:
            from binascii import hexlify

            device_id = hexlify(machine.unique_id()).decode()
        self.device_id = device_id
        topics = cfg["topics"]
        self.cmd_topics = (topics["cmd_root"], topics["cmd_device"].replace("{id}", device_id))
        self.state_topic = topics["state"].replace("{id}", device_id)
        running = esp32.Partition(esp32.Partition.RUNNING)
        self.slot = running.info()[4]
        try:  # allocates 4 KiB: early, before the heap fragments (MP #8382)
            self.other = running.get_next_update()
        except OSError:  # no OTA slots (factory-only build): updates and reverts are refused
            self.other = None
        try:  # version and project_name: what an image must say to be an update of this firmware
            info = version.read_descriptor(running)
            self.version, self.project = info["version"], info["project_name"]
        except (OtaError, OSError) as e:  # reported as null: the agent must run all the same
            print("agent: running version unknown:", e)
            self.version = self.project = None
        self.reporter = state.Reporter(device_id, self.version, self.slot)
        self.ha = None  # Home Assistant's update entity (ha.py), when ha.discovery is on
        if cfg["ha"]["discovery"]:
            from ota import ha

            self.ha = ha.HomeAssistant(cfg["ha"], device_id, self.version, self.cmd_topics[1], self.state_topic)
        self.intake = intake.Intake(self)  # the MQTT callback: parse, check, queue (intake.py)
        self.commands = commands.Runner(self)  # runs what the intake queued (commands.py)
        self.jobs = jobs.Jobs(jobs_path)
        self.replay = replay.Replay(jobs_path[:jobs_path.rfind("/") + 1] + replay.PATH)
        self.client = None
        self.clock_set = False
        self.pending = None  # the parsed trigger waiting for the loop (never run inside the callback)
        self.busy = None  # the job being run, while its download polls MQTT
        self.gate = None
        self._boot()

    # --- boot: what the job record says about this boot (health.py) -------------------------------
    def _boot(self):
        record = self.jobs.current or {}
        slot_states = None
        if record.get("state") == "downloading":  # only a job cut before its reboot needs otadata
            try:
                slot_states = otadata.read(esp32)
            except OSError as e:  # unreadable: classify as without it; the agent must run
                print("agent: otadata unreadable:", e)
        self.reset_cause = machine.reset_cause()  # the telemetry's "reset" (telemetry.py)
        kind, reason, detail = health.classify(self.jobs.current, self.slot, slot_states,
                                               self.reset_cause)
        job = record.get("id")
        if kind == "update" and self.config_problem:
            health.roll_back(self.jobs, machine, "bad_config", "the new image set config.json aside: %s"
                             % self.config_problem)
        if kind == "update":
            self.gate = health.Gate(self.ota["health_timeout_s"])
            self.reporter.message("confirming", job=job)
        elif kind == "normal":
            if record.get("state") in jobs.TERMINAL:  # the last outcome stays visible after a reboot
                self.reporter.message(record["state"], job=job, reason=record.get("reason"),
                                      detail=record.get("detail"))
            else:
                self.reporter.message("idle")
        else:
            final = "rolled_back" if kind == "rolled_back" else "failed"
            cost = {"t_reset": _telemetry().reset_name(self.reset_cause)} if "t_to" in record else {}
            self.jobs.update(state=final, reason=reason, detail=detail, **cost)
            self.reporter.message(final, job=job, reason=reason, detail=detail)

    # --- the loop ----------------------------------------------------------------------------------
    def run(self):
        backoff = _BACKOFF_MIN_S
        while True:
            self.feed()
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
                self.clock_set = False  # ask NTP again: a wrong time would fail every TLS check for good
                if self.gate is not None and self.gate.expired():
                    health.roll_back(self.jobs, machine, "health_timeout", "no MQTT: %s" % e)
                pause = backoff if self.gate is None else min(backoff, self.gate.remaining_ms() // 1000 + 1)
                for _ in range(pause):  # in steps the watchdog outlasts
                    self.feed()
                    time.sleep(1)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _serve(self):
        # Polls MQTT and runs the queued trigger; returns never, raises OSError when the link drops.
        keepalive_ms = self.cfg["mqtt"]["keepalive_s"] * 1000
        while True:
            self.feed()
            try:
                self.client.check_msg()
            except (IndexError, TypeError) as e:  # umqtt indexes a read the broker cut short (b"", None)
                raise OSError(104, "MQTT packet cut short: %r" % e)
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
        record = self.jobs.current or {}
        cost = {}
        if "t_to" in record:  # what the update cost, with the new image's share
            uptime_ms = state.ticks_diff(state.ticks_ms(), self.reporter.started)
            cost = _telemetry().confirmed(record, self.reset_cause, uptime_ms)
        self.jobs.update(state="ok", reason=reason, detail=detail, **cost)
        self.publish("ok", job=job, reason=reason, detail=detail)

    # --- triggers (intake.py takes them in; the loop runs what it queued) ---------------------------
    def run_pending(self):
        # Runs the queued trigger to its end: reset (does not return), or a published "ok"/"failed".
        job, self.pending = self.pending, None
        self.commands.run(job)


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
