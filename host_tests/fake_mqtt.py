# A broker and a fleet in one object, for the rollout engine and its tracker under CPython without
# mosquitto (host_tests/unit/test_mutants_rollout.py, test_mutants_tracking.py). It has the surface the
# engine uses of otactl.mqtt.Connection: on_message, subscribe, sync, reread, publish_nowait.
#
# Each device holds a retained state; a subscribe to the state filter delivers every retained one (as
# a broker does), reread() delivers those named again. A trigger published to /switch/cmd/<id> is
# answered at once, through on_message, by the device's `answer` (a function of the trigger message
# returning the state dicts it sends in order); the last one is kept as the retained state. Answers are
# synchronous: the tracker queues them, so the engine sees them at its next wait, as with a real broker.
import json

from otactl import mqtt


class Info:
    """paho's MQTTMessageInfo as Tracker.send uses it."""

    def __init__(self, error=None, published=True):
        self.error = error
        self.published = published
        self.waited = []  # the timeouts wait_for_publish was given

    def wait_for_publish(self, timeout):
        self.waited.append(timeout)
        if self.error is not None:
            raise self.error

    def is_published(self):
        return self.published


def ok(version):
    """A device that updates to `version`: downloading, then ok with the new version."""
    def answer(device, message):
        return [dict(state="downloading", job=message["id"], version=device.version, progress=50),
                dict(state="ok", job=message["id"], version=version)]
    return answer


def fail(reason, detail="it broke"):
    def answer(device, message):
        return [dict(state="failed", job=message["id"], version=device.version, reason=reason, detail=detail)]
    return answer


def silent(device, message):
    return []


class Device:
    def __init__(self, device_id, version, state="idle", answer=None, job=None):
        self.id = device_id
        self.version = version
        self.state = dict(state=state, version=version)
        if job is not None:
            self.state["job"] = job
        self.answer = answer


class FakeConn:
    def __init__(self, devices=(), info=None):
        self.on_message = None
        self.devices = {d.id: d for d in devices}
        self.retained = {}
        for d in devices:
            self.retained[mqtt.STATE_PREFIX + d.id] = self._payload(d.id, d.state)
        self.subscribed = []
        self.synced = []
        self.rereads = []
        self.sent = []  # (device, trigger message, qos)
        self.info = info or (lambda device: Info())
        self.on_send = None  # called with the device after its trigger was recorded, before its answer

    @staticmethod
    def _payload(device_id, fields):
        return json.dumps(dict(fields, id=device_id)).encode()

    def say(self, device_id, retain=True, deliver=True, **fields):
        """The device publishes a state (retained unless told otherwise)."""
        payload = self._payload(device_id, fields)
        if retain:
            self.retained[mqtt.STATE_PREFIX + device_id] = payload
        if deliver and self.on_message is not None:
            self.on_message(mqtt.STATE_PREFIX + device_id, payload, False)

    def subscribe(self, topic, qos=1):
        self.subscribed.append((topic, qos))
        if topic == mqtt.STATE_FILTER:
            for t, payload in sorted(self.retained.items()):
                self.on_message(t, payload, True)

    def sync(self, timeout=5.0):
        self.synced.append(timeout)
        return True

    def reread(self, topics, timeout=5.0):
        topics = list(topics)
        self.rereads.append(topics)
        for t in topics:
            if t in self.retained:
                self.on_message(t, self.retained[t], True)

    def publish_nowait(self, topic, payload, qos=1):
        device_id = topic.rsplit("/", 1)[-1]
        assert topic == mqtt.cmd_topic(device_id), topic
        message = json.loads(payload)
        self.sent.append((device_id, message, qos))
        if self.on_send is not None:
            self.on_send(device_id)
        device = self.devices.get(device_id)
        if device is not None and device.answer is not None:
            for fields in device.answer(device, message):
                self.say(device_id, **fields)
        return self.info(device_id)

    def triggered(self):
        return [d for d, _, _ in self.sent]
