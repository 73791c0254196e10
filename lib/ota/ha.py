# Home Assistant's MQTT update entity (config "ha", on with ha.discovery): the discovery config, the
# entity's state, the retained release announcement and the Install button.
#
# Topics (schema: homeassistant/components/mqtt/update.py of HA 2025.4.4; README "Home Assistant"):
#   <prefix>/update/<id>/firmware/config   retained discovery config, sent at every (re)connect: the
#                                          entity, its device block (sw_version: the running version),
#                                          availability from the state topic (its last will "offline")
#                                          and its attributes from it too (state, reason, telemetry)
#   ha.state_topic (/switch/ha/<id>)       retained entity state, after every state message:
#       {"in_progress": true, "update_percentage": 42, "installed_version": "1.0.0",
#        "latest_version": "1.0.1", "release_url": "https://...", "release_summary": "..."}
#                                          (a value not known is left out: HA refuses a null there)
#   ha.release_topic (/switch/release)     the retained announcement (`otactl announce`): an ota_trigger
#                                          (signed when the fleet signs) plus release_url and summary;
#                                          its target names the devices that may install it themselves
#   /switch/cmd/<id> <- INSTALL            HA's payload_install: the announced trigger goes through the
#                                          intake like any trigger (target, duplicates, busy), then
#                                          commands.py (policy, signature, the update): same checks,
#                                          same reason codes; under ota.require_signature an unsigned
#                                          announcement fails `unsigned` and nothing is downloaded.
# Reasons: no_release (Install with no announcement for this device, or a bad one: its reason is the
# detail), already_run (intake.py: the announced unsigned job id already ran). A bad announcement is
# not run, printed, and Install says why.
import json

from ota import signature, trigger
from ota.errors import OtaError

INSTALL = b'{"type":"ota_install"}'  # what HA publishes; old firmware ignores the unknown type
_IN_PROGRESS = ("downloading", "verifying", "rebooting", "confirming")
_MAX_URL = 512
_MAX_SUMMARY = 255  # HA shows it under the entity; kept well inside the 1 KB message budget
# The discovery config, filled with json-quoted values: one format, no dict built for it. Keys are
# HA's full names (the abbreviations save bytes but hide what is meant).
_DISCOVERY = ('{"name":"Firmware","unique_id":"%s_firmware","device_class":"firmware",'
              '"state_topic":%s,"command_topic":%s,"payload_install":%s,'
              '"availability_topic":%s,"availability_template":'
              '"{{ \'offline\' if value_json.state == \'offline\' else \'online\' }}",'
              '"json_attributes_topic":%s,"entity_category":"config","qos":1,'
              '"device":{"identifiers":["ota_%s"],"name":"ESP32-C3 %s","model":"ESP32-C3",'
              '"manufacturer":"OTA switch"%s}}')

def _q(value):
    # A JSON value: None -> null, a string quoted and escaped.
    return json.dumps(value)


class HomeAssistant:
    # device_id, version: the agent's; cmd_topic: the device's own command topic (HA's command_topic);
    # state_topic: the device's state topic (availability and attributes).
    def __init__(self, ha_cfg, device_id, version, cmd_topic, state_topic):
        self.device_id = device_id
        self.version = version
        self.cmd_topic = cmd_topic
        self.device_state_topic = state_topic
        self.config_topic = "%s/update/%s/firmware/config" % (ha_cfg["prefix"], device_id)
        self.state_topic = ha_cfg["state_topic"].replace("{id}", device_id)
        self.release_topic = ha_cfg["release_topic"]
        self.release = None  # the announced trigger (trigger.parse's dict) when it names this device
        self.release_url = self.summary = None
        self.problem = None  # why the last announcement was set aside

    def discovery(self):
        # bytes, retained at every connect (the device block carries the running version; HA refuses
        # a null sw_version, so an unknown one is left out).
        return (_DISCOVERY % (self.device_id, _q(self.state_topic), _q(self.cmd_topic), _q(INSTALL.decode()),
                              _q(self.device_state_topic), _q(self.device_state_topic), self.device_id,
                              self.device_id,
                              "" if self.version is None else ',"sw_version":' + _q(self.version))).encode()

    def latest(self):
        # HA offers Install when latest differs from installed: only a release this device may install.
        if self.release is not None and self.release.get("version"):
            return self.release["version"]
        return self.version

    def entity(self, state_name, progress=None):
        # bytes: the entity state for the device state just published. update_percentage only while
        # a job runs (null otherwise: HA then shows no bar).
        busy = state_name in _IN_PROGRESS
        pct = None
        if busy:
            pct = progress if state_name == "downloading" else 100  # progress None: size unknown
        summary = self.summary if self.problem is None else "announcement refused: %s" % self.problem
        # HA's schema (MQTT_JSON_UPDATE_SCHEMA) takes strings and URLs only: a null there drops the
        # whole message, so an unknown value is left out (HA keeps what it had). One format: no
        # string grown piece by piece.
        return ('{"in_progress":%s,"update_percentage":%s%s%s%s%s}' % (
            "true" if busy else "false", "null" if pct is None else "%d" % pct,
            _field("installed_version", self.version), _field("latest_version", self.latest()),
            _field("release_url", self.release_url), _field("release_summary", summary))).encode()

    def mine(self, topic, payload):
        # True for the announcement and for HA's Install on our command topic.
        if isinstance(topic, (bytes, bytearray)):
            topic = topic.decode()
        return topic == self.release_topic or (topic == self.cmd_topic and payload == INSTALL)

    def take(self, topic, payload):
        # -> the trigger to queue (Install), or None (an announcement kept). Raises OtaError no_release.
        if isinstance(topic, (bytes, bytearray)):
            topic = topic.decode()
        if topic != self.release_topic:
            if self.release is None:
                raise OtaError("no_release", self.problem or "no release announced for this device")
            return dict(self.release)  # the intake and commands.py may annotate their copy
        self._announce(payload)
        return None

    def _announce(self, payload):
        # Keeps the announcement when it parses as a trigger naming this device. An empty retained
        # message withdraws it.
        self.release = self.release_url = self.summary = self.problem = None
        if not payload:
            return
        try:
            job = trigger.parse(payload)
            if job is None or job["type"] != "ota_trigger":
                raise OtaError("bad_announcement", "not an ota_trigger")
            extra = json.loads(payload)  # release_url, summary: trigger.parse drops unknown fields
        except OtaError as e:
            print("ha: announcement refused:", e)
            self.problem = e.reason
            return
        if not signature.target_matches(job["target"], self.device_id):
            return  # a staged rollout's announcement for other devices: nothing to offer here
        self.release = job
        url = _text(extra.get("release_url"), _MAX_URL)
        # HA's release_url is a URL (cv.url: http or https): anything else would cost the message.
        self.release_url = url if url and (url.startswith("https://") or url.startswith("http://")) else None
        self.summary = _text(extra.get("summary"), _MAX_SUMMARY)


def _field(key, value):
    # ',"key":<json>' for the entity state, or nothing for an unknown value.
    return "" if value is None else ',"%s":%s' % (key, _q(value))


def _text(value, limit):
    return value[:limit] if isinstance(value, str) else None
