# The compatibility guard on the real MicroPython binary: a simulated ESP32-C3 running our 1.0.0
# (project_name "micropython", as our firmware build sets it) downloads each image of a
# representative set over verified TLS from the dev server with ota.update.run (host_tests/
# e2e_driver.py), and for every one the device's reason code is the one `otactl image inspect` gives
# for the same bytes and the same device/trigger context. The stock MicroPython C3 replica is refused
# with wrong_product before the first erase, the boot slot never changes, and the one good image of
# the set installs after all the refusals.
import json
import os

import pytest

import replica_images
from devkit import simfleet
from devkit.devserver import DevServer
from otactl import firmware_image as fi
from devkit import images
from sim.runner import Device

from paths import DRIVERS, ROOT as REPO
SLOT = 0x1D0000
SIZE = 327680  # 320 KiB: the device package alone is about 260 KB of source


def _images():
    ours = simfleet.firmware("1.0.1", size=SIZE)
    return {
        "stock_micropython_c3": replica_images.stock_micropython_c3(),
        "arduino_c3": replica_images.arduino_c3(),
        "ours_arduino_version": images.build_image("esp-idf: v4.4.7 38eeba213a", size=SIZE),
        "esp32s3": images.with_chip_id(ours, "esp32s3"),
        "merged": images.merged_image(ours),
        "ours_0.9.0": images.build_image("0.9.0", size=SIZE),
        "other_project": images.build_image("1.0.1", size=SIZE, project_name="thermostat"),
        "ours_1.0.1": ours,
    }


# (job name, image, trigger version, trigger project); the last one must be accepted.
JOBS = [
    ("stock", "stock_micropython_c3", None, None),
    ("stock_with_version", "stock_micropython_c3", "1.0.1", None),
    ("arduino", "arduino_c3", None, None),
    ("arduino_any_project", "arduino_c3", "1.0.1", "*"),
    ("arduino_version_in_ours", "ours_arduino_version", None, None),
    ("foreign_chip", "esp32s3", None, None),
    ("merged", "merged", None, None),
    ("downgrade", "ours_0.9.0", None, None),
    ("mismatch", "ours_1.0.1", "1.0.2", None),
    ("other_project", "other_project", None, None),
    ("other_project_wrong_name", "other_project", None, "micropython-x"),
    ("ours", "ours_1.0.1", "1.0.1", None),
]


@pytest.fixture(scope="module")
def run(tls_site):
    images = _images()
    root, pki, www = tls_site("e2e-compat", {name + ".bin": blob for name, blob in images.items()})
    with DevServer(str(www), pki.server_cert, pki.server_key) as web:
        jobs = [{"name": name, "url": web.url(image + ".bin"), "version": version, "project": project,
                 "ota": {"retry_backoff_ms": 10}} for name, image, version, project in JOBS]
        files = {"jobs.json": json.dumps(jobs)}
        for name, path in (("boot.py", os.path.join(REPO, "boot.py")),
                           ("main.py", os.path.join(DRIVERS, "e2e_driver.py")), ("ca.der", pki.ca_der)):
            with open(path, "rb") as f:
                files[name] = f.read()
        device = Device(str(root / "device"), heapsize=simfleet.FLEET_HEAP)
        device.create(simfleet.firmware("1.0.0"), fs_files=files)
        device.start(max_boots=3)
        device.wait(timeout=180)
    out = {}
    for line in device.lines():
        if line.startswith("JOB "):
            job = json.loads(line[4:])
            out[job["name"]] = job
    return {"jobs": out, "images": images, "device": device}


@pytest.mark.parametrize("name,image,version,project", JOBS, ids=[j[0] for j in JOBS])
def test_device_on_micropython_agrees_with_the_inspector(run, name, image, version, project):
    got = run["jobs"].get(name)
    assert got is not None, run["device"].console()[-3000:]
    context = fi.device_context(fi.PRODUCT, "1.0.0", version, project)
    verdict = fi.inspect_image(run["images"][image], slot_size=SLOT, device=context).verdict
    assert got.get("reason") == (verdict[0] if verdict else None), (got.get("detail"), got, verdict)
    if verdict is not None:
        assert got["erases"] == 0 and got["boot_label"] == "ota_0" and got["other_blank"], got
    else:
        assert got["result"] == "ok" and got["boot_label"] == "ota_1", got


def test_stock_image_refused_before_any_write(run):
    for name in ("stock", "stock_with_version"):
        got = run["jobs"][name]
        assert got["reason"] == "wrong_product" and got["erases"] == 0, got
        assert "stock MicroPython" in got["detail"]
    assert run["jobs"]["arduino"]["reason"] == "wrong_product"
    assert run["jobs"]["arduino_any_project"]["reason"] == "version_mismatch"
    assert run["jobs"]["arduino_version_in_ours"]["reason"] == "bad_version"
