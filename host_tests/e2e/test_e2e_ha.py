# Home Assistant's update entity and the per-update telemetry on the simulator, with real mosquitto and
# nginx (rate-limited so progress has time to move) and the operator's real CLI (`otactl announce`,
# `otactl report`, subprocesses). What Home Assistant would see is read from the broker: the retained
# discovery config, the entity state on /switch/ha/<id>, availability and attributes from the state
# topic. Install is what HA publishes: payload_install on the command_topic of the discovery config.
#
#   plain device:  idle (latest = installed) -> announcement (latest 1.0.1, notes url) -> Install ->
#                  in_progress with a percentage that moves -> ok on 1.0.1 (entity and discovery say
#                  1.0.1) with its telemetry
#   a fresh device, a broken announcement (sha256 of another file) -> Install -> failed bad_sha256,
#                  with what the failed try cost
#   signing device (ota.require_signature): the unsigned announcement -> Install -> failed unsigned,
#                  nothing downloaded; the signed one (otactl announce --sign-key) -> ok on 1.0.1
#   a release whose self-test fails -> Install -> rolled_back (selftest_failed) with its record
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from devkit import simfleet
from devkit.broker import Broker, Watcher, find_backend
from devkit.nginx import Nginx
from devkit.tls import make_pki
from ota import ha as device_ha

pytestmark = pytest.mark.skipif(find_backend() is None, reason="needs mosquitto (or amqtt)")

OTACTL = os.path.join(os.path.dirname(sys.executable), "otactl")
PLAIN, SIGNING = "4a4a4a4a0001", "4a4a4a4a0002"
SIZE = 655360
RATE = 262144  # bytes/s per connection: a 640 KiB download takes about 2.5 s


def otactl(env, *args):
    proc = subprocess.run([OTACTL] + list(args), capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("ha")
    pki = make_pki(str(root / "pki"))
    www = root / "www"
    www.mkdir()
    image = simfleet.firmware("1.0.1", size=SIZE)
    (www / "firmware-v1.0.1.bin").write_bytes(image)
    (www / "other.bin").write_bytes(b"\x00" * 16)
    manifest = {"version": "1.0.1", "url": None, "sha256": hashlib.sha256(image).hexdigest(), "size": SIZE}
    with Broker(str(root / "broker")) as broker, Nginx(str(www), pki.server_cert, pki.server_key,
                                                       limit_rate=RATE) as web:
        manifest["url"] = web.url("firmware-v1.0.1.bin")
        (root / "release.json").write_text(json.dumps(manifest))
        bad = dict(manifest, sha256=hashlib.sha256(b"another file").hexdigest())
        (root / "bad.json").write_text(json.dumps(bad))
        env = dict(os.environ, OTACTL_BROKER=broker.host, OTACTL_PORT=str(broker.port))
        out = otactl(env, "keys", "generate", "--out", str(root / "keys"))
        pubkey = re.search(r'"signing_pubkey": "([0-9a-f]{64})"', out).group(1)
        yield {"root": root, "pki": pki, "broker": broker, "web": web, "env": env, "image": image,
               "pubkey": pubkey, "key": str(root / "keys" / "trigger_signing_key.pem")}


def make_device(lab, device_id, ota=None, rssi=None):
    return simfleet.new_device(str(lab["root"] / device_id), simfleet.firmware("1.0.0"), lab["broker"].host,
                               lab["broker"].port, ca_der=lab["pki"].ca_der, unique_id=device_id,
                               ota=dict({"progress_interval_s": 1, "progress_bytes": 32768}, **(ota or {})),
                               ha={"discovery": True}, **({"rssi": rssi} if rssi is not None else {}))


def downloads(lab):
    # Requests nginx has logged for the release file.
    try:
        with open(os.path.join(lab["web"].tmp, "access.log")) as f:
            return sum(1 for line in f if "firmware-v1.0.1.bin" in line)
    except OSError:
        return 0


def topics_of(device_id):
    return ("homeassistant/update/%s/firmware/config" % device_id, "/switch/ha/" + device_id,
            "/switch/state/" + device_id)


def on(topic):
    return lambda msg: msg.topic == topic


def install(watch, device_id):
    # What HA's update.install does: payload_install on the discovery config's command_topic.
    disc = [m for m in watch.messages if m.topic == topics_of(device_id)[0]][-1].json
    watch.publish(disc["command_topic"], disc["payload_install"], qos=0)


def offer_and_install(lab, watch, device_id, manifest, job):
    # `otactl announce` of lab/manifest as job; once HA's entity offers 1.0.1, Install. -> where the
    # messages after Install start
    entity_topic = topics_of(device_id)[1]
    otactl(lab["env"], "announce", "--manifest", str(lab["root"] / manifest), "--job", job)
    watch.wait_for(lambda m: m.topic == entity_topic and m.json["latest_version"] == "1.0.1", 10)
    mark = len(watch.messages)
    install(watch, device_id)
    return mark


def test_entity_install_progress_and_telemetry(lab):
    config_topic, entity_topic, state_topic = topics_of(PLAIN)
    device = make_device(lab, PLAIN, rssi=[-52, -60, -67, -58])
    watch = Watcher(lab["broker"].host, lab["broker"].port, topics=topics_of(PLAIN) + ("/switch/release",))
    device.start()
    try:
        idle = watch.wait_for(lambda m: m.topic == entity_topic, 30)
        disc = watch.wait_for(on(config_topic), 5)
        assert (idle.json["installed_version"], idle.json["latest_version"], idle.json["in_progress"]) == \
            ("1.0.0", "1.0.0", False)
        assert disc.json["device"]["sw_version"] == "1.0.0" and disc.json["device_class"] == "firmware"
        assert disc.json["payload_install"].encode() == device_ha.INSTALL

        mark = len(watch.messages)
        otactl(lab["env"], "announce", "--manifest", str(lab["root"] / "release.json"),
               "--notes-url", "https://example.com/notes/1.0.1", "--summary", "Relay debounce fixed")
        offered = watch.wait_for(lambda m: m.topic == entity_topic and m.json["latest_version"] == "1.0.1", 10, mark)
        assert offered.json["release_url"] == "https://example.com/notes/1.0.1"
        assert offered.json["release_summary"] == "Relay debounce fixed" and offered.json["in_progress"] is False

        mark = len(watch.messages)
        install(watch, PLAIN)
        ok = watch.wait_for(lambda m: m.topic == state_topic and m.state in ("ok", "failed", "rolled_back"),
                            120, mark)
        assert (ok.state, ok.get("version")) == ("ok", "1.0.1"), (ok, device.console()[-3000:])
        done = watch.wait_for(lambda m: m.topic == entity_topic and m.json["installed_version"] == "1.0.1"
                              and not m.json["in_progress"], 30, mark)
        assert done.json["latest_version"] == "1.0.1" and done.json["update_percentage"] is None
        watch.wait_for(lambda m: m.topic == config_topic and m.json["device"]["sw_version"] == "1.0.1", 30, mark)
        entity = [m.json for m in watch.messages[mark:] if m.topic == entity_topic]
        bar = [m["update_percentage"] for m in entity if m["in_progress"]]
        assert bar[0] == 0 and bar[-1] == 100 and any(0 < p < 100 for p in bar), bar
        assert bar == sorted(bar), bar  # the bar only moves forward

        t = ok.get("t")
        assert t["to"] == "1.0.1" and t["art"] == "full" and t["fetched"] == SIZE
        assert (t["resumes"], t["restarts"]) == (0, 0)
        assert t["dl_ms"] >= 1000 * SIZE // RATE // 2, t  # nginx paces it: about 2.5 s
        assert 0 < t["conn_ms"] < t["dl_ms"] and 0 < t["write_ms"] < t["dl_ms"] and t["verify_ms"] > 0
        assert t["boot_ms"] > 0 and t["reboot_s"] is not None and t["reset"] == "HARD_RESET"
        assert t["rssi0"] == -52 and t["rssi_min"] == -67, t
        assert 0 < t["heap_min"] and 0 < t["idf_min"], t
        assert len(ok.payload) <= 1024, len(ok.payload)

    finally:
        device.stop()
        watch.close()
    assert "Traceback" not in device.console(), device.console()[-3000:]


def test_failed_install_is_reported_with_reason_and_cost(lab):
    # A fresh device on 1.0.0, the broken announcement: Install downloads it all, then bad_sha256.
    device_id = "4a4a4a4a0003"
    config_topic, entity_topic, state_topic = topics_of(device_id)
    device = make_device(lab, device_id)
    watch = Watcher(lab["broker"].host, lab["broker"].port, topics=topics_of(device_id))
    device.start()
    try:
        watch.wait_for(on(config_topic), 30)
        mark = offer_and_install(lab, watch, device_id, "bad.json", "bad-2")
        failed = watch.wait_for(lambda m: m.topic == state_topic and m.state in ("ok", "failed"), 60, mark)
        assert (failed.state, failed.get("reason")) == ("failed", "bad_sha256"), failed
        t = failed.get("t")
        assert t["fetched"] == SIZE and t["dl_ms"] > 0 and t["boot_ms"] is None and t["reset"] is None, t
        after = watch.wait_for(lambda m: m.topic == entity_topic and not m.json["in_progress"], 10, mark)
        assert (after.json["installed_version"], after.json["latest_version"]) == ("1.0.0", "1.0.1")
    finally:
        device.stop()
        watch.close()


def test_install_under_require_signature(lab):
    config_topic, entity_topic, state_topic = topics_of(SIGNING)
    device = make_device(lab, SIGNING, ota={"require_signature": True, "signing_pubkey": lab["pubkey"]})
    watch = Watcher(lab["broker"].host, lab["broker"].port, topics=topics_of(SIGNING))
    device.start()
    try:
        watch.wait_for(on(config_topic), 30)
        requests_before = downloads(lab)
        mark = offer_and_install(lab, watch, SIGNING, "release.json", "unsigned-1")
        refused = watch.wait_for(lambda m: m.topic == state_topic and m.state in ("ok", "failed"), 30, mark)
        assert (refused.state, refused.get("reason")) == ("failed", "unsigned"), refused
        assert refused.get("t") is None  # refused before anything started: no cost to report
        assert downloads(lab) == requests_before  # nothing was downloaded

        mark = len(watch.messages)
        otactl(lab["env"], "announce", "--manifest", str(lab["root"] / "release.json"), "--job", "signed-1",
               "--sign-key", lab["key"], "--target", SIGNING)
        watch.wait_for(lambda m: m.topic == entity_topic and m.json["latest_version"] == "1.0.1", 10, mark)
        install(watch, SIGNING)
        ok = watch.wait_for(lambda m: m.topic == state_topic and m.state in ("ok", "failed", "rolled_back"),
                            120, mark)
        assert (ok.state, ok.get("version"), ok.get("job")) == ("ok", "1.0.1", "signed-1"), ok
    finally:
        device.stop()
        watch.close()
        otactl(lab["env"], "announce", "--withdraw")


def test_rolled_back_install_carries_its_cost(lab):
    # A release whose self-test fails: the health gate refuses it, the bootloader boots 1.0.0 again,
    # and the old firmware's rolled_back carries the record, with the reset cause of that boot.
    device_id = "4a4a4a4a0004"
    config_topic, entity_topic, state_topic = topics_of(device_id)
    broken = simfleet.firmware("1.0.2", size=SIZE // 2, failing_selftest=True)
    www = os.path.join(lab["root"], "www")
    with open(os.path.join(www, "broken.bin"), "wb") as f:
        f.write(broken)
    manifest = {"version": "1.0.2", "url": lab["web"].url("broken.bin"), "sha256": hashlib.sha256(broken).hexdigest(),
                "size": len(broken)}
    (lab["root"] / "broken.json").write_text(json.dumps(manifest))
    device = make_device(lab, device_id)
    watch = Watcher(lab["broker"].host, lab["broker"].port, topics=topics_of(device_id))
    device.start()
    try:
        watch.wait_for(on(config_topic), 30)
        otactl(lab["env"], "announce", "--manifest", str(lab["root"] / "broken.json"), "--job", "broken-1",
               "--target", device_id)
        watch.wait_for(lambda m: m.topic == entity_topic and m.json.get("latest_version") == "1.0.2", 10)
        mark = len(watch.messages)
        install(watch, device_id)
        back = watch.wait_for(lambda m: m.topic == state_topic and m.state in ("ok", "rolled_back"), 120, mark)
        assert (back.state, back.get("reason"), back.get("version")) == ("rolled_back", "selftest_failed", "1.0.0"), \
            (back, device.console()[-3000:])
        t = back.get("t")
        assert t["to"] == "1.0.2" and t["fetched"] == len(broken) and t["dl_ms"] > 0 and t["verify_ms"] >= 0, t
        assert t["reset"] == "HARD_RESET" and t["boot_ms"] is None, t  # health.roll_back resets the board
        # Back on 1.0.0 and 1.0.2 still offered (the retained announcement arrives after the reconnect).
        watch.wait_for(lambda m: m.topic == entity_topic and not m.json["in_progress"]
                       and m.json["installed_version"] == "1.0.0" and m.json["latest_version"] == "1.0.2", 30, mark)
    finally:
        device.stop()
        watch.close()
        otactl(lab["env"], "announce", "--withdraw")
