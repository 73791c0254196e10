# Run by test_ha_unit.py with Home Assistant's own Python (the `make ha-check` venv): validates our
# payloads with HA 2025.4.4's own schemas, from homeassistant/components/mqtt/update.py. Reads one JSON
# object a line, {"kind": "discovery" | "entity", "payload": {...}}; prints "ok" or "invalid: why".
import json
import sys

from homeassistant.components.mqtt import update
from homeassistant.helpers import frame

# Outside a running HA, a template without `hass` reports its "usage" through the frame helper, which
# is not set up: the report is all it does, so it is silenced; the schema itself runs as in HA.
frame.report_usage = lambda *args, **kwargs: None

for line in sys.stdin:
    item = json.loads(line)
    schema = update.DISCOVERY_SCHEMA if item["kind"] == "discovery" else update.MQTT_JSON_UPDATE_SCHEMA
    try:
        schema(item["payload"])
        print("ok", flush=True)
    except Exception as e:
        print("invalid: %s" % e, flush=True)
