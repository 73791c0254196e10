"""ota.config at the corners its table of bad values (test_config) does not reach, pinned after
`make mutate`: a config that is not merged (a section or key missing), every bound exactly and one
past, the path and topic rules, and load()'s limits on what it reads. CPython; test_config runs the
same module on MicroPython."""
import errno
import json

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import config
from ota.errors import OtaError


def field_of(error):
    return error.detail.split(":", 1)[0]


def refused(cfg, complete=False):
    # The field validate() names for `cfg`, which must be refused with bad_config.
    with pytest.raises(OtaError) as err:
        config.validate(cfg, complete)
    assert err.value.reason == "bad_config", str(err.value)
    return field_of(err.value)


def overridden(section, key, value):
    cfg = config.merge({})
    cfg[section][key] = value
    return cfg


# ---- a config that is not merged: what is missing is named, never taken for None ----------------

def test_an_empty_config_names_the_first_missing_field():
    assert refused({}) == "device_id"


def test_a_missing_optional_key_is_missing_not_none():
    # mqtt.user may be None; a config without the key at all was never merged and is refused.
    cfg = config.merge({})
    del cfg["mqtt"]["user"]
    assert refused(cfg) == "mqtt.user"


def test_a_missing_section_names_its_first_field():
    cfg = config.merge({})
    del cfg["ha"]
    assert refused(cfg) == "ha.discovery"


@pytest.mark.parametrize("cfg", ["{}", [], None, 7])
def test_not_an_object(cfg):
    assert refused(cfg) == "config"
    with pytest.raises(OtaError) as err:
        config.merge(cfg)
    assert err.value.reason == "bad_config" and field_of(err.value) == "config"


def test_a_section_that_is_not_an_object():
    assert refused({"ota": 5}) == "ota"
    assert refused(dict(config.merge({}), ota=[])) == "ota"


def test_token_host_is_named_with_what_replaced_it():
    # validate() on a config that merge() did not translate: the operator is told the new field.
    cfg = config.merge({})
    cfg["ota"]["token_host"] = "fw.example"
    with pytest.raises(OtaError) as err:
        config.validate(cfg)
    assert field_of(err.value) == "ota.token_host" and "ota.token_origin" in err.value.detail


# ---- device ids: 1..32 characters ---------------------------------------------------------------

@pytest.mark.parametrize("value", ["a", "Z", "0", "_", "-", "a" * 32, "a-B_9"])
def test_ids_at_the_bounds_are_good(value):
    assert config.id_problem(value) is None
    assert config.validate(config.merge({"device_id": value}))["device_id"] == value


@pytest.mark.parametrize("value", ["", "a" * 33, "a.b", "a b", "root", "é"])
def test_ids_past_the_bounds_are_refused(value):
    assert config.id_problem(value) is not None
    assert refused(config.merge({"device_id": value})) == "device_id"


# ---- every bounded field: exactly at each bound passes, one past is refused ------------------------

def _schema():
    for field, kind, low, high in config._SCHEMA:
        if kind in ("int", "opt_int", "str", "opt_str", "path", "topic", "id"):
            yield field, kind, low, high


def _value(field, kind, n):
    # A value of the field's kind at n (an int, or a string of length n) that breaks no other rule.
    if kind in ("int", "opt_int"):
        return n
    if field == "wifi.password" and 0 < n < 8:
        return None  # WPA2's own rule (8..63) decides those lengths
    if kind == "topic":
        if field not in ("topics.cmd_device", "topics.state", "ha.state_topic"):
            return "t" * n
        return ("/d/{id}" + "x" * n)[:n] if n >= 6 else None  # one topic per device: holds {id}
    if kind == "path":
        return "c" * n
    return "a" * n


def _with(field, value):
    cfg = config.merge({})
    section, _, key = field.partition(".")
    if key:
        cfg[section][key] = value
    else:
        cfg[section] = value
    if field in ("ota.connect_timeout", "ota.read_timeout"):
        cfg["ota"]["watchdog_ms"] = 3600000  # the watchdog rule must not decide these bounds
    if field == "ota.watchdog_ms":
        cfg["ota"]["connect_timeout"] = cfg["ota"]["read_timeout"] = 1
    if field == "ota.token":
        cfg["ota"]["token_origin"] = "https://fw.example"
    if field == "ota.token_origin" and value is not None:
        return None  # an origin is a URL: its own test below
    if field == "ha.release_topic" and value is not None and value.startswith("/t"):
        cfg["topics"]["cmd_root"] = "/cmd/root"
    return cfg


@pytest.mark.parametrize("field, kind, low, high", list(_schema()), ids=[f for f, _, _, _ in _schema()])
def test_each_bound_exactly_and_one_past(field, kind, low, high):
    for n, good in ((low, True), (high, True), (low - 1, False), (high + 1, False)):
        if n < 0 or (field == "ota.chunk_size" and n % 4096 and good):
            continue
        value = _value(field, kind, n)
        if value is None:
            continue
        cfg = _with(field, value)
        if cfg is None:
            continue
        if good:
            config.validate(cfg)
        else:
            assert refused(cfg) == field, (n, value)


@pytest.mark.parametrize("length, good", [(0, True), (1, False), (7, False), (8, True), (63, True)])
def test_wifi_password_is_open_or_wpa2(length, good):
    cfg = overridden("wifi", "password", "p" * length)
    if good:
        config.validate(cfg)
    else:
        assert refused(cfg) == "wifi.password"


def test_token_origin_needs_a_host_after_https():
    config.validate(config.merge({"ota": {"token": "t", "token_origin": "https://a"}}))
    assert refused(config.merge({"ota": {"token": "t", "token_origin": "https://"}})) == "ota.token_origin"


# ---- paths: a file on the device, never above it, never the device's own files ---------------------

@pytest.mark.parametrize("path", ["c", "/certs/ca.der", "certs/ca.der", "Xboot.py", "main.py.bak"])
def test_paths_that_name_a_file(path):
    assert config.validate(overridden("mqtt", "ca_path", path))["mqtt"]["ca_path"] == path


@pytest.mark.parametrize("path", ["/", "..", "../ca.der", "certs/../ca.der", "/boot.py", "//config.json"])
def test_paths_that_do_not(path):
    assert refused(overridden("mqtt", "ca_path", path)) == "mqtt.ca_path"
    assert refused(overridden("ota", "ca_path", path)) == "ota.ca_path"


@pytest.mark.parametrize("topic", ["/switch/+/x", "+", "/switch/#", "#"])
def test_topics_refuse_both_wildcards(topic):
    assert refused(overridden("topics", "cmd_root", topic)) == "topics.cmd_root"
    assert refused(overridden("ha", "prefix", topic)) == "ha.prefix"


# ---- load(): how much it reads, and which errors mean "no file" -----------------------------------

def _write(tmp_path, size):
    # A valid config.json of exactly `size` bytes (the JSON padded with spaces).
    body = json.dumps({"mqtt": {"host": "broker.lan"}}).encode()
    path = tmp_path / "config.json"
    path.write_bytes(body + b" " * (size - len(body)))
    return str(path)


def test_a_file_of_exactly_max_file_bytes_loads(tmp_path):
    assert config.load(_write(tmp_path, config.MAX_FILE))["mqtt"]["host"] == "broker.lan"


def test_one_byte_more_is_refused(tmp_path):
    with pytest.raises(OtaError) as err:
        config.load(_write(tmp_path, config.MAX_FILE + 1))
    assert err.value.reason == "bad_config"


def test_load_never_reads_more_than_one_byte_past_the_limit(tmp_path, monkeypatch):
    # A 1 MB file copied over config.json must not be read whole into the boot's heap.
    asked = []

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, n=-1):
            asked.append(n)
            return self.f.read(n)

    path = _write(tmp_path, 1 << 20)
    monkeypatch.setattr(config, "open", lambda p, mode="r": Counting(open(p, mode)), raising=False)
    with pytest.raises(OtaError):
        config.load(path)
    assert asked and all(n is not None and 0 <= n <= config.MAX_FILE + 1 for n in asked), asked


def test_only_a_missing_file_gives_the_defaults(tmp_path):
    # A directory (EISDIR), like any I/O error other than ENOENT, stays an OSError for the caller.
    with pytest.raises(OSError) as err:
        config.load(str(tmp_path))
    assert err.value.errno != errno.ENOENT
    assert config.load(str(tmp_path / "absent.json")) == config.merge({})


# ---- the release announcement must never land on a command topic ----------------------------------

def test_release_topic_equal_to_the_fleet_command_topic():
    # cmd_root outside the per-device prefix: only the equality can catch it.
    cfg = config.merge({"topics": {"cmd_root": "/fleet/all"}, "ha": {"release_topic": "/fleet/all"}})
    assert refused(cfg) == "ha.release_topic"


def test_release_topic_under_the_per_device_command_prefix():
    cfg = config.merge({"ha": {"release_topic": "/switch/cmd/any"}})
    assert refused(cfg) == "ha.release_topic"
    # ... but beside it, or under another prefix, it is fine.
    config.validate(config.merge({"ha": {"release_topic": "/switch/release"}}))
    config.validate(config.merge({"ha": {"release_topic": "/switch/cmdx"}}))


# ---- complete=True: what a fleet device cannot run without ------------------------------------------

def test_complete_requires_the_broker_once_the_ssid_is_there():
    assert refused(config.merge({"wifi": {"ssid": "lab"}}), complete=True) == "mqtt.host"
    config.validate(config.merge({"wifi": {"ssid": "lab"}, "mqtt": {"host": "b"}}), complete=True)


# ---- merge(): an older firmware's ota.token_host ----------------------------------------------------

def test_token_host_never_overrides_a_token_origin():
    cfg = config.merge({"ota": {"token_origin": "https://a.example", "token_host": "b.example"}})
    assert cfg["ota"]["token_origin"] == "https://a.example" and "token_host" not in cfg["ota"]


@pytest.mark.parametrize("host", ["", None, 5, ["b.example"]])
def test_a_token_host_that_is_no_host_gives_no_origin(host):
    cfg = config.merge({"ota": {"token_host": host}})
    assert cfg["ota"]["token_origin"] is None and "token_host" not in cfg["ota"]


# ---- session 21: what the full mutation run left ------------------------------------------------

@pytest.mark.parametrize("value, why", [("a" * 33, "length must be 1..32, got 33"),
                                        ("a.b", "only letters, digits"), ("root", "root is reserved")])
def test_a_refused_id_says_what_is_wrong_with_it(value, why):
    # The detail is the one line an operator gets for a device that boots on its defaults: it names
    # this id's own problem, not a generic one (a string that is too long is still a string).
    with pytest.raises(OtaError) as err:
        config.validate(config.merge({"device_id": value}))
    assert err.value.detail.startswith("device_id: ") and why in err.value.detail, err.value.detail


def test_load_without_a_path_reads_config_json_in_the_working_folder(tmp_path, monkeypatch):
    # The device's file, as a device script calls it (host_tests/e2e/test_e2e_signed.py).
    (tmp_path / "config.json").write_text(json.dumps({"mqtt": {"host": "broker.lan"}}))
    monkeypatch.chdir(tmp_path)
    assert config.load()["mqtt"]["host"] == "broker.lan"
