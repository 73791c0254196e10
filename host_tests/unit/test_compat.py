"""Which images a device takes (lib/ota/compat.py), and the host's verdict is the device's.

For every image of the set (stock MicroPython C3 and Arduino-ESP32 C3 replicas, merged image,
bootloader, another chip, our releases, the descriptor-version cases) and every device/trigger context,
`otactl image inspect`'s verdict (firmware_image.inspect_image) equals what the device's update.run
does with the same bytes served by a fake server, on CPython with the same lib/ota code. The same
comparison on the real MicroPython binary is in test_e2e_compat.py. A refusal comes before the first
erase.
"""
import os
import subprocess
import sys

import pytest

import fakes
import replica_images
from otactl import firmware_image as fi
from devkit import images
from ota import compat, update
from ota.errors import OtaError

SLOT = 0x1D0000  # partitions.csv; the fake flash is slow to fill, so small images get a small slot
SMALL_SLOT = 0x40000


def slot_for(blob):
    return SMALL_SLOT if len(blob) <= SMALL_SLOT else SLOT
URL = "https://fw.example/fw.bin"
OTACTL = os.path.join(os.path.dirname(sys.executable), "otactl")
ARDUINO_VERSION = "esp-idf: v4.4.7 38eeba213a"


def image_set():
    ours = images.build_image("1.0.1", size=65536)
    return {
        "stock_micropython_c3": replica_images.stock_micropython_c3(),
        "arduino_c3": replica_images.arduino_c3(),
        "merged": images.merged_image(ours),
        "bootloader": images.bootloader_image(),
        "esp32s3": images.with_chip_id(ours, "esp32s3"),
        "ours_1.0.1": ours,
        "ours_1.0.0": images.build_image("1.0.0", size=65536),
        "ours_0.9.0": images.build_image("0.9.0", size=65536),
        "ours_1.1.0-rc1": images.build_image("1.1.0-rc1", size=65536),
        "ours_no_version": images.build_image("", size=65536),
        "ours_arduino_version": images.build_image(ARDUINO_VERSION, size=65536),
        "other_project": images.build_image("1.0.1", size=65536, project_name="thermostat"),
    }


# (name, device running (project, version), trigger (version, project), allow_downgrade)
CONTEXTS = [
    ("plain", "1.0.0", None, None, False),
    ("trigger_version", "1.0.0", "1.0.1", None, False),
    ("arduino_trigger_version", "1.0.0", ARDUINO_VERSION, None, False),
    ("project_any", "1.0.0", None, "*", False),
    ("project_thermostat", "1.0.0", None, "thermostat", False),
    ("downgrade_allowed", "1.0.0", None, None, True),
    ("running_unknown", "", None, None, False),
]

IMAGES = image_set()


def device_verdict(blob, running, version, project, allow_downgrade):
    # update.run on a fake device running our firmware (project_name firmware_image.PRODUCT).
    esp = fakes.make_device(slot_for(blob))
    cfg = {"retry_backoff_ms": 0, "allow_downgrade": allow_downgrade}
    try:
        update.run(URL, version=version, config=cfg, https=fakes.FakeServer(blob), esp32=esp,
                   running=running, running_project=fi.PRODUCT, project=project)
    except OtaError as e:
        return e.reason, esp.slots["ota_1"].total_erases
    return None, esp.slots["ota_1"].total_erases


def inspector_verdict(blob, running, version, project, allow_downgrade):
    device = fi.device_context(fi.PRODUCT, running, version, project, allow_downgrade)
    verdict = fi.inspect_image(blob, slot_size=slot_for(blob), device=device).verdict
    return verdict[0] if verdict else None


@pytest.mark.parametrize("context", CONTEXTS, ids=[c[0] for c in CONTEXTS])
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_inspector_verdict_is_the_devices(name, context):
    _, running, version, project, allow_downgrade = context
    blob = IMAGES[name]
    device, erases = device_verdict(blob, running, version, project, allow_downgrade)
    assert inspector_verdict(blob, running, version, project, allow_downgrade) == device
    if device in ("wrong_product", "bad_version", "version_mismatch", "downgrade", "not_app_image",
                  "wrong_chip"):
        assert erases == 0  # decided on the first chunk, before anything was written


def test_the_verdicts_the_issue_names():
    plain = ("1.0.0", None, None, False)
    # Stock MicroPython and the Arduino app: refused for what they are, by device and inspector.
    for name in ("stock_micropython_c3", "arduino_c3"):
        assert device_verdict(IMAGES[name], *plain)[0] == "wrong_product"
        assert inspector_verdict(IMAGES[name], *plain) == "wrong_product"
    # The Arduino version string can never be ordered: bad_version, or version_mismatch against any
    # version a trigger names, even once the product check is waived.
    assert device_verdict(IMAGES["ours_arduino_version"], *plain)[0] == "bad_version"
    assert device_verdict(IMAGES["arduino_c3"], "1.0.0", "1.0.1", "*", False)[0] == "version_mismatch"
    assert inspector_verdict(IMAGES["arduino_c3"], "1.0.0", "1.0.1", "*", False) == "version_mismatch"
    # Waived explicitly: the stock image is accepted with the trigger's version.
    assert device_verdict(IMAGES["stock_micropython_c3"], "1.0.0", "1.0.1", "*", False)[0] is None
    assert device_verdict(IMAGES["ours_1.0.1"], *plain)[0] is None


def test_compat_rules():
    info = {"project_name": "micropython", "version": "1.2.0"}
    assert compat.check(info, "micropython", "1.1.0") == ("1.2.0", False)
    assert compat.check(info, "micropython", "1.2") == ("1.2.0", True)
    for running_project, project in (("thermostat", None), ("micropython", "thermostat"), (None, None),
                                     ("", None)):
        with pytest.raises(OtaError) as e:
            compat.check(info, running_project, "1.1.0", project=project)
        assert e.value.reason == "wrong_product"
    assert compat.check(info, None, "1.1.0", project="micropython")[0] == "1.2.0"
    assert compat.check(dict(info, project_name=""), "", "1.1.0")[0] == "1.2.0"  # deploy on stock
    with pytest.raises(OtaError) as e:
        compat.check({"project_name": "micropython", "version": "nightly"}, "micropython", "")
    assert e.value.reason == "bad_version"  # not even an unknown running version lets it pass


def _cli(*args):
    return subprocess.run([OTACTL] + list(args), capture_output=True, text=True, timeout=60)


def test_cli_inspect_and_release_refuse_the_stock_image(tmp_path):
    stock = tmp_path / "micropython.bin"
    stock.write_bytes(IMAGES["stock_micropython_c3"])
    proc = _cli("image", "inspect", str(stock))
    assert proc.returncode == 1
    assert proc.stderr.startswith("otactl: wrong_product: "), proc.stderr
    assert "FAIL  product" in proc.stdout and "would accept" not in proc.stdout
    proc = _cli("release", str(stock), "--dir", str(tmp_path / "rel"), "--base-url", "https://h/")
    assert proc.returncode == 1 and proc.stderr.startswith("otactl: wrong_product: "), proc.stderr
    assert not (tmp_path / "rel").exists()
    arduino = tmp_path / "arduino.bin"
    arduino.write_bytes(IMAGES["arduino_c3"])
    proc = _cli("image", "inspect", str(arduino), "--project", "*", "--version", "1.0.1")
    assert proc.returncode == 1 and proc.stderr.startswith("otactl: version_mismatch: "), proc.stderr
    ours = tmp_path / "ours.bin"
    ours.write_bytes(IMAGES["ours_1.0.1"])
    proc = _cli("image", "inspect", str(ours), "--running", "1.0.0")
    assert proc.returncode == 0 and "the device would accept this image" in proc.stdout, proc.stderr


def test_update_reads_the_running_identity_from_the_slot():
    # The agent passes what it read at start-up; without it update.run reads the running slot, and
    # the trigger's version still means the trigger's.
    esp = fakes.make_device(SMALL_SLOT)
    running = images.build_image("1.0.0", size=65536)
    esp.slots["ota_0"].data[:len(running)] = running
    cfg = {"retry_backoff_ms": 0}
    result = update.run(URL, version="1.0.1", config=cfg, https=fakes.FakeServer(IMAGES["ours_1.0.1"]),
                        esp32=esp)
    assert result["result"] == "ok" and result["version"] == "1.0.1"
    with pytest.raises(OtaError) as e:
        update.run(URL, config=cfg, https=fakes.FakeServer(IMAGES["other_project"]), esp32=esp)
    assert e.value.reason == "wrong_product" and "this device runs 'micropython'" in e.value.detail


def test_otactl_trigger_carries_the_project_override_signed():
    import json

    from otactl import signing
    from ota.errors import OtaError as HostError
    from otactl.messages import trigger_message

    key = signing.generate_key()
    message, payload = trigger_message("https://h/f.bin", version="1.0.1", project="*", sign_key=key)
    assert json.loads(payload)["project"] == "*"
    assert signing.verify_trigger(message, signing.public_key_hex(key))
    assert not signing.verify_trigger(dict(message, project="thermostat"), signing.public_key_hex(key))
    with pytest.raises(HostError) as e:
        trigger_message("https://h/f.bin", project="x" * 40)
    assert e.value.reason == "bad_project"
