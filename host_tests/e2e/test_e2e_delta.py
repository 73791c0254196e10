# Delta updates end to end (issue 14, docs/COMPRESSED.md): the simulated ESP32-C3 runs a real-sized
# 1.0.0 and applies patches served by real nginx (and the fault-injecting dev server) over verified
# TLS, reading its base from the running slot. 1.0.0 -> 1.0.1 changes only frozen lib/ code; 1.1.0
# changes the firmware bytes too. Each ends with the flash contents of the full image; a drop resumes;
# a patch for another base falls back (to the compressed image) or is refused before any write; a
# corrupt patch fails with a reason code and the boot slot stays.
import random

import pytest

from devkit import simfleet
from devkit.nginx import find_nginx
from otactl import zimage
from e2e_helpers import (assert_landed, assert_old_firmware_boots, assert_refused, dev_servers, piece_starts, run_jobs,
                         serving, sha)

pytestmark = pytest.mark.skipif(find_nginx() is None, reason="needs nginx")

FULL = 1_713_728
OTA = {"retry_backoff_ms": 10, "retries": 8}


@pytest.fixture(scope="module")
def world(tls_site):
    code, v100, v101, v110 = simfleet.releases(FULL, b"\n# 1.0.1: a frozen module changed\nRELEASE = 101\n")
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
    root, pki, www = tls_site("e2e-delta", files)
    servers = dev_servers(www, pki, {"drops": {"drop_after": "random"}})
    drops = servers["drops"]
    drops.rng = random.Random(3)
    with serving(www, pki, servers, target="v101.bin") as web:
        yield {"root": root, "pki": pki, "files": files, "web": web, "drops": drops,
               "images": {"v100": v100, "v101": v101, "v110": v110}}


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


@pytest.fixture(scope="module")
def runs(world):
    negative = _negative_jobs(world)
    success = _success_jobs(world)
    devices, results = run_jobs(world, negative, {name: job for name, (job, _) in success.items()},
                                world["images"]["v100"], OTA, timeout=900)  # slow under load
    return {"devices": devices, "results": results, "negative": negative, "success": success}


@pytest.mark.parametrize("name", ["lib_only", "changes_more", "drop", "wrong_base_falls_back",
                                  "wrong_base_plain_fallback"])
def test_delta_update_lands_the_full_image(runs, name):
    _, image = runs["success"][name]
    device, _, counters = assert_landed(runs, name, image, FULL)
    assert counters["erases_by_partition"].get("ota_0", 0) == 0  # the base is only read
    assert "Traceback" not in device.console()


def test_frozen_code_delta_is_tiny(world):
    assert len(world["files"]["v100-v101.otaz"]) <= 0.05 * FULL


def test_the_drop_resumed_at_a_piece_boundary(runs, world):
    requests = world["drops"].requests
    assert len(requests) == 2, requests
    index = piece_starts(world["files"]["v100-v110.otaz"])
    assert int(requests[1]["headers"]["range"][6:-1]) in index


def test_batch_device_boots_its_old_firmware(runs):
    assert_old_firmware_boots(runs)


@pytest.mark.parametrize("case", range(3))
def test_bad_delta_is_refused_and_the_old_slot_stays(runs, case):
    job, reason, erases = runs["negative"][case]
    assert_refused(runs["devices"]["batch"], job["name"], reason, erases)
