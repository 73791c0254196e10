"""A device's state message, checked: the one place where otactl turns what a device says into data.

Everything on /switch/state/<id> is written by a device account, and a device can be broken, old or
hostile. Before status, rollout, revert or report look at a message it passes here:

    fields = parse(device_id, payload)   # dict of the known fields, each of its type and range,
                                         # or raises OtaError (bad_device_id, bad_state)
    show(text)                           # a device string made safe for a terminal

The message is lib/ota/state.py's (id, version, slot, state, progress, bytes, total, job, reason,
detail, heap, uptime_s, ts; the last will has id, version, slot, state "offline"). A field of the
wrong type or out of range refuses the whole message: a device that sends one is reported, never
half-believed. Unknown fields are dropped (a newer firmware may add some).
"""
import json
import math

from ota.errors import OtaError

from ota import config as device_config  # the device's own id rule
from ota import state as device_state
from ota import telemetry as device_telemetry
from ota import trigger as device_trigger

STATES = device_state.STATES + ("offline",)
MAX_PAYLOAD = 2048  # the firmware's messages are about 300 bytes (state.py: detail cut at 160)
_UINT32 = 2 ** 32  # image sizes, heap and uptime all fit a C3's 32-bit counters

# field -> (kind, limit): str (max length), count (0..limit), percent, time
_FIELDS = (
    ("version", "str", 32),  # the app descriptor's version field is 32 bytes
    ("slot", "str", 16),
    ("job", "str", device_trigger.MAX_ID),
    ("reason", "str", 64),
    ("detail", "str", 200),
    ("progress", "percent", 100),
    ("bytes", "count", _UINT32),
    ("total", "count", _UINT32),
    ("heap", "count", _UINT32),
    ("uptime_s", "count", _UINT32),
    ("ts", "time", 0),
)


def id_problem(device_id):
    """None when `device_id` can be a device's id, else why not (lib/ota/config.py's rule)."""
    return device_config.id_problem(device_id)


def check_id(device_id):
    """Raises OtaError bad_device_id unless `device_id` is one a device may have (lib/ota/config.py:
    letters, digits, _ and -, 1..32, never "root")."""
    problem = device_config.id_problem(device_id)
    if problem:
        raise OtaError("bad_device_id", "%s: %s" % (show(device_id), problem))
    return device_id


def _bad(device_id, problem):
    raise OtaError("bad_state", "%s: %s" % (device_id, problem))


def _check(device_id, name, kind, limit, value):
    if value is None:
        return None
    if kind == "str":
        if not isinstance(value, str):
            _bad(device_id, "%s must be a string or null, not %s" % (name, type(value).__name__))
        if len(value) > limit:
            _bad(device_id, "%s longer than %d characters" % (name, limit))
        return value
    # An int is finite however long (and math.isfinite raises OverflowError on 10**400); a float may not be.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        _bad(device_id, "%s must be a finite number or null" % name)
    if kind == "time":
        return value if 0 <= value < _UINT32 else None  # a clock far off is no lie, just unknown
    if not 0 <= value <= limit:
        _bad(device_id, "%s out of range 0..%d" % (name, limit))
    return value


def parse(device_id, payload):
    """The checked fields of one state message (every known key present, None when absent).
    Raises OtaError bad_device_id (the topic's id is none a device may have) or bad_state."""
    check_id(device_id)
    if len(payload) > MAX_PAYLOAD:
        _bad(device_id, "message of %d bytes (at most %d)" % (len(payload), MAX_PAYLOAD))
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeError, RecursionError):
        _bad(device_id, "not JSON")
    if not isinstance(raw, dict):
        _bad(device_id, "not a JSON object")
    if raw.get("id", device_id) != device_id:
        _bad(device_id, "says it is %s" % show(str(raw.get("id"))[:40]))
    state = raw.get("state")
    if state not in STATES:
        _bad(device_id, "unknown state %s" % show(str(state)[:40]))
    fields = {"id": device_id, "state": state}
    for name, kind, limit in _FIELDS:
        fields[name] = _check(device_id, name, kind, limit, raw.get(name))
    fields["t"] = _telemetry(device_id, raw.get("t"))
    return fields


# A final state's telemetry record (lib/ota/telemetry.py): known keys only, each checked; None when
# absent. Raises OtaError bad_state.
_TELEMETRY_STR = {"to": 32, "art": 16, "reset": 24}


def _telemetry(device_id, value):
    if value is None:
        return None
    if not isinstance(value, dict):
        _bad(device_id, "t must be an object or null")
    out = {}
    for key in device_telemetry.KEYS:
        item = value.get(key)
        if key in _TELEMETRY_STR:
            out[key] = _check(device_id, "t." + key, "str", _TELEMETRY_STR[key],
                              str(item) if isinstance(item, int) and not isinstance(item, bool) else item)
        elif key in ("rssi0", "rssi_min"):
            out[key] = None if item is None else -_check(device_id, "t." + key, "count", 127,
                                                         -item if isinstance(item, (int, float)) and not isinstance(item, bool) else item)
        else:
            out[key] = _check(device_id, "t." + key, "count", _UINT32, item)
    return out


def show(text):
    """`text` with everything a terminal or rich could act on escaped: control characters (escape
    sequences, carriage returns), format characters (bidi overrides), and backslashes; rich markup
    is never interpreted because the table is built from rich Text objects, not markup strings."""
    if text is None:
        return ""
    text = str(text)
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif c.isprintable():
            out.append(c)
        else:
            out.append(c.encode("unicode_escape").decode("ascii"))  # \x1b, \u202e
    return "".join(out)
