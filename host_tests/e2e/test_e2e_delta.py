# Delta updates end to end (issue 14, docs/COMPRESSED.md): the simulated ESP32-C3 runs a real-sized
# 1.0.0 and applies patches served by real nginx (and the fault-injecting dev server) over verified
# TLS, reading its base from the running slot. 1.0.0 -> 1.0.1 changes only frozen lib/ code; 1.1.0
# changes the firmware bytes too. Each ends with the flash contents of the full image; a drop resumes;
# a patch for another base falls back (to the compressed image) or is refused before any write; a
# corrupt patch fails with a reason code and the boot slot stays.
import hashlib
import json
import os
import random

import pytest

from devkit import simfleet
from devkit.devserver import DevServer
from devkit.nginx import Nginx, find_nginx
from devkit.tls import make_pki
from otactl import zimage
from devkit import firmware_bytes
from paths import DRIVERS as HERE
from paths import ROOT as REPO
from sim.runner import Device

pytestmark = pytest.mark.skipif(find_nginx() is None, reason="needs nginx")

FULL = 1_713_728
SECTOR = 4096
OTA = {"retry_backoff_ms": 10, "retries": 8}


def sha(blob):
    return hashlib.sha256(blob).hexdigest()


def recompiled(code, seed=5):
    # A release that changes more than frozen code: firmware bytes recompiled, i.e. a block inserted
    # early (everything after it moves) and one word in 50 changed (call targets, constants).
    rng = random.Random(seed)
    out = bytearray(code[:20_000] + rng.randbytes(6_000) + code[20_000:])
    for i in range(0, len(out) - 4, 200):
        out[i:i + 4] = rng.randbytes(4)
    return bytes(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-delta")
    pki = make_pki(str(root / "pki"))
    www = root / "www"
    www.mkdir()
    code = firmware_bytes.code_bytes()
    v100 = simfleet.firmware("1.0.0", size=FULL, fill=code)
    v101 = simfleet.firmware("1.0.1", size=FULL, fill=code,
                             append={"ota/selftest.py": b"\n# 1.0.1: a frozen module changed\nRELEASE = 101\n"})
    v110 = simfleet.firmware("1.1.0", size=FULL, fill=recompiled(code))
    v090 = simfleet.firmware("0.9.0", size=FULL, fill=code[::-1])
    patch = zimage.pack_patch(v100, v101)
    bad = bytearray(patch)
    for i in range(len(bad) - 200, len(bad) - 100):
        bad[i] ^= 0x33
    files = {
        "v101.bin": v101, "v101.otaz": zimage.pack_image(v101),
        "v100-v101.otaz": patch, "v100-v110.otaz": zimage.pack_patch(v100, v110),
        "v090-v101.otaz": zimage.pack_patch(v090, v101), "corrupt.otaz": bytes(bad),
    }
    for name, blob in files.items():
        (www / name).write_bytes(blob)
    drops = DevServer(str(www), pki.server_cert, pki.server_key).start()
    drops.rng = random.Random(3)
    drops.faults.drop_after = "random"
    web = Nginx(str(www), pki.server_cert, pki.server_key, target="v101.bin").start()
    try:
        yield {"root": root, "pki": pki, "files": files, "web": web, "drops": drops,
               "images": {"v100": v100, "v101": v101, "v110": v110}}
    finally:
        web.stop()
        drops.stop()


def _device(world, name, jobs):
    fs = {}
    for target, source in (("main.py", os.path.join(HERE, "e2e_driver.py")),
                           ("boot.py", os.path.join(REPO, "boot.py")), ("ca.der", world["pki"].ca_der)):
        with open(source, "rb") as f:
            fs[target] = f.read()
    for job in jobs:
        job["ota"] = dict(OTA, **job.get("ota", {}))
    fs["jobs.json"] = json.dumps(jobs)
    device = Device(str(world["root"] / name), heapsize=simfleet.FLEET_HEAP)
    device.create(world["images"]["v100"], fs_files=fs)
    return device


def _delta(world, name, image, **fields):
    patch = world["files"][name]
    return {"sha256": sha(image), "size": FULL,
            "artifact": {k: v for k, v in dict({"encoding": "delta", "file_sha256": sha(patch),
                                                 "file_size": len(patch),
                                                 "base_sha256": sha(world["images"]["v100"])}, **fields).items()
                         if v is not None}}


def _success_jobs(world):
    web, files, images = world["web"], world["files"], world["images"]
    v101, v110 = images["v101"], images["v110"]
    other_base = zimage.parse_header(files["v090-v101.otaz"])["base_sha256"]
    return {
        "lib_only": (dict(_delta(world, "v100-v101.otaz", v101), url=web.url("v100-v101.otaz")), v101),
        # Without file_sha256 DeflateIO reads the socket itself (inflate.Loader._raw)
        "changes_more": (dict(_delta(world, "v100-v110.otaz", v110, file_sha256=None),
                              url=web.url("v100-v110.otaz")), v110),
        "drop": (dict(_delta(world, "v100-v110.otaz", v110, file_sha256=None),
                      url=world["drops"].url("v100-v110.otaz")), v110),
        "wrong_base_falls_back": (dict(_delta(world, "v090-v101.otaz", v101, base_sha256=other_base,
                                              fallback=web.url("v101.otaz"), fallback_encoding="deflate"),
                                       url=web.url("v090-v101.otaz")), v101),
        "wrong_base_plain_fallback": (dict(_delta(world, "v090-v101.otaz", v101, base_sha256=other_base,
                                                  fallback=web.url("v101.bin")),
                                           url=web.url("v090-v101.otaz")), v101),
    }


def _negative_jobs(world):
    web, files, v101 = world["web"], world["files"], world["images"]["v101"]
    other_base = zimage.parse_header(files["v090-v101.otaz"])["base_sha256"]
    return [
        (dict(_delta(world, "v090-v101.otaz", v101, base_sha256=other_base), name="wrong_base",
              url=web.url("v090-v101.otaz")), "wrong_base", 0),
        (dict(_delta(world, "corrupt.otaz", v101), name="corrupt_patch", url=web.url("corrupt.otaz")),
         "bad_patch", None),
        (dict(_delta(world, "v100-v101.otaz", v101, base_sha256=other_base), name="trigger_base_differs",
              url=web.url("v100-v101.otaz")), "bad_container", 0),
    ]


def _jobs_of(device):
    out = {}
    for line in device.lines():
        if line.startswith("JOB "):
            job = json.loads(line[4:])
            out[job["name"]] = job
    return out


@pytest.fixture(scope="module")
def runs(world):
    negative = _negative_jobs(world)
    devices = {"batch": _device(world, "batch", [dict(job) for job, _, _ in negative])}
    success = _success_jobs(world)
    for name, (job, _) in success.items():
        devices[name] = _device(world, name, [dict(job, name=name)])
    for device in devices.values():
        device.start(max_boots=3)
    results = {name: device.wait(timeout=900) for name, device in devices.items()}  # slow under load
    return {"devices": devices, "results": results, "negative": negative, "success": success}


@pytest.mark.parametrize("name", ["lib_only", "changes_more", "drop", "wrong_base_falls_back",
                                  "wrong_base_plain_fallback"])
def test_delta_update_lands_the_full_image(runs, name):
    device = runs["devices"][name]
    _, image = runs["success"][name]
    assert runs["results"][name] == "exit", device.console()
    got = _jobs_of(device)[name]
    assert got.get("result") == "ok", got
    assert got["bytes"] == FULL and got["sha256"] == sha(image) and got["boot_label"] == "ota_1"
    version = got["version"]
    assert [(b["slot"], b["version"]) for b in device.boots()] == [("ota_0", "1.0.0"), ("ota_1", version)]
    ota_1 = device.partition("ota_1")
    assert device.read_flash(ota_1.offset, FULL) == image
    counters = device.boot_counters(0)
    assert counters["erases_by_partition"]["ota_1"] == (FULL + SECTOR - 1) // SECTOR
    assert counters["erases_by_partition"].get("ota_0", 0) == 0  # the base is only read
    assert "Traceback" not in device.console()


def test_frozen_code_delta_is_tiny(world):
    assert len(world["files"]["v100-v101.otaz"]) <= 0.05 * FULL


def test_the_drop_resumed_at_a_piece_boundary(runs, world):
    requests = world["drops"].requests
    assert len(requests) == 2, requests
    index = [offset for offset, _ in zimage.parse_header(world["files"]["v100-v110.otaz"])["index"]]
    assert int(requests[1]["headers"]["range"][6:-1]) in index


@pytest.mark.parametrize("case", range(3))
def test_bad_delta_is_refused_and_the_old_slot_stays(runs, case):
    job, reason, erases = runs["negative"][case]
    device = runs["devices"]["batch"]
    got = _jobs_of(device).get(job["name"])
    assert got is not None, device.console()
    assert got.get("reason") == reason, got
    assert got["boot_label"] == "ota_0" and got["other_blank"] is True, got
    if erases is not None:
        assert got["erases"] == erases, got


def test_batch_device_boots_its_old_firmware(runs):
    device = runs["devices"]["batch"]
    assert runs["results"]["batch"] == "exit", device.console()
    assert [(b["slot"], b["version"]) for b in device.boots()] == [("ota_0", "1.0.0"), ("ota_0", "1.0.0")]
    assert "Traceback" not in device.console()
