"""Following devices through a job: the decision log, and the tracker that turns retained state
messages into per-device outcomes (shared by the rollout engine and revert).

Log: the decision log, otactl/decisionlog.py (JSON lines, crash-safe; re-exported here).

Tracker.judge(device, fields, wanted_version): a state message carrying the job id settles
    ok + wanted version -> ok          ok + same_version + a version equal to the wanted -> same_version
    ok + another version -> wrong_version
    failed -> failed (reason), except "failed" from the NEW image (its health gate): the old image's
              "rolled_back" follows, so it waits for that
    rolled_back -> rolled_back (reason)
    busy refusal naming this job -> failed busy
and a device with no final state by its deadline, even after its retained state is read once more,
-> timeout (or the failure it last reported).
"""
import queue
import time

from . import mqtt
from .decisionlog import Log  # noqa: F401  (re-exported: rollout and revert take it from here)
from ota.errors import OtaError
from .fleet import TERMINAL_STATES, Fleet, same_version

# Seconds without a state message from a device in flight: its retained state is read again
# (Tracker.settled), so a final state the broker dropped costs this long, not the whole per-device
# timeout. Per device: one device flooding its topic must not keep every other one "heard".
QUIET_S = 5.0
# More state messages than this from one device within one second: it is reported as flooding
# (the firmware sends a few per job: progress at most every 5 %).
FLOOD_PER_S = 50
# A job's states in the order one device goes through them; a device whose job steps back (a
# "downloading" after its "ok") is two devices sharing one id.
_RANK = {"downloading": 1, "verifying": 2, "rebooting": 3, "confirming": 4, "ok": 5, "failed": 5,
         "rolled_back": 5}
_DRAIN_MAX = 5000  # messages taken per round, so a flood cannot hold the engine in next_events


class Tracker:
    """Devices in flight for one job: trigger times, deadlines, the last state seen."""

    def __init__(self, conn, job, timeout):
        self.conn = conn
        self.job = job
        self.timeout = timeout
        self.events = queue.Queue()
        self.fleet = Fleet()
        self.in_flight = {}  # device -> (deadline, stage)
        self.last = {}  # device -> fields of the last message with our job
        self.heard = {}  # device in flight -> its last state message (or its trigger), monotonic
        self.recovered = 0  # devices settled by a re-read retained state (their live one was lost)
        self.suspects = {}  # device -> why it is not to be believed: flooding, duplicate_id, bad_state
        self._rank = {}  # (device, job) -> the furthest state of the job it reported
        self._rate = {}  # device -> [second, messages in it]

    def on_message(self, topic, payload, retained):
        device = self.fleet.update(topic, payload)
        if device is None:
            device_id = mqtt.device_of(topic)
            if device_id is not None and device_id in self.in_flight:
                self.suspects.setdefault(device_id, "bad_state")
            return
        self._watch_for_lies(device)
        self.events.put(device)

    def _watch_for_lies(self, device):
        # paho's thread: cheap counters only
        second = int(time.monotonic())
        rate = self._rate.get(device.id)
        if rate is None or rate[0] != second:
            self._rate[device.id] = [second, 1]
        else:
            rate[1] += 1
            if rate[1] > FLOOD_PER_S:
                self.suspects.setdefault(device.id, "flooding")
        if self.job is not None and device.fields.get("job") == self.job:
            key = (device.id, self.job)  # revert reuses the tracker with another job
            rank = _RANK.get(device.fields.get("state"), 0)
            if rank < self._rank.get(key, 0):
                self.suspects[device.id] = "duplicate_id"
            self._rank[key] = max(rank, self._rank.get(key, 0))

    def start(self, snapshot_timeout):
        self.conn.on_message = self.on_message
        self.conn.subscribe(mqtt.STATE_FILTER, qos=1)
        self.conn.sync(snapshot_timeout)

    def drain_snapshot(self):
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return

    def send(self, devices, payload_for):
        infos = [self.conn.publish_nowait(mqtt.cmd_topic(d), payload_for(d), qos=1) for d in devices]
        for d, info in zip(devices, infos):
            try:
                info.wait_for_publish(30)
            except (RuntimeError, ValueError) as e:
                raise OtaError("broker_unreachable", "trigger for %s not sent: %s" % (d, e))
            if not info.is_published():
                raise OtaError("broker_unreachable", "no PUBACK for the trigger of %s" % d)

    def launch(self, todo, limit, payload_for, stage=None, before_send=None):
        """Triggers as many of `todo` as `limit` devices in flight leave room for, and watches them.
        before_send(batch) runs first: the caller logs (and fsyncs) the batch before any trigger of
        it leaves, so a power cut can never leave a sent trigger out of the log.
        Returns (the devices triggered, the rest of todo)."""
        room = max(0, limit - len(self.in_flight))
        batch, rest = todo[:room], todo[room:]
        if batch:
            if before_send is not None:
                before_send(batch)
            now = time.monotonic()
            for device in batch:  # watched before sent: a fast device's first answer (paho's thread)
                self.watch(device, stage, now)  # finds it in flight, so a bad one makes it a suspect
            self.send(batch, payload_for)
        return batch, rest

    def watch(self, device, stage=None, now=None):
        now = now or time.monotonic()
        self.in_flight[device] = (now + self.timeout, stage)
        self.heard[device] = now

    def next_events(self, wait):
        """Devices whose state changed, waiting up to `wait` seconds for the first (at most
        _DRAIN_MAX: the rest stay queued for the next round)."""
        out = []
        try:
            out.append(self.events.get(timeout=max(0.0, wait)))
            while len(out) < _DRAIN_MAX:
                out.append(self.events.get_nowait())
        except queue.Empty:
            pass
        return out

    def judge(self, device, fields, wanted_version):
        """The outcome a state message settles for `device`, or None (not final yet)."""
        if fields.get("job") != self.job:
            if fields.get("reason") == "busy" and fields.get("detail") == "refused " + self.job:
                return "failed", "busy", "the device was running another job"
            return None
        self.last[device] = fields
        state = fields.get("state")
        if state not in TERMINAL_STATES:
            return None
        reason, detail, version = fields.get("reason"), fields.get("detail"), fields.get("version")
        if state == "ok":
            if reason == "same_version":  # a success only when it really runs the target
                if wanted_version is None or same_version(version, wanted_version):
                    return "same_version", reason, detail
                return "wrong_version", "wrong_version", "reports same_version at %s, expected %s" % (
                    version, wanted_version)
            if wanted_version is None or version == wanted_version:
                return "ok", reason, detail
            return "wrong_version", "wrong_version", "reports %s, expected %s" % (version, wanted_version)
        if state == "failed" and wanted_version is not None and version == wanted_version:
            return None  # the new image failed its health gate: "rolled_back" comes from the old one
        return state, reason, detail

    def expired(self, now):
        return [d for d, (deadline, _) in self.in_flight.items() if deadline <= now]

    def settled(self, wanted_version, wait):
        """[(device, (outcome, reason, detail))]: the in-flight devices settled this round, waiting up
        to `wait` seconds for the first state message; each device once.
        A broker drops messages to a subscriber that falls behind (mosquitto beyond
        max_queued_messages; 10,000 devices answering at once did it, and so does one device
        flooding its topic), and a device that reported ok must not count as silent: a device past
        its deadline has its retained state read once more before it is a timeout, and a device in
        flight not heard from for QUIET_S seconds has its retained state read again."""
        out, done = [], set()

        def take(events):
            for device in events:
                if device.id in self.in_flight:
                    self.heard[device.id] = now
                    if device.id in done:
                        continue
                    verdict = self.judge(device.id, device.fields, wanted_version)
                    if verdict is not None:
                        out.append((device.id, verdict))
                        done.add(device.id)

        events = self.next_events(wait)
        now = time.monotonic()
        take(events)
        late = [d for d in self.expired(now) if d not in done]
        quiet = [d for d in self.in_flight if d not in done and now - self.heard.get(d, now) >= QUIET_S]
        if late or quiet:
            for d in quiet:
                self.heard[d] = now
            self.conn.reread([mqtt.STATE_PREFIX + d for d in sorted(set(quiet) | set(late))])
            before = len(out)
            take(self.next_events(0))
            self.recovered += len(out) - before
            out += [(d, self.timeout_outcome(d)) for d in late if d not in done]
        return out

    def forget(self, device):
        """`device` is settled: no longer in flight. Returns what watch() kept for it."""
        self.heard.pop(device, None)
        return self.in_flight.pop(device, None)

    def timeout_outcome(self, device):
        last = self.last.get(device)
        if last and last.get("state") == "failed":
            return "failed", last.get("reason"), last.get("detail")
        seen = self.fleet.get(device)
        where = "no state for this job"
        if last:
            where = "last state %s" % last.get("state")
            if last.get("progress") is not None:
                where += " %s%%" % last.get("progress")
        elif seen is not None and seen.state == "offline":
            where = "device offline"
        return "timeout", "timeout", "no final state in %gs (%s)" % (self.timeout, where)

    def wait_time(self, now, cap=1.0):
        if not self.in_flight:
            return cap
        return max(0.0, min(cap, min(d for d, _ in self.in_flight.values()) - now))
