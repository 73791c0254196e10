# The device's settings: /config.json holds only what differs from DEFAULTS (every default lives here,
# in code). validate() is THE check: the device runs it at boot and `otactl provision` runs this same
# module on the host before it writes anything, so a config the host accepts is one the device accepts.
#
#   cfg = config.load()               # DEFAULTS merged with /config.json, validated
#   config.validate(cfg, complete=True)   # also requires what a fleet device needs (ssid, broker)
#   print(config.redacted(cfg))       # passwords and the token masked
#
# Settings are grouped in sections ("mqtt", "ota", ...); an error names the field as "section.key".
# device_id None means: the caller uses the hex of machine.unique_id() (kept out of this module so it
# imports on the host).
import json

from ota.errors import OtaError

DEFAULTS = {
    "device_id": None,
    "wifi": {"ssid": "", "password": ""},
    "mqtt": {"host": "", "port": None, "tls": False, "ca_path": "ca.der", "user": None,
             "password": None, "keepalive_s": 60},
    "topics": {"cmd_root": "/switch/cmd/root", "cmd_device": "/switch/cmd/{id}",
               "state": "/switch/state/{id}"},
    "ota": {"ca_path": "ca.der", "allow_http": False, "require_sha256": False,
            "allow_downgrade": False, "require_signature": False, "signing_pubkey": None,
            "health_timeout_s": 60, "chunk_size": 4096, "retries": 5, "retry_backoff_ms": 1000,
            "connect_timeout": 10, "read_timeout": 10, "token": None, "token_origin": None,
            "progress_bytes": 65536, "progress_interval_s": 5, "min_free": 6144,
            "selftest_min_heap": 32768, "chip_rev": None, "watchdog_ms": 60000,
            "max_restarts": 3, "download_deadline_s": 900},
    # Home Assistant's MQTT update entity (ha.py): off unless asked for. prefix: HA's discovery prefix;
    # state_topic: the entity's own state (installed/latest version, progress); release_topic: the
    # retained release announcement (`otactl announce`) that the Install button installs.
    "ha": {"discovery": False, "prefix": "homeassistant", "state_topic": "/switch/ha/{id}",
           "release_topic": "/switch/release"},
}

SECRETS = ("wifi.password", "mqtt.password", "ota.token")

_SECTOR = 4096
_HEX = "0123456789abcdefABCDEF"
_ID_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-"
# An id is the last level of /switch/cmd/<id> and /switch/state/<id>: "root" would make the fleet's
# command topic /switch/cmd/root this device's own (the ACL's `pattern write /switch/state/%u` and
# `pattern read /switch/cmd/%u` then hand the account "root" the whole fleet's topic).
RESERVED_IDS = ("root",)
# The files a CA copied to ota.ca_path/mqtt.ca_path (otactl provision) must never overwrite.
DEVICE_FILES = ("config.json", "main.py", "boot.py")
# config.json holds only overrides (a few hundred bytes); a bigger file is not ours, and reading it
# whole could cost the boot its heap.
MAX_FILE = 8192

# field -> (kind, low, high). Kinds: int (low..high), bool, str (length low..high), opt_str (None or
# str), path (a device file name), topic (no MQTT wildcards), hex64, id, opt_int.
_SCHEMA = (
    ("device_id", "id", 1, 32),
    ("wifi.ssid", "str", 0, 32),
    ("wifi.password", "str", 0, 63),
    ("mqtt.host", "str", 0, 253),
    ("mqtt.port", "opt_int", 1, 65535),  # None: 1883, or 8883 with tls
    ("mqtt.tls", "bool", 0, 0),
    ("mqtt.ca_path", "path", 1, 64),
    ("mqtt.user", "opt_str", 1, 128),
    ("mqtt.password", "opt_str", 0, 128),
    ("mqtt.keepalive_s", "int", 0, 65535),
    ("topics.cmd_root", "topic", 1, 128),
    ("topics.cmd_device", "topic", 1, 128),
    ("topics.state", "topic", 1, 128),
    ("ota.ca_path", "path", 1, 64),
    ("ota.allow_http", "bool", 0, 0),
    ("ota.require_sha256", "bool", 0, 0),
    ("ota.allow_downgrade", "bool", 0, 0),
    ("ota.require_signature", "bool", 0, 0),
    ("ota.signing_pubkey", "hex64", 64, 64),
    ("ota.health_timeout_s", "int", 5, 3600),
    ("ota.chunk_size", "int", _SECTOR, 32768),
    ("ota.retries", "int", 0, 20),
    ("ota.retry_backoff_ms", "int", 0, 600000),
    ("ota.connect_timeout", "int", 1, 300),
    ("ota.read_timeout", "int", 1, 300),
    ("ota.token", "opt_str", 1, 512),
    ("ota.token_origin", "opt_str", 8, 300),
    ("ota.progress_bytes", "int", _SECTOR, 16777216),
    ("ota.progress_interval_s", "int", 1, 3600),
    ("ota.min_free", "int", 0, 1048576),
    ("ota.selftest_min_heap", "int", 0, 1048576),
    ("ota.chip_rev", "opt_int", 0, 65535),
    ("ota.watchdog_ms", "int", 10000, 3600000),
    ("ota.max_restarts", "int", 0, 20),
    ("ota.download_deadline_s", "int", 10, 86400),
    ("ha.discovery", "bool", 0, 0),
    ("ha.prefix", "topic", 1, 64),
    ("ha.state_topic", "topic", 1, 128),
    ("ha.release_topic", "topic", 1, 128),
)


def _bad(field, problem):
    raise OtaError("bad_config", field + ": " + problem)


_MISSING = object()


def _get(cfg, field):
    dot = field.find(".")
    if dot < 0:
        return cfg.get(field, _MISSING)
    return cfg.get(field[:dot], {}).get(field[dot + 1:], _MISSING)


def _check_str(field, value, low, high):
    if type(value) is not str:
        _bad(field, "must be a string, not %s" % type(value).__name__)
    if not low <= len(value) <= high:
        _bad(field, "length must be %d..%d, got %d" % (low, high, len(value)))


# None when `value` can be a device id, else why not. The one rule for both sides: the device at boot
# (validate) and otactl before it trusts a state topic or addresses a command topic.
def id_problem(value):
    if type(value) is not str:
        return "must be a string"
    if not 1 <= len(value) <= 32:
        return "length must be 1..32, got %d" % len(value)
    for c in value:
        if c not in _ID_CHARS:
            return "only letters, digits, '_' and '-' (it is part of MQTT topics)"
    if value in RESERVED_IDS:
        return "%s is reserved (the fleet's command topic ends in it)" % value
    return None


def _check(field, kind, low, high, value):
    if value is _MISSING:
        _bad(field, "missing (validate a merged config: config.merge(overrides))")
    if kind == "bool":
        if type(value) is not bool:
            _bad(field, "must be true or false, not %r" % (value,))
    elif kind == "int" or kind == "opt_int":
        if value is None and kind == "opt_int":
            return
        if type(value) is not int:
            _bad(field, "must be an integer, not %r" % (value,))
        if not low <= value <= high:
            _bad(field, "must be %d..%d, got %d" % (low, high, value))
    elif kind == "id":
        if value is not None and id_problem(value):
            _bad(field, id_problem(value))
    elif kind == "opt_str" or kind == "hex64":
        if value is None:
            return
        _check_str(field, value, low, high)
        if kind == "hex64" and any(c not in _HEX for c in value):
            _bad(field, "must be 64 hex digits (an Ed25519 public key)")
    else:  # str, path, topic
        _check_str(field, value, low, high)
        if kind == "path" and (".." in value or value[0] == "/" and len(value) == 1):
            _bad(field, "must name a file on the device, got %r" % value)
        if kind == "path" and value.lstrip("/") in DEVICE_FILES:
            _bad(field, "must not be one of the device's own files %s" % (DEVICE_FILES,))
        if kind == "topic" and ("+" in value or "#" in value):
            _bad(field, "must not contain the MQTT wildcards + or #")


# Raises OtaError('bad_config', 'field: problem') for the first problem in a fixed field order:
# unknown sections or keys, wrong types, out-of-range values. complete=True also requires the
# settings a fleet device cannot run without (the device and `otactl provision` both use it).
def validate(cfg, complete=False):
    if type(cfg) is not dict:
        _bad("config", "must be a JSON object")
    if type(cfg.get("ota")) is dict and "token_host" in cfg["ota"]:  # merge() translates it
        _bad("ota.token_host", 'replaced by ota.token_origin, "https://host[:port]": the token goes to '
             "that scheme, host and port only")
    for name in sorted(cfg):
        if name not in DEFAULTS:
            _bad(name, "unknown setting")
        if type(DEFAULTS[name]) is dict:
            if type(cfg[name]) is not dict:
                _bad(name, "must be an object of settings")
            for key in sorted(cfg[name]):
                if key not in DEFAULTS[name]:
                    _bad(name + "." + key, "unknown setting")
    for field, kind, low, high in _SCHEMA:
        _check(field, kind, low, high, _get(cfg, field))
    if len(_get(cfg, "wifi.password")) in range(1, 8):
        _bad("wifi.password", "WPA2 needs 8..63 characters (empty for an open network)")
    if _get(cfg, "ota.chunk_size") % _SECTOR:
        _bad("ota.chunk_size", "must be a multiple of %d, got %d" % (_SECTOR, _get(cfg, "ota.chunk_size")))
    for field in ("topics.cmd_device", "topics.state", "ha.state_topic"):
        if "{id}" not in _get(cfg, field):
            _bad(field, "must contain {id} (one topic per device)")
    # An announcement on a command topic would run as a trigger without anyone pressing Install.
    release, head = _get(cfg, "ha.release_topic"), _get(cfg, "topics.cmd_device").split("{id}")[0]
    if release == _get(cfg, "topics.cmd_root") or (head and release.startswith(head)):
        _bad("ha.release_topic", "must not be (under) a command topic: an announcement is no trigger")
    # The watchdog must outlast the longest step that cannot feed it: a connect, then a TLS
    # handshake whose reads each wait up to read_timeout (two flights from the server).
    longest = 1000 * (_get(cfg, "ota.connect_timeout") + 2 * _get(cfg, "ota.read_timeout"))
    if _get(cfg, "ota.watchdog_ms") <= longest:
        _bad("ota.watchdog_ms", "must exceed 1000 * (connect_timeout + 2 * read_timeout) = %d" % longest)
    _check_token_origin(_get(cfg, "ota.token_origin"), _get(cfg, "ota.token"), complete)
    if _get(cfg, "ota.require_signature") and _get(cfg, "ota.signing_pubkey") is None:
        _bad("ota.signing_pubkey", "required when ota.require_signature is true")
    if complete:
        for field in ("wifi.ssid", "mqtt.host"):
            if not _get(cfg, field):
                _bad(field, "required: a device cannot reach the fleet without it")
    return cfg


# ota.token_origin: "https://host[:port]". A token without one is never sent (https.open). The device
# boots with such a config all the same: refusing it would roll back every new image on a device that
# an older firmware provisioned (its token followed the trigger's URL), and only a walk to the device
# with a cable could mend that; its downloads that need the token fail with http_401 instead, said on
# the state topic. otactl provision (complete=True) refuses to write one.
def _check_token_origin(origin, token, complete):
    if origin is None and token is not None and complete:
        _bad("ota.token_origin", 'required with ota.token: the "https://host[:port]" it may go to')
    if origin is not None:
        from ota import url as urls

        try:
            urls.origin(origin)
        except OtaError as e:
            _bad("ota.token_origin", "not an origin: " + e.detail.split(":")[0])


def merge(overrides):
    # DEFAULTS with overrides on top, section by section; copies, never shares DEFAULTS' dicts.
    cfg = {}
    for name in DEFAULTS:
        cfg[name] = dict(DEFAULTS[name]) if type(DEFAULTS[name]) is dict else DEFAULTS[name]
    if type(overrides) is not dict:
        _bad("config", "must be a JSON object")
    for name in overrides:
        value = overrides[name]
        if type(cfg.get(name)) is dict and type(value) is dict:
            cfg[name].update(value)
        else:
            cfg[name] = value
    ota = cfg["ota"]
    if type(ota) is dict and "token_host" in ota:
        # Written by an older firmware's provisioning: the token went to that host on any scheme and
        # port. Now it goes to https on the default port of that host only, which a host that served
        # firmware over verified TLS keeps working with.
        host = ota.pop("token_host")
        if ota.get("token_origin") is None and type(host) is str and host:
            ota["token_origin"] = "https://" + host
    return cfg


# A missing file gives the defaults; a file that is too big, not UTF-8, not JSON (or nested too
# deeply to parse), or holds a bad value raises OtaError('bad_config', ...), so the agent runs on
# the defaults instead of dying at boot; other I/O errors stay OSError.
def load(path="config.json"):
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        if e.args and e.args[0] == 2:  # ENOENT on both MicroPython and CPython
            return validate(merge({}))
        raise
    if len(data) > MAX_FILE:
        _bad(path, "larger than %d bytes" % MAX_FILE)
    try:
        overrides = json.loads(data.decode())
    except (ValueError, UnicodeError):  # UnicodeError is no ValueError on MicroPython
        _bad(path, "not valid JSON (UTF-8)")
    except (RuntimeError, MemoryError):  # CPython's RecursionError; MicroPython's parser asks for a
        _bad(path, "not valid JSON (nested too deeply)")  # block per nesting level
    return validate(merge(overrides))


def redacted(cfg):
    # A copy safe to print or log: secrets that are set become "***".
    out = {}
    for name in cfg:
        out[name] = dict(cfg[name]) if type(cfg[name]) is dict else cfg[name]
    for field in SECRETS:
        section, key = field.split(".")
        if type(out.get(section)) is dict and out[section].get(key):
            out[section][key] = "***"
    return out
