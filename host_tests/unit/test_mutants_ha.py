"""ota.ha.HomeAssistant: the whole discovery config, the entity in the states around a job, the
announcement's optional fields at their bounds, and what an Install takes (pinned after `make mutate`;
test_ha_unit.py holds the schema checks). CPython."""
import json

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import config, ha
from ota.errors import OtaError

DEV = "a0b1c2d3e4f5"
CMD = "/switch/cmd/" + DEV
STATE = "/switch/state/" + DEV
RELEASE = {"type": "ota_trigger", "url": "https://fw.example.com/fw-1.1.0.bin", "version": "1.1.0", "id": "r1"}


def entity(version="1.0.0"):
    return ha.HomeAssistant(config.merge({"ha": {"discovery": True}})["ha"], DEV, version, CMD, STATE)


def announce(h, **extra):
    h.take("/switch/release", json.dumps(dict(RELEASE, **extra)).encode())
    return json.loads(h.entity("idle"))


def test_the_discovery_config_whole():
    assert json.loads(entity().discovery()) == {
        "name": "Firmware", "unique_id": DEV + "_firmware", "device_class": "firmware",
        "state_topic": "/switch/ha/" + DEV, "command_topic": CMD, "payload_install": '{"type":"ota_install"}',
        "availability_topic": STATE,
        "availability_template": "{{ 'offline' if value_json.state == 'offline' else 'online' }}",
        "json_attributes_topic": STATE, "entity_category": "config", "qos": 1,
        "device": {"identifiers": ["ota_" + DEV], "name": "ESP32-C3 " + DEV, "model": "ESP32-C3",
                   "manufacturer": "OTA switch", "sw_version": "1.0.0"}}
    assert ha.INSTALL == b'{"type":"ota_install"}'
    assert isinstance(entity().discovery(), bytes) and isinstance(entity().entity("idle"), bytes)


@pytest.mark.parametrize("name,progress,busy,pct", [
    ("downloading", 7, True, 7), ("downloading", None, True, None), ("verifying", 3, True, 100),
    ("rebooting", None, True, 100), ("confirming", 0, True, 100), ("idle", 50, False, None),
    ("ok", 100, False, None), ("failed", 20, False, None), ("offline", None, False, None)])
def test_the_bar_shows_only_while_a_job_runs(name, progress, busy, pct):
    msg = json.loads(entity().entity(name, progress))
    assert (msg["in_progress"], msg["update_percentage"]) == (busy, pct)


def test_release_url_is_cut_at_512_and_only_http_or_https():
    h = entity()
    url = "https://fw.example.com/" + "n" * 489  # 512 characters
    assert announce(h, release_url=url)["release_url"] == url
    assert announce(h, release_url=url + "XYZ")["release_url"] == url
    assert announce(h, release_url="http://fw.example.com/notes")["release_url"] == "http://fw.example.com/notes"
    for bad in ("ftp://fw.example.com/notes", "fw.example.com/notes", "", 42, None):
        assert "release_url" not in announce(h, release_url=bad), bad


def test_summary_is_cut_at_255_and_only_a_string():
    h = entity()
    assert announce(h, summary="s" * 255)["release_summary"] == "s" * 255
    assert announce(h, summary="s" * 300)["release_summary"] == "s" * 255
    assert "release_summary" not in announce(h, summary=["not", "text"])
    assert announce(h, summary="")["release_summary"] == ""


def test_a_new_announcement_replaces_everything_the_last_one_said():
    h = entity()
    announce(h, release_url="https://x/notes", summary="first")
    h.take("/switch/release", b"{bad")
    assert (h.release, h.release_url, h.summary, h.problem) == (None, None, None, "bad_json")
    msg = announce(h)  # a good one without the optional fields: the problem is gone too
    assert h.problem is None and "release_url" not in msg and "release_summary" not in msg
    assert msg["latest_version"] == "1.1.0"
    msg = announce(h, target="ffffffffffff", summary="for others")  # not ours: nothing offered
    assert h.release is None and msg["latest_version"] == "1.0.0" and "release_summary" not in msg


def test_an_announcement_without_a_version_offers_the_installed_one():
    h = entity()
    msg = announce(h, version=None)
    assert h.release is not None and msg["latest_version"] == "1.0.0"
    assert "latest_version" not in json.loads(entity(None).entity("idle"))  # nothing known: left out


def test_install_takes_a_copy_of_the_announcement():
    h = entity()
    announce(h)
    job = h.take(bytearray(CMD.encode()), ha.INSTALL)
    assert job["id"] == "r1" and job["url"] == RELEASE["url"]
    job["verified"] = True  # the runner annotates its copy
    assert "verified" not in h.release and h.take(CMD, ha.INSTALL) is not job


def test_install_without_an_announcement_says_no_release():
    with pytest.raises(OtaError) as e:
        entity().take(CMD, ha.INSTALL)
    assert (e.value.reason, e.value.detail) == ("no_release", "no release announced for this device")


def test_mine_takes_topics_as_bytes_bytearray_or_text():
    h = entity()
    for topic in ("/switch/release", b"/switch/release", bytearray(b"/switch/release")):
        assert h.mine(topic, b"anything")
    assert h.mine(bytearray(CMD.encode()), ha.INSTALL) and h.mine(CMD, ha.INSTALL)
    assert not h.mine(CMD, b'{"type": "ota_install"}')  # HA's payload exactly, as discovery says
    assert not h.mine("/switch/other", ha.INSTALL)


def test_an_announcement_by_bytearray_topic_is_kept():
    h = entity()
    assert h.take(bytearray(b"/switch/release"), json.dumps(RELEASE).encode()) is None
    assert h.release["id"] == "r1"


def test_a_revert_is_not_an_announcement():
    h = entity()
    h.take("/switch/release", b'{"type": "ota_revert", "id": "x"}')
    assert h.release is None and h.problem == "bad_announcement"
    h.take("/switch/release", b'{"type": "switch_set"}')  # not a trigger at all
    assert h.release is None and h.problem == "bad_announcement"
