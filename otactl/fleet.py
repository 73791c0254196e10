"""The fleet as the broker knows it: one retained state message per device on /switch/state/<id>
(lib/ota/state.py builds them: id, version, slot, state, progress, bytes, total, job, reason,
detail, heap, uptime_s, ts; the last will is {"id", "version", "slot", "state": "offline"}).

    fleet = Fleet()
    fleet.update(topic, payload)       # from any MQTT callback; returns the Device or None
    fleet.snapshot(conn)               # subscribe + wait until the retained states are in
    fleet.devices["a0b1c2"].version
    fleet.targets(manifest_version)    # online devices below the version, sorted
    fleet.rejected                     # {id shown escaped: "reason: detail"}: messages refused

Every message goes through otactl/devstate.py first; a refused one (bad id, bad state) removes the
device from `devices` (its last word is not believed) and is kept in `rejected` to be reported.
"""
import threading
import time

from . import devstate, mqtt
from ota.errors import OtaError

from ota import jobs as device_jobs
from ota import version as device_version  # the device's own comparison

BUSY_STATES = ("downloading", "verifying", "rebooting", "confirming")
TERMINAL_STATES = device_jobs.TERMINAL  # a job's final states, as the device records them


def compare_versions(a, b):
    """-1/0/1 as the device compares; OtaError bad_version for a version it cannot order."""
    return device_version.compare(a, b)  # raises the device's own OtaError


def is_below(current, wanted):
    """True when `current` is provably older than `wanted` (unknown or odd versions are not). Never
    raises: a version is whatever a device sent (devstate checks its type and length only)."""
    return _order(current, wanted) == -1


def _order(current, wanted):
    # -1/0/1, or None when either is not a version the device's compare() can order
    if not isinstance(current, str) or not current:
        return None
    try:
        return device_version.compare(current, wanted)
    except (OtaError, ValueError, TypeError, AttributeError):  # int("²") is a ValueError
        return None


def same_version(current, wanted):
    """True when the device's compare() says `current` is `wanted` (1.0 and 1.0.0 are one version)."""
    return _order(current, wanted) == 0


class Device:
    __slots__ = ("id", "fields", "received")

    def __init__(self, device_id, fields, received):
        self.id = device_id
        self.fields = fields
        self.received = received  # time.time() when this message arrived here

    def __getattr__(self, name):
        # id, version, slot, state, progress, job, reason, detail, ts ... (None when absent)
        try:
            return self.__getattribute__("fields").get(name)
        except AttributeError:
            raise AttributeError(name)

    @property
    def online(self):
        return self.fields.get("state") != "offline"

    @property
    def last_seen(self):
        """Unix time of the device's own timestamp, else of our receipt of the message."""
        ts = self.fields.get("ts")
        return ts if isinstance(ts, (int, float)) and not isinstance(ts, bool) else self.received


class Fleet:
    def __init__(self):
        self.devices = {}
        self.rejected = {}  # shown id -> "reason: detail" of its last refused message
        self.lock = threading.Lock()

    def update(self, topic, payload, now=None):
        device_id = mqtt.device_of(topic)
        if device_id is None:
            return None
        if not payload:  # an empty retained message deletes the device's state
            with self.lock:
                self.devices.pop(device_id, None)
                self.rejected.pop(devstate.show(device_id), None)
            return None
        try:
            fields = devstate.parse(device_id, payload)
        except OtaError as e:
            with self.lock:
                self.devices.pop(device_id, None)
                self.rejected[devstate.show(device_id)] = "%s: %s" % (e.reason, e.detail)
            return None
        except Exception as e:  # a case parse() missed must not kill paho's thread
            with self.lock:  # (status, rollout and revert would see nothing more)
                self.devices.pop(device_id, None)
                self.rejected[devstate.show(device_id)] = "bad_state: %s" % devstate.show(repr(e)[:80])
            return None
        device = Device(device_id, fields, time.time() if now is None else now)
        with self.lock:
            self.devices[device_id] = device
            self.rejected.pop(device_id, None)
        return device

    def snapshot(self, conn, timeout=5.0):
        """Subscribe `conn` to the state topics and return once the retained states are in."""
        previous = conn.on_message

        def on_message(topic, payload, retained):
            self.update(topic, payload)
            if previous is not None:
                previous(topic, payload, retained)

        conn.on_message = on_message
        conn.subscribe(mqtt.STATE_FILTER, qos=1)
        conn.sync(timeout)
        return self

    def sorted(self):
        with self.lock:
            return [self.devices[k] for k in sorted(self.devices)]

    def get(self, device_id):
        with self.lock:
            return self.devices.get(device_id)

    def check_known(self, device_ids):
        """Raises OtaError unknown_device naming the ids with no retained state (a typo, most likely)."""
        for d in device_ids:
            devstate.check_id(d)
        unknown = [d for d in device_ids if self.get(d) is None]
        if unknown:
            raise OtaError("unknown_device", "%s: no retained state on /switch/state/<id> (%d devices known); "
                           "check the id, or send anyway with --force" % (", ".join(unknown), len(self.devices)))

    def targets(self, wanted_version, only_below=None):
        """(targets, skipped): online idle-or-finished devices below `wanted_version` (and below
        `only_below` when given), sorted by id; skipped maps every other id to why."""
        targets, skipped = [], {}
        for device in self.sorted():
            if not device.online:
                skipped[device.id] = "offline"
            elif device.state in BUSY_STATES:
                skipped[device.id] = "busy_%s" % device.state
            elif not device.version:
                skipped[device.id] = "unknown_version"
            elif _order(device.version, wanted_version) is None:
                skipped[device.id] = "bad_version"
            elif not is_below(device.version, wanted_version):
                skipped[device.id] = "up_to_date"
            elif only_below and not is_below(device.version, only_below):
                skipped[device.id] = "not_below_%s" % only_below
            else:
                targets.append(device.id)
        return targets, skipped

    def counts(self, field):
        out = {}
        for device in self.sorted():
            key = device.fields.get(field)
            out[key] = out.get(key, 0) + 1
        return out
