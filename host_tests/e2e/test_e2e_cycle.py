# The whole cycle of issue 4 on the simulator, checked from the broker's side and from the flash:
# the real micropython binary runs this checkout's main.py -> ota.agent; a trigger published as the
# seed guide shows (plus sha256) makes it stream a 1.7 MB image over verified TLS from real nginx,
# reboot into it, pass the health gate and confirm; a release whose self-test fails is rolled back, and
# an ota_revert to it is then refused; a release that cannot read the device's config.json is rolled
# back at its first boot with `bad_config`.
import contextlib
import hashlib
import os
import time

import pytest

from devkit import simfleet
from devkit.devserver import DevServer
from devkit.broker import Watcher, find_backend
from devkit.nginx import find_nginx

DEVICE_ID = "a0b1c2d3e4f5"
STATE_TOPIC = "/switch/state/" + DEVICE_ID
pytestmark = pytest.mark.skipif(find_backend() is None or find_nginx() is None,
                                reason="needs mosquitto (or amqtt) and nginx")


# A release whose config validator is stricter than 1.0.0's: it refuses a setting 1.0.0 accepts.
STRICTER_VALIDATOR = b'''
_validate_1_0_0 = validate


def validate(cfg, complete=False):
    if cfg["ota"].get("health_timeout_s") == 7:
        _bad("ota.health_timeout_s", "7 is no longer allowed")
    return _validate_1_0_0(cfg, complete)
'''


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    images = {
        "1.0.0": simfleet.firmware("1.0.0"),
        "1.0.1": simfleet.firmware("1.0.1", size=1713728),
        "1.0.2-bad": simfleet.firmware("1.0.2", failing_selftest=True),
        "1.0.3-strict": simfleet.firmware("1.0.3", append={"ota/config.py": STRICTER_VALIDATOR}),
    }
    with simfleet.lab(tmp_path_factory.mktemp("cycle"), images) as world:
        yield world


def _device(world, name, **options):
    broker = world["broker"]
    return simfleet.new_device(os.path.join(world["root"], name), world["images"]["1.0.0"], broker.host,
                               broker.port, ca_der=world["pki"].ca_der, **options)


@contextlib.contextmanager
def _running(world, name, **options):
    # (device, watch): a simulated device booted on 1.0.0 and idle on the broker; stopped on the way out.
    # watch.messages, the flash and the console stay readable afterwards.
    broker = world["broker"]
    watch = Watcher(broker.host, broker.port)
    device = _device(world, name, **options)
    device.start()
    try:
        watch.wait_for(lambda m: m.topic == STATE_TOPIC and m.state == "idle", timeout=30)
        yield device, watch
    finally:
        device.stop()
        watch.close()


def _trigger(world, name, **extra):
    blob = world["images"][name]
    message = {"type": "ota_trigger", "url": world["web"].url("firmware-%s.bin" % name),
               "sha256": hashlib.sha256(blob).hexdigest()}
    message.update(extra)
    return message


def test_full_cycle_update_confirm(world):
    with _running(world, "dev-ok") as (device, watch):
        watch.publish("/switch/cmd/root", _trigger(world, "1.0.1", id="job-1"))
        # a deadline that only turns a hang into a failure: a slow machine is not a failure
        ok = watch.wait_for(lambda m: m.state == "ok" and m.get("version") == "1.0.1", timeout=180)
    states = [m.state for m in watch.messages if m.topic == STATE_TOPIC]
    # Every step is reported, in order.
    order = ["downloading", "verifying", "rebooting", "ok"]
    positions = [states.index(s) for s in order]
    assert positions == sorted(positions), states
    assert ok.get("job") == "job-1" and ok.get("slot") == "ota_1"
    verifying = [m for m in watch.messages if m.state == "verifying"]
    assert verifying[0].get("progress") == 100 and verifying[0].get("bytes") == 1713728
    # The flash agrees: ota_1 is the active, confirmed slot.
    otadata = device.read_otadata()
    assert otadata["slot"] == "ota_1"
    assert otadata["entries"][otadata["active"]]["state_name"] == "VALID"
    boots = device.boots()
    assert [b["version"] for b in boots] == ["1.0.0", "1.0.1"]
    assert device.read_flash(device.partition("ota_1").offset, 1713728) == world["images"]["1.0.1"]
    assert "Traceback" not in device.console()


def test_failing_selftest_rolls_back(world):
    with _running(world, "dev-bad", ota={"health_timeout_s": 5}) as (device, watch):
        watch.publish("/switch/cmd/" + DEVICE_ID, _trigger(world, "1.0.2-bad", id="job-bad"))
        back = watch.wait_for(lambda m: m.state == "rolled_back", timeout=60)
        aborted_otadata = device.read_otadata()
        # The bad release still sits in ota_1, its otadata entry ABORTED: an ota_revert to it would
        # only roll back again. Refused (ota.otadata on MicroPython), and the device stays on 1.0.0.
        watch.publish("/switch/cmd/" + DEVICE_ID, {"type": "ota_revert", "id": "job-revert-bad"})
        refused = watch.wait_for(lambda m: m.get("job") == "job-revert-bad" and m.state == "failed", timeout=30)
        time.sleep(1)  # a reset would show up as a new boot below
    assert back.get("version") == "1.0.0" and back.get("job") == "job-bad"
    assert back.get("slot") == "ota_0"
    assert back.get("reason"), back
    assert refused.get("reason") == "revert_aborted_image", refused
    assert "ota_1" in refused.get("detail") and "ABORTED" in refused.get("detail"), refused
    assert (refused.get("version"), refused.get("slot")) == ("1.0.0", "ota_0"), refused
    boots = device.boots()
    assert [b["version"] for b in boots] == ["1.0.0", "1.0.2", "1.0.0"]
    otadata = device.read_otadata()
    assert otadata == aborted_otadata  # the refusal touched nothing
    assert otadata["slot"] == "ota_0"
    states = {e["state_name"] for e in otadata["entries"] if e["valid"] or e["state_name"] == "ABORTED"}
    assert "ABORTED" in states, otadata
    assert "Traceback" not in device.console()


def test_progress_is_reported_on_a_slow_link(world):
    # 1.7 MB at 400 KB/s: about 4 s, the operator sees the bar move (progress_interval_s 1).
    pki = world["pki"]
    with DevServer(world["www"], pki.server_cert, pki.server_key) as slow:
        slow.faults.trickle = 400 * 1024
        with _running(world, "dev-slow", ota={"progress_interval_s": 1}) as (device, watch):
            trigger = _trigger(world, "1.0.1", id="job-slow")
            trigger["url"] = slow.url("firmware-1.0.1.bin")
            watch.publish("/switch/cmd/root", trigger)
            watch.wait_for(lambda m: m.state == "ok" and m.get("version") == "1.0.1", timeout=60)
    progress = [m.get("progress") for m in watch.messages if m.state == "downloading"]
    middle = [p for p in progress if p is not None and 0 < p < 100]
    assert len(middle) >= 2 and middle == sorted(middle), progress


def test_release_that_cannot_read_the_config_rolls_back_at_its_first_boot(world):
    # Without the check at boot the new image ran on the defaults (no broker host), never reached
    # MQTT, and rolled back only after health_timeout_s as `health_timeout`, the cause unreported.
    with _running(world, "dev-strict", ota={"health_timeout_s": 7}) as (device, watch):
        watch.publish("/switch/cmd/" + DEVICE_ID, _trigger(world, "1.0.3-strict", id="job-strict"))
        back = watch.wait_for(lambda m: m.state == "rolled_back", timeout=60)
    assert (back.get("version"), back.get("slot"), back.get("job")) == ("1.0.0", "ota_0", "job-strict")
    assert back.get("reason") == "bad_config", back
    assert "config.json aside" in back.get("detail") and "ota.health_timeout_s" in back.get("detail"), back
    assert [b["version"] for b in device.boots()] == ["1.0.0", "1.0.3", "1.0.0"]
    otadata = device.read_otadata()
    assert otadata["slot"] == "ota_0"
    assert "ABORTED" in {e["state_name"] for e in otadata["entries"]}, otadata
    assert "7 is no longer allowed" in device.console() and "Traceback" not in device.console()
