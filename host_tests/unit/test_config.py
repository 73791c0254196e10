"""lib/ota/config.py: defaults validate, each bad value names its field, and the SAME module gives the
same answer under the real MicroPython (the device) as under CPython (otactl provision)."""
import json
import os
import subprocess

import pytest

from paths import MICROPYTHON, ROOT

from ota import config
from ota.errors import OtaError

BAD = [
    ({"bogus": 1}, "bogus"),
    ({"mqtt": {"prot": 1883}}, "mqtt.prot"),
    ({"mqtt": 5}, "mqtt"),
    ({"mqtt": {"port": 0}}, "mqtt.port"),
    ({"mqtt": {"port": 65536}}, "mqtt.port"),
    ({"mqtt": {"port": "1883"}}, "mqtt.port"),
    ({"mqtt": {"tls": 1}}, "mqtt.tls"),
    ({"mqtt": {"user": 7}}, "mqtt.user"),
    ({"wifi": {"ssid": "x" * 33}}, "wifi.ssid"),
    ({"wifi": {"password": "short"}}, "wifi.password"),
    ({"device_id": "a/b"}, "device_id"),
    ({"topics": {"state": "/switch/state"}}, "topics.state"),
    ({"topics": {"cmd_root": "/switch/#"}}, "topics.cmd_root"),
    ({"ota": {"chunk_size": 0}}, "ota.chunk_size"),
    ({"ota": {"chunk_size": 5000}}, "ota.chunk_size"),
    ({"ota": {"chunk_size": 36864}}, "ota.chunk_size"),
    ({"ota": {"chunk_size": True}}, "ota.chunk_size"),
    ({"ota": {"health_timeout_s": 4}}, "ota.health_timeout_s"),
    ({"ota": {"health_timeout_s": 3601}}, "ota.health_timeout_s"),
    ({"ota": {"signing_pubkey": "ab" * 31}}, "ota.signing_pubkey"),
    ({"ota": {"signing_pubkey": "zz" * 32}}, "ota.signing_pubkey"),
    ({"ota": {"require_signature": True}}, "ota.signing_pubkey"),
    ({"ota": {"allow_http": "no"}}, "ota.allow_http"),
    ({"ota": {"ca_path": ""}}, "ota.ca_path"),
    ({"ota": {"retries": -1}}, "ota.retries"),
    # ids that collide with the topics: "root" would make /switch/cmd/root its own command topic
    ({"device_id": "root"}, "device_id"),
    ({"device_id": "+"}, "device_id"),
    ({"device_id": "#"}, "device_id"),
    ({"device_id": ""}, "device_id"),
    ({"device_id": "a" * 33}, "device_id"),
    ({"device_id": "a\x1b[2J"}, "device_id"),
    ({"device_id": 7}, "device_id"),
    # a CA copied over the device's own files (provision writes the CA to these paths)
    ({"ota": {"ca_path": "config.json"}}, "ota.ca_path"),
    ({"mqtt": {"ca_path": "/main.py"}}, "mqtt.ca_path"),
    ({"ota": {"ca_path": "boot.py"}}, "ota.ca_path"),
    # The watchdog must outlast a connect plus a TLS handshake's reads (issue 10).
    ({"ota": {"watchdog_ms": 9999}}, "ota.watchdog_ms"),
    ({"ota": {"watchdog_ms": 30000}}, "ota.watchdog_ms"),  # 10 + 2 * 10 s: not more
    ({"ota": {"watchdog_ms": 60000, "read_timeout": 30}}, "ota.watchdog_ms"),
    ({"ota": {"max_restarts": 21}}, "ota.max_restarts"),
    ({"ota": {"download_deadline_s": 5}}, "ota.download_deadline_s"),
    # The token goes to one origin only; a config that relied on the old defaults says so.
    ({"ota": {"token": "t", "token_host": "fw.example/x"}}, "ota.token_origin"),
    ({"ota": {"token": "t", "token_origin": "https://fw.example/firmware"}}, "ota.token_origin"),
    ({"ota": {"token": "t", "token_origin": "https://fw.example?x=1"}}, "ota.token_origin"),
    ({"ota": {"token": "t", "token_origin": "ftp://fw.example"}}, "ota.token_origin"),
    ({"ota": {"token": "t", "token_origin": "https://user@fw.example"}}, "ota.token_origin"),
]


def field_of(error):
    return error.detail.split(":", 1)[0]


def test_defaults_validate():
    cfg = config.merge({})
    assert config.validate(cfg) is cfg
    assert cfg["ota"]["chunk_size"] == 4096 and cfg["ota"]["health_timeout_s"] == 60
    assert cfg["topics"]["cmd_device"] == "/switch/cmd/{id}" and cfg["ota"]["ca_path"] == "ca.der"
    assert cfg["ota"]["allow_http"] is False and cfg["ota"]["require_signature"] is False


def test_a_good_full_config_validates():
    cfg = config.merge({"wifi": {"ssid": "lab", "password": "longenough"}, "mqtt": {"host": "b", "port": 8883,
                        "tls": True}, "ota": {"chunk_size": 32768, "require_signature": True,
                        "signing_pubkey": "0f" * 32}, "device_id": "switch-07"})
    config.validate(cfg, complete=True)


def test_token_origin_and_watchdog_accepted():
    config.validate(config.merge({"ota": {"token": "t", "token_origin": "https://fw.example:8443/"}}))
    config.validate(config.merge({"ota": {"token": "t", "token_origin": "http://10.0.0.5"}}))
    config.validate(config.merge({"ota": {"watchdog_ms": 30001}}))
    assert config.merge({})["ota"]["watchdog_ms"] == 60000


def test_an_older_token_config_still_boots_and_its_token_goes_to_one_origin():
    # A token_host from an older firmware's provisioning becomes an https origin; a token with no
    # origin at all is never sent, and the device boots (a refusal would roll back every new image
    # on it, for good); provisioning a new config with such a token is refused.
    cfg = config.validate(config.merge({"ota": {"token": "t", "token_host": "fw.example"}}))
    assert cfg["ota"]["token_origin"] == "https://fw.example" and "token_host" not in cfg["ota"]
    cfg = config.validate(config.merge({"ota": {"token": "t"}}))
    assert cfg["ota"]["token_origin"] is None
    full = {"wifi": {"ssid": "s"}, "mqtt": {"host": "b"}, "ota": {"token": "t"}}
    with pytest.raises(OtaError) as err:
        config.validate(config.merge(full), complete=True)
    assert field_of(err.value) == "ota.token_origin"


def test_complete_requires_ssid_and_broker():
    with pytest.raises(OtaError) as err:
        config.validate(config.merge({}), complete=True)
    assert err.value.reason == "bad_config" and field_of(err.value) == "wifi.ssid"


@pytest.mark.parametrize("overrides,field", BAD, ids=[f for _, f in BAD])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(OtaError) as err:
        config.validate(config.merge(overrides))
    assert err.value.reason == "bad_config"
    assert field_of(err.value) == field, str(err.value)


def test_load_missing_file_gives_defaults(tmp_path):
    assert config.load(str(tmp_path / "nope.json")) == config.merge({})


def test_load_malformed_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{\"wifi\": ")
    with pytest.raises(OtaError) as err:
        config.load(str(path))
    assert err.value.reason == "bad_config" and "not valid JSON" in err.value.detail


@pytest.mark.parametrize("data", [b"\xff\xfe{\"wifi\": 1}", b'{"device_id": "\xc3"}', b"[" * 5000,
                                  b" " * 20000 + b"{}"])
def test_load_undecodable_or_oversized_is_bad_config(tmp_path, data):
    # A CA copied over config.json, a torn write: not UTF-8, not JSON, too deep or too big; the
    # agent's load_config then runs on the defaults instead of dying at boot.
    path = tmp_path / "config.json"
    path.write_bytes(data)
    with pytest.raises(OtaError) as err:
        config.load(str(path))
    assert err.value.reason == "bad_config"


LOAD_SCRIPT = """
import sys
sys.path.insert(0, %r)
sys.path.insert(0, %r)  # the simulator's esp32/machine/network, which agent.py imports
from ota import agent
cfg, problem = agent.load_config(sys.argv[1])
print(problem.split(":")[0], cfg["mqtt"]["host"] == "")
"""


def test_agent_runs_on_defaults_when_config_is_not_utf8_under_micropython(tmp_path):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("the micropython binary is missing: run make venv")
    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT % (os.path.join(ROOT, "lib"), os.path.join(ROOT, "sim", "device")))
    for data in (bytes(range(0x80, 0x100)) + b"0\x82\x01", b'{"mqtt": {"host": "\xff"}}', b"[" * 8000):
        path = tmp_path / "config.json"
        path.write_bytes(data)
        run = subprocess.run([MICROPYTHON, str(script), str(path)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.split()[-2:] == ["bad_config", "True"], run.stdout


def test_load_merges_sections(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"mqtt": {"host": "broker.lan"}}))
    cfg = config.load(str(path))
    assert cfg["mqtt"]["host"] == "broker.lan" and cfg["mqtt"]["port"] is None  # 1883, 8883 with tls
    assert config.DEFAULTS["mqtt"]["host"] == ""  # DEFAULTS never shared or changed


def test_redacted_masks_secrets_only():
    cfg = config.merge({"wifi": {"password": "hunter2hunter2"}, "ota": {"token": "t0k"}})
    shown = config.redacted(cfg)
    assert shown["wifi"]["password"] == "***" and shown["ota"]["token"] == "***"
    assert shown["mqtt"]["password"] is None and cfg["wifi"]["password"] == "hunter2hunter2"


DEVICE_SCRIPT = """
import sys, json
sys.path.insert(0, %r)
from ota import config
for overrides in json.loads(sys.stdin.read()):
    try:
        config.validate(config.merge(overrides))
        print(json.dumps(["ok", ""]))
    except config.OtaError as e:
        print(json.dumps([e.reason, e.detail]))
"""


def test_the_same_module_validates_the_same_under_micropython(tmp_path):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("the micropython binary is missing: run make venv")
    script = tmp_path / "device_validate.py"
    script.write_text(DEVICE_SCRIPT % os.path.join(ROOT, "lib"))
    cases = [o for o, _ in BAD] + [{}]
    run = subprocess.run([MICROPYTHON, str(script)], input=json.dumps(cases), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    device = [json.loads(line) for line in run.stdout.splitlines()]
    host = []
    for overrides in cases:
        try:
            config.validate(config.merge(overrides))
            host.append(["ok", ""])
        except OtaError as e:
            host.append([e.reason, e.detail])
    assert device == host
