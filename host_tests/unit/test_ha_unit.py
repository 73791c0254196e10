# lib/ota/ha.py (Home Assistant's MQTT update entity) and lib/ota/telemetry.py on CPython: the
# discovery config, the entity state in every device state, the release announcement and the Install
# button through the agent's intake and commands (fakes of test_agent_unit.py), and the telemetry
# record of a final state.
import json
import os
import subprocess

import pytest

import fakes  # noqa: F401  puts lib/ on sys.path
from ota import config, ha, state, telemetry
from ota.errors import OtaError
from paths import DRIVERS
from test_agent_unit import DEV, STATE_TOPIC, Updater, connected, deliver
import test_agent_unit

agent_env = test_agent_unit.env  # test_agent_unit's fixture, registered here as `agent_env`
CMD = "/switch/cmd/" + DEV
RELEASE = {"type": "ota_trigger", "url": "https://fw.example.com/firmware-v1.1.0.bin", "sha256": "ab" * 32,
           "size": 300000, "version": "1.1.0", "id": "v1.1.0-announce",
           "release_url": "https://fw.example.com/notes/1.1.0", "summary": "Faster relay"}


def entity_for(version="1.0.0", announcement=None):
    cfg = config.merge({"ha": {"discovery": True}})
    h = ha.HomeAssistant(cfg["ha"], DEV, version, CMD, STATE_TOPIC)
    if announcement is not None:
        h.take(b"/switch/release", json.dumps(announcement).encode())
    return h


def test_discovery_config_is_an_update_entity_of_this_device():
    h = entity_for()
    assert h.config_topic == "homeassistant/update/%s/firmware/config" % DEV
    disc = json.loads(h.discovery())
    assert disc["device_class"] == "firmware" and disc["unique_id"] == DEV + "_firmware"
    assert disc["state_topic"] == "/switch/ha/" + DEV
    assert disc["command_topic"] == CMD and disc["payload_install"].encode() == ha.INSTALL
    assert disc["availability_topic"] == STATE_TOPIC and disc["json_attributes_topic"] == STATE_TOPIC
    assert "value_json.state == 'offline'" in disc["availability_template"]
    assert disc["device"] == {"identifiers": ["ota_" + DEV], "name": "ESP32-C3 " + DEV, "model": "ESP32-C3",
                              "manufacturer": "OTA switch", "sw_version": "1.0.0"}
    # A version with JSON's special characters stays one string; an unknown one is null.
    assert json.loads(entity_for('1.0"\\x').discovery())["device"]["sw_version"] == '1.0"\\x'
    assert "sw_version" not in json.loads(entity_for(None).discovery())["device"]  # HA refuses a null


def test_custom_prefix_and_topics():
    cfg = config.merge({"ha": {"discovery": True, "prefix": "ha2", "state_topic": "/x/{id}/ha"}})
    h = ha.HomeAssistant(cfg["ha"], DEV, "1.0.0", CMD, STATE_TOPIC)
    assert h.config_topic == "ha2/update/%s/firmware/config" % DEV and h.state_topic == "/x/%s/ha" % DEV


# (device state, progress) -> (in_progress, update_percentage): every state the device publishes.
STATES = [
    ("idle", None, False, None),
    ("downloading", 0, True, 0),
    ("downloading", 42, True, 42),
    ("downloading", None, True, None),  # size unknown: a busy entity without a bar
    ("verifying", 100, True, 100),
    ("rebooting", 100, True, 100),
    ("confirming", None, True, 100),
    ("ok", None, False, None),
    ("failed", None, False, None),
    ("rolled_back", None, False, None),
]


@pytest.mark.parametrize("name,progress,busy,pct", STATES)
def test_entity_state_in_every_device_state(name, progress, busy, pct):
    assert set(state.STATES) == {s[0] for s in STATES}  # a new device state needs its row here
    h = entity_for(announcement=RELEASE)
    msg = json.loads(h.entity(name, progress))
    assert msg == {"installed_version": "1.0.0", "latest_version": "1.1.0", "in_progress": busy,
                   "update_percentage": pct, "release_url": RELEASE["release_url"],
                   "release_summary": "Faster relay"}


def test_latest_is_installed_without_an_announcement_for_this_device():
    plain = json.loads(entity_for().entity("idle"))
    assert (plain["installed_version"], plain["latest_version"]) == ("1.0.0", "1.0.0")
    assert "release_url" not in plain and "release_summary" not in plain  # HA refuses a null there
    # A staged rollout's announcement for other devices offers nothing here.
    other = json.loads(entity_for(announcement=dict(RELEASE, target="ffffffffffff,eeeeeeeeeeee")).entity("idle"))
    assert other["latest_version"] == "1.0.0"
    mine = json.loads(entity_for(announcement=dict(RELEASE, target="ffffffffffff," + DEV)).entity("idle"))
    assert mine["latest_version"] == "1.1.0"


def test_withdrawn_and_bad_announcements():
    h = entity_for(announcement=RELEASE)
    h.take("/switch/release", b"")  # otactl announce --withdraw: an empty retained message
    assert h.release is None and json.loads(h.entity("idle"))["latest_version"] == "1.0.0"
    for payload, reason in ((b"{not json", "bad_json"), (json.dumps(dict(RELEASE, sha256="xyz")).encode(),
                                                          "bad_sha256_field"),
                            (b'{"type":"ota_revert","id":"r1"}', "bad_announcement")):
        h.take("/switch/release", payload)
        assert h.release is None and h.problem == reason
        assert json.loads(h.entity("idle"))["release_summary"] == "announcement refused: " + reason
        with pytest.raises(OtaError) as e:
            h.take(CMD, ha.INSTALL)
        assert (e.value.reason, e.value.detail) == ("no_release", reason)


def test_mine_only_takes_install_and_the_release_topic():
    h = entity_for()
    assert h.mine(b"/switch/release", b"{}") and h.mine(CMD.encode(), ha.INSTALL)
    assert not h.mine(CMD.encode(), b'{"type":"ota_trigger","url":"https://x/fw.bin"}')
    assert not h.mine(b"/switch/cmd/root", ha.INSTALL)  # HA addresses one device, never the fleet


def test_config_validates_the_ha_section():
    for overrides, field in (({"ha": {"discovery": "yes"}}, "ha.discovery"),
                             ({"ha": {"prefix": "home/#"}}, "ha.prefix"),
                             ({"ha": {"state_topic": "/switch/ha"}}, "ha.state_topic"),
                             ({"ha": {"release_topic": "/switch/cmd/root"}}, "ha.release_topic"),
                             ({"ha": {"release_topic": "/switch/cmd/all-releases"}}, "ha.release_topic"),
                             ({"ha": {"bogus": 1}}, "ha.bogus")):
        with pytest.raises(OtaError) as e:
            config.validate(config.merge(overrides))
        assert e.value.reason == "bad_config" and e.value.detail.startswith(field), (overrides, e.value)
    assert config.validate(config.merge({"ha": {"discovery": True}}))["ha"]["discovery"] is True


# --- through the agent (test_agent_unit's fakes) ---------------------------------------------------

def ha_messages(client, topic):
    return [m for t, m, retain, qos in client.published if t == topic.encode()]


def last_state(client):
    return ha_messages(client, STATE_TOPIC)[-1]


def test_agent_publishes_discovery_and_entity_and_installs_the_announcement(agent_env):
    up = Updater()
    a = agent_env.make(up, ha={"discovery": True})
    client = connected(a)
    assert (b"/switch/release", 1) in client.subscribed
    disc = ha_messages(client, "homeassistant/update/%s/firmware/config" % DEV)
    assert disc and disc[-1]["device"]["sw_version"] == "1.0.0"
    assert ha_messages(client, "/switch/ha/" + DEV)[-1]["latest_version"] == "1.0.0"
    deliver(a, json.dumps(RELEASE).encode(), topic=b"/switch/release")
    assert a.pending is None  # an announcement is never run by itself
    deliver(a, ha.INSTALL, topic=CMD.encode())
    assert a.pending["url"] == RELEASE["url"] and a.pending["sha256"] == RELEASE["sha256"]
    try:
        a.run_pending()
    except BaseException as e:  # the fakes' machine.reset()
        assert type(e).__name__ == "Reset"
    assert up.calls[0]["url"] == RELEASE["url"] and up.calls[0]["version"] == "1.1.0"
    entity = [(m["in_progress"], m["update_percentage"]) for m in ha_messages(client, "/switch/ha/" + DEV)]
    assert entity[0] == (False, None) and (True, 0) in entity and entity[-1] == (True, 100), entity


def test_install_without_announcement_or_under_require_signature(agent_env):
    a = agent_env.make(Updater(), ha={"discovery": True})
    connected(a)
    deliver(a, ha.INSTALL, topic=CMD.encode())
    msg = last_state(a.link.client)
    assert (msg["state"], msg["reason"]) == ("failed", "no_release") and a.pending is None


def test_unsigned_announcement_refused_under_require_signature(agent_env):
    up = Updater()
    a = agent_env.make(up, ha={"discovery": True}, ota={"require_signature": True, "signing_pubkey": "11" * 32})
    connected(a)
    deliver(a, json.dumps(RELEASE).encode(), topic=b"/switch/release")
    deliver(a, ha.INSTALL, topic=CMD.encode())
    a.run_pending()
    msg = last_state(a.link.client)
    assert (msg["state"], msg["reason"]) == ("failed", "unsigned") and up.calls == []


def test_ha_off_costs_nothing_on_the_wire(agent_env):
    a = agent_env.make(Updater())
    client = connected(a)
    assert all(not t.startswith(b"homeassistant/") and t != b"/switch/ha/" + DEV.encode()
               for t, m, retain, qos in client.published)
    assert (b"/switch/release", 1) not in client.subscribed
    deliver(a, ha.INSTALL, topic=CMD.encode())  # an unknown type on its topic: ignored, as before
    assert a.pending is None and last_state(a.link.client)["state"] == "idle"


# --- telemetry ---------------------------------------------------------------------------------

class FakeResp:
    url, status, length, range_start, total, chunked = "https://x/fw.bin", 200, 8192, None, 8192, False

    def __init__(self, status=200, left=8192):
        self.status, self.left = status, left

    def readinto(self, buf):
        n = min(len(buf), self.left)
        self.left -= n
        return n

    def close(self):
        pass


class FakeHttps:
    def __init__(self):
        self.answers = [FakeResp(200, 4096), FakeResp(206, 4096), FakeResp(200, 8192)]

    def open(self, url, start=0, **kwargs):
        return self.answers.pop(0)

    def reason(self, error):
        return "timeout"


class FakePart:
    def __init__(self):
        self.calls = []

    def info(self):
        return (0, 0x10, 0x1E0000, 0x1D0000, "ota_1", False)

    def ioctl(self, op, arg):
        return 4096

    def writeblocks(self, block, buf):
        self.calls.append(("w", block))

    def readblocks(self, block, buf):
        self.calls.append(("r", block))

    def set_boot(self):
        self.calls.append(("boot",))


class FakeWlan:
    def __init__(self, values):
        self.values = list(values)

    def status(self, what):
        assert what == "rssi"
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


class FakeEsp32:
    HEAP_DATA = 4

    def __init__(self, largest):
        self.largest = list(largest)

    def idf_heap_info(self, caps):
        return [(245760, 100000, self.largest.pop(0) if len(self.largest) > 1 else self.largest[0], 0)]


def test_meter_counts_bytes_resumes_restarts_and_lowest_values():
    meter = telemetry.Meter("1.1.0", FakeEsp32([90000, 60000, 70000, 50000]), FakeWlan([-50, -58, -71, -60]))
    https, part = meter.https(FakeHttps()), meter.partition(FakePart())
    buf = bytearray(4096)
    for start in (0, 4096, 8192):  # a first connection, a resume (206), a restart (200 to a Range)
        resp = https.open("https://x/fw.bin", start=start)
        while resp.readinto(buf):
            part.writeblocks(0, buf)
        resp.close()
    part.readblocks(0, buf)
    part.set_boot()
    fields = meter.fields()
    t = telemetry.record(dict(fields, **telemetry.confirmed(fields, 2, 800)))
    assert (t["fetched"], t["resumes"], t["restarts"]) == (4096 + 4096 + 8192, 2, 1)
    assert (t["rssi0"], t["rssi_min"]) == (-50, -71) and t["idf_min"] == 50000
    assert t["to"] == "1.1.0" and t["art"] == "full" and t["reset"] == "HARD_RESET" and t["boot_ms"] == 800
    assert t["dl_ms"] >= 0 and t["conn_ms"] >= 0 and t["verify_ms"] >= 0 and t["reboot_s"] >= 0
    assert set(t) == set(telemetry.KEYS)


def test_meter_gives_no_byte_count_when_the_inflater_reads_the_socket_itself():
    # inflate.py's direct decode reads the raw socket (resp._stream), past the meter's readinto: the
    # count would be a few header bytes, so the record says "not measured" (null) instead.
    class Raw(FakeResp):
        _stream = object()

    meter = telemetry.Meter("1.1.0")
    https = meter.https(FakeHttps())
    resp = https.open("https://x/fw.otaz")
    assert getattr(resp, "_stream", None) is None and meter.fields()["t_fetched"] == 0  # no socket: counted
    https.module.answers.insert(0, Raw(200, 4096))
    resp = https.open("https://x/fw.otaz")
    assert resp._stream is Raw._stream and meter.fields()["t_fetched"] is None
    from otactl import devstate

    record = telemetry.record(meter.fields())
    assert devstate._telemetry("dev-1", record)["fetched"] is None  # the fleet tool takes the null


def test_final_state_with_telemetry_fits_the_message_budget():
    # The biggest final message: every field at its longest, the detail cut at 160 characters.
    worst = {k: -2 ** 31 if k.startswith("rssi") else 2 ** 32 - 1 for k in telemetry.KEYS}
    worst.update(to="v" * 31, art="compressed", reset="DEEPSLEEP_RESET")
    r = state.Reporter("x" * 32, "v" * 31, "ota_1")
    msg = r.message("rolled_back", job="j" * 40, reason="too_many_restarts", detail="d" * 1000, progress=100,
                    done=2 ** 32 - 1, total=2 ** 32 - 1, t=worst)
    assert len(msg) <= 1024, len(msg)
    assert json.loads(msg)["t"] == worst


def test_no_telemetry_for_a_refusal_or_an_old_record():
    assert telemetry.record(None) is None and telemetry.record({"id": "j", "state": "ok"}) is None


HA_PYTHON = os.path.join(os.environ.get("OTA_HA_VENV") or os.path.expanduser("~/.cache/ota-ha/ha-2025.4.4"),
                         "bin", "python")


@pytest.mark.skipif(not os.path.exists(HA_PYTHON), reason="no Home Assistant venv (scripts/ha_venv.sh, make ha-check)")
def test_payloads_pass_home_assistants_own_schemas():
    # HA 2025.4.4's DISCOVERY_SCHEMA and MQTT_JSON_UPDATE_SCHEMA (homeassistant/components/mqtt/update.py)
    # on the discovery config and the entity in every state, with and without an announcement, and on a
    # device whose version is unknown; a null string is what HA refuses (the check can fail).
    items = [{"kind": "discovery", "payload": json.loads(entity_for().discovery())},
             {"kind": "discovery", "payload": json.loads(entity_for(None).discovery())}]
    for announcement in (None, RELEASE, dict(RELEASE, release_url="ftp://x/notes")):
        for version in ("1.0.0", None):
            h = entity_for(version, announcement)
            for name, progress, _, _ in STATES:
                items.append({"kind": "entity", "payload": json.loads(h.entity(name, progress))})
    items.append({"kind": "entity", "payload": {"installed_version": None}})  # the control
    proc = subprocess.run([HA_PYTHON, os.path.join(DRIVERS, "ha_schema_check.py")],
                          input="".join(json.dumps(i) + "\n" for i in items), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdicts = proc.stdout.split("\n")[:len(items)]
    assert verdicts[:-1] == ["ok"] * (len(items) - 1), [(i, v) for i, v in zip(items, verdicts) if v != "ok"]
    assert verdicts[-1].startswith("invalid")


def test_install_of_a_job_that_already_ran_says_so(agent_env):
    # A failed install pressed again: the job id was run (the seen list stops a retained trigger from
    # looping); HA's press gets an answer, not silence. A new announcement (new id) runs again.
    up = Updater(error=OtaError("bad_sha256", "simulated"))
    a = agent_env.make(up, ha={"discovery": True})
    connected(a)
    deliver(a, json.dumps(RELEASE).encode(), topic=b"/switch/release")
    deliver(a, ha.INSTALL, topic=CMD.encode())
    a.run_pending()
    assert (last_state(a.link.client)["state"], last_state(a.link.client)["reason"]) == ("failed", "bad_sha256")
    deliver(a, ha.INSTALL, topic=CMD.encode())
    msg = last_state(a.link.client)
    assert (msg["state"], msg["reason"]) == ("failed", "already_run") and a.pending is None
    deliver(a, json.dumps(dict(RELEASE, id="v1.1.0-again")).encode(), topic=b"/switch/release")
    deliver(a, ha.INSTALL, topic=CMD.encode())
    assert a.pending["id"] == "v1.1.0-again"
