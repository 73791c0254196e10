"""Lightweight simulated devices: CPython objects that answer MQTT triggers the way lib/ota/agent.py
does, without flash, HTTP or MicroPython. Thousands fit in one process: devices share a few MQTT
connections (each device subscribes to its own /switch/cmd/<id> on its connection, the connection
subscribes once to /switch/cmd/root and hands a root trigger to all of its devices), and one
scheduler thread runs every device's timed steps.

    fleet = LightFleet(host, port)
    fleet.add("dev-001", version="1.0.0")                       # answers ok
    fleet.add("dev-002", "1.0.0", Behavior("fail", reason="bad_sha256"))
    fleet.add("dev-003", "1.0.0", Behavior("rollback", reason="selftest_failed"))
    fleet.add("dev-004", "1.0.0", Behavior("stall"))            # says downloading, then nothing
    fleet.start()          # connects, subscribes, publishes each retained state, waits for the broker
    ...
    fleet.devices["dev-001"].version, .commands (every parsed command received), .history (states)
    fleet.stop()

What is the firmware's here: the trigger parser (lib/ota/trigger.py, the device's own), the state
messages (lib/ota/state.Reporter), the order of states and the job bookkeeping of agent.py: a job id
seen before is ignored (the last 16), a trigger while busy is answered "busy" on the current state,
a "target" not naming this device is ignored (signature.target_matches), a trigger without "id"
gets the agent's content-derived id. Signatures are not verified.

What is not: no download (the new version is the trigger's "version"), no last will per device
(go_offline() publishes the "offline" message the broker would), a device never really resets.

Hostile devices, for the adversarial fleet tests (host_tests/faults/test_faults_fleet.py):
Behavior("lie_ok") reports ok without updating (its version stays), "lie_same" reports ok with
same_version while below the target, "garbage" answers with malformed or hostile state messages
(GARBAGE) and then nothing, "flood" answers honestly but republishes its last state message
`flood_per_s` times a second from start() to stop(); a device that shares another's id is a second
LightFleet with a device of the same id.
"""
import heapq
import itertools
import os
import re
import sys
import threading
import time

_LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib")
if _LIB not in sys.path:
    sys.path.insert(0, _LIB)
from ota import signature as device_signature  # noqa: E402
from ota import state as device_state  # noqa: E402
from ota import trigger as device_trigger  # noqa: E402
from ota import version as device_version  # noqa: E402
from ota.errors import OtaError  # noqa: E402
from ota.intake import auto_id  # noqa: E402  the device's own: a redelivery gets the same id
from ota.jobs import MAX_SEEN  # noqa: E402

CMD_ROOT = "/switch/cmd/root"
OUTCOMES = ("ok", "fail", "rollback", "stall", "offline", "lie_ok", "lie_same", "garbage", "flood")
# What a "garbage" device publishes on its state topic when triggered: wrong types, out of range,
# not JSON, escape sequences, rich markup, another device's id, a message far too big.
GARBAGE = (b'{"id": "%(id)s", "version": 5, "state": "downloading", "job": "%(job)s"}',
           b'{"id": "%(id)s", "version": "1.0.0", "state": "downloading", "progress": 1e400, "job": "%(job)s"}',
           b'{"id": "%(id)s", "version": "1.0.0", "state": "ok", "ts": NaN, "job": "%(job)s"}',
           b'[1, 2, 3]', b'\xff\xfe{', b'[' * 20000,
           b'{"id": "someone-else", "version": "1.0.1", "state": "ok", "job": "%(job)s"}',
           b'{"id": "%(id)s", "version": "1.0.1\\u001b[2J", "state": "ok\\u001b[H", "job": "%(job)s"}',
           b'{"id": "%(id)s", "version": "1.0.0", "state": "failed", "reason": "[/][bold]", "job": "%(job)s", '
           b'"detail": "\\u001b[2J\\rALL DEVICES OK"}',
           b'{"id": "%(id)s", "version": "1.0.0", "state": "downloading", "job": "%(job)s", "detail": "'
           + b'x' * 10000 + b'"}')
_SUBSCRIBE_BATCH = 200


class Behavior:
    """How a device answers an ota_trigger.
    outcome: ok | fail (failed with `reason` during the download) | rollback (boots the new image,
    its health gate fails with `reason`, the bootloader goes back: rolled_back) | stall (downloading,
    then silence) | offline (drops off the broker: the "offline" last will).
    download_s: time from the first "downloading" to "verifying"; progress_steps: progress messages
    in between; reboot_s: from "rebooting" to the new image's "confirming"; confirm_s: to "ok"."""

    def __init__(self, outcome="ok", reason=None, download_s=0.05, progress_steps=2, reboot_s=0.02,
                 confirm_s=0.01, allow_downgrade=False, flood_per_s=500):
        if outcome not in OUTCOMES:
            raise ValueError("outcome must be one of %s" % (OUTCOMES,))
        self.outcome = outcome
        self.reason = reason or {"fail": "bad_sha256", "rollback": "selftest_failed"}.get(outcome)
        self.download_s = download_s
        self.progress_steps = progress_steps
        self.reboot_s = reboot_s
        self.confirm_s = confirm_s
        self.allow_downgrade = allow_downgrade
        self.flood_per_s = flood_per_s



def _version_from(job):
    if job.get("version"):
        return job["version"]
    found = re.search(r"v?(\d+(?:\.\d+)+[\w.+-]*?)\.bin", job.get("url") or "")
    return found.group(1) if found else "unknown"


class LightDevice:
    def __init__(self, fleet, device_id, version, behavior=None, slot="ota_0", other_version=None):
        self.fleet = fleet
        self.id = device_id
        self.version = version
        self.slot = slot
        self.other_version = other_version  # the image in the other slot (None: empty/erased)
        self.behavior = behavior or Behavior()
        self.topic = "/switch/cmd/" + device_id
        self.state_topic = "/switch/state/" + device_id
        self.conn = None
        self.reporter = device_state.Reporter(device_id, version, slot)
        self.seen = []
        self.busy = None
        self.online = True
        self.commands = []  # every parsed command (dict), in arrival order
        self.history = []  # every state published, (state, job, reason)
        self.last_state = ("idle", {})

    # --- publishing -------------------------------------------------------------------------------
    def publish(self, name, **fields):
        if not self.online:
            return
        self.last_state = (name, fields)
        self.history.append((name, fields.get("job"), fields.get("reason")))
        self.conn.publish(self.state_topic, self.reporter.message(name, **fields), qos=0, retain=True)

    def _after(self, delay, fn, *args):
        self.fleet.scheduler.after(delay, fn, *args)

    # --- commands (on the scheduler thread) -------------------------------------------------------
    def on_command(self, payload):
        if not self.online:
            return
        try:
            job = device_trigger.parse(payload)
        except OtaError as e:
            self._refuse(e.reason, e.detail)
            return
        if job is None or not device_signature.target_matches(job["target"], self.id):
            return
        if job["id"] is None:
            job["id"] = auto_id(job)
        self.commands.append(job)
        if job["id"] in self.seen:
            return  # duplicate job ignored
        if self.busy is not None:
            self._refuse("busy", "refused " + job["id"])
            return
        self.seen.append(job["id"])
        del self.seen[:-MAX_SEEN]
        self.busy = job
        if job["type"] == "ota_revert":
            self._revert(job)
        else:
            self._update(job)

    def _refuse(self, reason, detail):
        if self.busy is None:
            self.publish("failed", reason=reason, detail=detail)
        else:
            name, fields = self.last_state
            fields = dict(fields, reason=reason, detail=detail)
            self.publish(name, **fields)

    def _finish(self, job, name, reason=None, detail=None):
        self.busy = None
        self.publish(name, job=job["id"], reason=reason, detail=detail, t=self._cost(job, name))

    def _cost(self, job, name):
        # The telemetry record an update's final state carries (lib/ota/telemetry.py): made-up but
        # plausible numbers from the behavior's times, varied per device so percentiles mean something.
        if job["type"] != "ota_trigger":
            return None
        b, total = self.behavior, job["size"] or 1462272
        spread = 1 + (sum(self.id.encode()) % 10) / 10  # 1.0 .. 1.9
        dl_ms = int(b.download_s * 1000 * spread) + 1
        fetched = total if name != "failed" else total // 2
        return {"to": _version_from(job), "art": "full", "conn_ms": dl_ms // 10, "dl_ms": dl_ms,
                "write_ms": dl_ms // 3, "verify_ms": dl_ms // 20 + 1,
                "boot_ms": int(b.confirm_s * 1000) + 1 if name == "ok" else None,
                "reboot_s": 0 if name == "ok" else None, "fetched": fetched, "resumes": 0, "restarts": 0,
                "heap_min": 60000, "idf_min": 150000, "rssi0": -55, "rssi_min": -60,
                "reset": "HARD_RESET" if name != "failed" else None}

    def _update(self, job):
        b = self.behavior
        total = job["size"] or 1462272
        new = _version_from(job)
        self.publish("downloading", job=job["id"], progress=0, done=0, total=total)
        try:
            order = device_version.compare(new, self.version)
        except OtaError:
            order = 1
        if order == 0:
            self._finish(job, "ok", "same_version", "already running %s" % new)
            return
        if order < 0 and not b.allow_downgrade:
            self._finish(job, "failed", "downgrade", "%s is older than the running %s" % (new, self.version))
            return
        if b.outcome == "offline":
            self.go_offline()
            return
        if b.outcome in ("lie_ok", "lie_same"):  # claims success, keeps its version
            self._after(b.download_s, self._finish, job, "ok", "same_version" if b.outcome == "lie_same"
                        else None)
            return
        if b.outcome == "garbage":
            for payload in GARBAGE:
                self.conn.publish(self.state_topic, payload % {b"id": self.id.encode(),
                                                               b"job": job["id"].encode()}, retain=True)
            return
        steps = max(0, b.progress_steps)
        for k in range(1, steps + 1):
            if b.outcome in ("fail", "stall") and k * 2 > steps:
                break
            done = total * k // (steps + 1)
            self._after(b.download_s * k / (steps + 1), self._progress, job, done, total)
        if b.outcome == "stall":
            return
        if b.outcome == "fail":
            self._after(b.download_s / 2, self._finish, job, "failed", b.reason, "simulated")
            return
        self._after(b.download_s, self._downloaded, job, total, new)

    def _progress(self, job, done, total):
        if self.busy is job:
            self.publish("downloading", job=job["id"], progress=device_state.percent(done, total),
                         done=done, total=total)

    def _downloaded(self, job, total, new):
        self.publish("verifying", job=job["id"], progress=100, done=total, total=total)
        self.publish("rebooting", job=job["id"], progress=100, done=total, total=total)
        self._after(self.behavior.reboot_s, self._boot_other, job, new)

    def _boot_other(self, job, new_version=None):
        # machine.reset() into the other slot: new identity, fresh uptime, health gate first.
        old_version, old_slot = self.version, self.slot
        self.version = new_version if new_version is not None else self.other_version
        self.slot = "ota_1" if old_slot == "ota_0" else "ota_0"
        self.other_version = old_version
        self.reporter = device_state.Reporter(self.id, self.version, self.slot)
        self.publish("confirming", job=job["id"])
        self._after(self.behavior.confirm_s, self._confirm, job, old_version, old_slot)

    def _confirm(self, job, old_version, old_slot):
        if self.behavior.outcome == "rollback" and job["type"] == "ota_trigger":
            reason = self.behavior.reason
            self.publish("failed", job=job["id"], reason=reason, detail="simulated")
            # the bootloader boots the previous slot again; the old firmware reports the outcome
            bad = self.version
            self.version, self.slot, self.other_version = old_version, old_slot, bad
            self.reporter = device_state.Reporter(self.id, self.version, self.slot)
            self._after(self.behavior.reboot_s, self._finish, job, "rolled_back", reason, "simulated")
            return
        self._finish(job, "ok")

    def _revert(self, job):
        if self.other_version is None:
            self._finish(job, "failed", "revert_no_image", "other slot: no app image")
            return
        self.publish("rebooting", job=job["id"])
        self._after(self.behavior.reboot_s, self._boot_other, job)

    # --- test controls ----------------------------------------------------------------------------
    def go_offline(self):
        self.conn.publish(self.state_topic, self.reporter.offline(), qos=0, retain=True)
        self.history.append(("offline", None, None))
        self.online = False


class Scheduler(threading.Thread):
    """One thread runs every device's steps in time order (heap of (when, seq, fn, args))."""

    def __init__(self):
        super().__init__(daemon=True, name="lightdevice-scheduler")
        self._heap = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self.errors = []

    def after(self, delay, fn, *args):
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn, args))
            self._cond.notify()

    def run(self):
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                if self._stopped:
                    return
                _, _, fn, args = heapq.heappop(self._heap)
            try:
                fn(*args)
            except Exception as e:  # a simulator bug must not silence the fleet: kept for the test
                self.errors.append(repr(e))

    def stop(self):
        with self._cond:
            self._stopped = True
            self._cond.notify()


class _Connection:
    """One paho client carrying many devices' subscriptions and publishes."""

    def __init__(self, fleet, index, devices):
        import paho.mqtt.client as paho

        self.fleet = fleet
        self.devices = {d.topic: d for d in devices}
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._pending_subs = set()
        self._lock = threading.Lock()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id="lightdev-%s-%d" % (fleet.name, index))
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client
        for d in devices:
            d.conn = self

    def start(self):
        self.client.connect(self.fleet.host, self.fleet.port, keepalive=60)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        topics = [CMD_ROOT] + list(self.devices)
        with self._lock:
            for at in range(0, len(topics), _SUBSCRIBE_BATCH):
                result, mid = client.subscribe([(t, 1) for t in topics[at:at + _SUBSCRIBE_BATCH]])
                self._pending_subs.add(mid)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._lock:
            self._pending_subs.discard(mid)
            if not self._pending_subs:
                self.subscribed.set()

    def _on_message(self, client, userdata, msg):
        if msg.topic == CMD_ROOT:
            targets = list(self.devices.values())
        else:
            device = self.devices.get(msg.topic)
            targets = [device] if device is not None else []
        for device in targets:
            self.fleet.scheduler.after(0, device.on_command, msg.payload)

    def publish(self, topic, payload, qos=0, retain=False):
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def flush(self, timeout=30):
        # A QoS 1 message after our QoS 0 ones: its PUBACK means the broker has handled them all.
        info = self.client.publish("/lightdev/flush", b"", qos=1)
        info.wait_for_publish(timeout)

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


class LightFleet:
    def __init__(self, host, port, per_connection=250, name=None):
        self.host = host
        self.port = port
        self.per_connection = per_connection
        self.name = name or os.urandom(3).hex()
        self.devices = {}
        self.connections = []
        self.scheduler = Scheduler()
        self._flooding = threading.Event()

    def add(self, device_id, version="1.0.0", behavior=None, other_version=None, slot="ota_0"):
        device = LightDevice(self, device_id, version, behavior, slot, other_version)
        self.devices[device_id] = device
        return device

    def start(self, timeout=60):
        devices = list(self.devices.values())
        for index, at in enumerate(range(0, len(devices), self.per_connection)):
            self.connections.append(_Connection(self, index, devices[at:at + self.per_connection]))
        self.scheduler.start()
        for conn in self.connections:
            conn.start()
        deadline = time.monotonic() + timeout
        for conn in self.connections:
            if not conn.subscribed.wait(max(0.1, deadline - time.monotonic())):
                raise TimeoutError("light devices: subscriptions not acknowledged in %ss" % timeout)
        for device in devices:  # the boot message, retained
            device.publish(*device.reporter.last_state[:1])
        self.flush()
        flooders = [d for d in devices if d.behavior.outcome == "flood"]
        if flooders:
            self._flooding.set()
            threading.Thread(target=self._flood, args=(flooders,), daemon=True, name="lightdevice-flood").start()
        return self

    def _flood(self, flooders):
        # Each flooder republishes its last state message (the same bytes the broker holds) about
        # flood_per_s times a second; one thread for all of them.
        period = 1.0 / max(1, flooders[0].behavior.flood_per_s)
        tick = time.monotonic()
        while self._flooding.is_set():
            for device in flooders:
                if device.online:
                    name, fields = device.last_state
                    device.conn.publish(device.state_topic, device.reporter.message(name, **fields), retain=True)
            tick += period  # on a schedule: the rate holds however long a round of publishes takes
            time.sleep(max(0.0, tick - time.monotonic()))

    def flush(self):
        for conn in self.connections:
            conn.flush()

    def outcomes(self):
        return {d.id: d.last_state[0] for d in self.devices.values()}

    def stop(self, clear_retained=True):
        self._flooding.clear()
        if clear_retained:  # leave the broker as we found it
            for device in self.devices.values():
                device.conn.publish(device.state_topic, b"", qos=0, retain=True)
            self.flush()
        self.scheduler.stop()
        for conn in self.connections:
            conn.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
