# The OTA data path end to end: the real `micropython` binary on the simulated ESP32-C3 runs
# ota.update.run (frozen into its 1.0.0 image) against real nginx and our fault-injecting dev server,
# over TLS verified against the test CA. fs/main.py is host_tests/drivers/e2e_driver.py, not the agent:
# it runs the jobs of jobs.json and prints one JSON line per job (reason, boot slot, is the other slot
# blank).
#
# All negative cases run in ONE device process (fast); afterwards the device resets and must boot its
# old 1.0.0 again. Every success case (set_boot) has its own device: update -> reset -> boots the new
# version; the flash instruments then say each sector of the image was erased exactly once. Devices run
# in parallel; servers, images and runs are module-scoped.
import random

import pytest

from devkit import simfleet
from devkit.nginx import find_nginx
from otactl import firmware_image
from devkit import images as synthetic
from e2e_helpers import (SECTOR, assert_old_firmware_boots, assert_refused, dev_servers, jobs_of, run_jobs, sectors,
                         serving, sha)

pytestmark = pytest.mark.skipif(find_nginx() is None, reason="needs nginx")

FULL = 1_713_728  # the official MicroPython v1.24.1 ESP32_GENERIC_C3 app (docs/CHIP.md §3)
SLOT = 0x1D0000
# Every job: quick retries (the drop cases reconnect a dozen times), no chip revision pinning.
OTA = {"retry_backoff_ms": 10}


@pytest.fixture(scope="module")
def world(tls_site):
    mid = simfleet.firmware("1.0.2", size=512 * 1024)
    images = {
        "v100": simfleet.firmware("1.0.0"),
        "full": simfleet.firmware("1.0.1", size=FULL),
        "mid": mid,
        "firmware": simfleet.firmware("1.0.3"),  # where nginx's /redirect/* routes lead
        "truncated": mid[:300_000],
        "header": mid[:100],
        "random": random.Random(7).randbytes(65536),
        "s3": synthetic.with_chip_id(mid, "esp32s3"),
        "merged": synthetic.merged_image(mid),
        "bootloader": synthetic.bootloader_image(),
        "oversize": simfleet.firmware("1.0.9", size=SLOT + 4096),
        "checksum": synthetic.corrupt_checksum(mid),
        "hash": synthetic.corrupt_hash(mid),
    }
    root, pki, www = tls_site("e2e-update", {name + ".bin": blob for name, blob in images.items()})
    certs = {"rogue": pki.rogue_cert, "wrong_host": pki.wrong_host_cert, "expired": pki.expired_cert}
    servers = dev_servers(www, pki, {
        "plain": {}, "chunked": {"chunked": True}, "token": {},
        "restart": {"drop_after": 300_000, "ignore_range": True},
        "drops": {"drop_after": "random", "drop_every": True},  # every answer cut short: a dozen resumes
        # One TCP RST at a random offset. Not every answer: a RST also throws away what the client's
        # kernel had received but not yet read, so near the end of the file no answer would ever land.
        "resets": {"drop_after": "random", "drop_reset": True},
        "stall": {"stall": True, "stall_seconds": 5}, "short": {"short_body": 1000},
        "rogue": {}, "wrong_host": {}, "expired": {}}, cert=certs.get)
    servers["token"].token = "s3cret"
    servers["token"].redirects = {"/auth/mid.bin": (302, "{ip_origin}/mid.bin")}
    with serving(www, pki, servers, target="firmware.bin") as web:
        yield {"root": root, "pki": pki, "images": images, "web": web, "servers": servers}


def _negative_jobs(world):
    web, srv, images = world["web"], world["servers"], world["images"]
    mid = images["mid"]
    return [
        # (job, expected reason, erases during the job: 0 = refused before anything was written)
        ({"name": "truncated_image", "url": web.url("truncated.bin")}, "truncated", None),
        ({"name": "truncated_header", "url": web.url("header.bin")}, "truncated", 0),
        ({"name": "random_bytes", "url": web.url("random.bin")}, "not_app_image", 0),
        ({"name": "chip_s3", "url": web.url("s3.bin")}, "wrong_chip", 0),
        ({"name": "merged_image", "url": web.url("merged.bin")}, "not_app_image", 0),
        ({"name": "bootloader_only", "url": web.url("bootloader.bin")}, "not_app_image", 0),
        ({"name": "oversize", "url": web.url("oversize.bin")}, "too_large", 0),
        ({"name": "bad_checksum", "url": web.url("checksum.bin")}, "bad_checksum", None),
        ({"name": "bad_image_hash", "url": web.url("hash.bin")}, "bad_image_hash", None),
        ({"name": "wrong_sha256", "url": web.url("mid.bin"), "sha256": sha(mid[::-1])}, "bad_sha256",
         None),
        ({"name": "http_404", "url": web.url("status/404")}, "http_404", 0),
        ({"name": "http_500", "url": web.url("status/500")}, "http_500", 0),
        ({"name": "redirect_loop", "url": web.url("redirect/loop")}, "too_many_redirects", 0),
        ({"name": "redirect_to_http", "url": web.url("redirect/http")}, "insecure_redirect", 0),
        ({"name": "http_refused", "url": web.http_url("mid.bin")}, "http_not_allowed", 0),
        ({"name": "stall", "url": srv["stall"].url("mid.bin"),
          "ota": {"read_timeout": 1, "retries": 1}}, "timeout", 0),
        ({"name": "wrong_ca", "url": srv["rogue"].url("mid.bin")}, "tls_verify_failed", 0),
        ({"name": "wrong_host", "url": srv["wrong_host"].url("mid.bin")}, "tls_verify_failed", 0),
        ({"name": "expired_cert", "url": srv["expired"].url("mid.bin")}, "tls_verify_failed", 0),
        ({"name": "short_body", "url": srv["short"].url("mid.bin"), "ota": {"retries": 2}},
         "connection_lost", None),
    ]


def _success_jobs(world):
    web, srv, images = world["web"], world["servers"], world["images"]
    full, mid = images["full"], images["mid"]
    return {
        # name: (job, image expected in ota_1)
        "nginx_full": ({"url": web.url("full.bin"), "sha256": sha(full), "size": FULL}, full),
        "devserver_full": ({"url": srv["plain"].url("full.bin"), "sha256": sha(full), "version": "1.0.1"},
                           full),
        "redirect_two": ({"url": web.url("redirect/two"), "sha256": sha(images["firmware"])},
                         images["firmware"]),
        "chunked": ({"url": srv["chunked"].url("mid.bin"), "sha256": sha(mid)}, mid),
        "token": ({"url": srv["token"].url("auth/mid.bin"), "sha256": sha(mid), "token": "s3cret",
                   "ota": {"token_origin": "https://localhost:%d" % srv["token"].port}}, mid),
        "restart_200": ({"url": srv["restart"].url("mid.bin"), "sha256": sha(mid)}, mid),
        "random_drops": ({"url": srv["drops"].url("full.bin"), "sha256": sha(full)}, full),
        "random_resets": ({"url": srv["resets"].url("mid.bin"), "sha256": sha(mid)}, mid),
        "allow_http": ({"url": web.http_url("mid.bin"), "sha256": sha(mid), "ota": {"allow_http": True}},
                       mid),
    }


@pytest.fixture(scope="module")
def runs(world):
    negative = _negative_jobs(world)
    success = _success_jobs(world)
    devices, results = run_jobs(world, negative, {name: job for name, (job, _) in success.items()},
                                world["images"]["v100"], OTA, timeout=120)
    return {"devices": devices, "results": results, "negative": negative, "success": success}


def _negative_ids():
    return ["truncated_image", "truncated_header", "random_bytes", "chip_s3", "merged_image",
            "bootloader_only", "oversize", "bad_checksum", "bad_image_hash", "wrong_sha256", "http_404",
            "http_500", "redirect_loop", "redirect_to_http", "http_refused", "stall", "wrong_ca",
            "wrong_host", "expired_cert", "short_body"]


@pytest.mark.parametrize("name", _negative_ids())
def test_bad_update_is_refused_and_the_old_slot_stays(runs, name):
    expected = {job["name"]: (reason, erases) for job, reason, erases in runs["negative"]}
    reason, erases = expected[name]
    # set_boot never ran, nothing bootable is left in ota_1, erases 0: refused before the first write
    got = assert_refused(runs["devices"]["batch"], name, reason, erases)
    assert "result" not in got


def test_batch_device_boots_its_old_firmware(runs):
    device = assert_old_firmware_boots(runs)
    assert len(jobs_of(device)) == len(runs["negative"])
    assert device.read_otadata()["slot"] in (None, "ota_0")  # never pointed at ota_1
    assert "BOOT {" in device.console()
    # Only written-then-refused images touched ota_1; each one's first sector was erased at the end.
    assert device.boot_counters(0)["dirty_programs"] == 0


@pytest.mark.parametrize("name", ["nginx_full", "devserver_full", "redirect_two", "chunked", "token",
                                  "restart_200", "random_drops", "random_resets", "allow_http"])
def test_update_succeeds_and_boots_the_new_version(runs, name):
    device = runs["devices"][name]
    job, image = runs["success"][name]
    assert runs["results"][name] == "exit", device.console()
    got = jobs_of(device)[name]
    new_version = firmware_image.device_image.parse_descriptor(image[:0x100])["version"]
    assert got.get("result") == "ok", got
    assert got["bytes"] == len(image) and got["sha256"] == sha(image)
    assert got["version"] == new_version and got["slot"] == "ota_1"
    assert got["boot_label"] == "ota_1"
    assert [(b["slot"], b["version"]) for b in device.boots()] == [("ota_0", "1.0.0"),
                                                                     ("ota_1", new_version)]
    assert device.read_otadata()["slot"] == "ota_1"
    ota_1 = device.partition("ota_1")
    assert device.read_flash(ota_1.offset, len(image)) == image
    # The erase instrument: one erase per sector of the image, none twice (except a 200 restart).
    first = device.boot_counters(0)
    erased = {int(a, 16): n for a, n in first["erased_sectors"].items()
              if ota_1.offset <= int(a, 16) < ota_1.offset + ota_1.size}
    assert first["dirty_programs"] == 0 and first["overprogrammed_bytes"] == 0
    if name == "restart_200":
        again = sectors(300_000 // SECTOR * SECTOR)  # flushed before the drop, erased again
        assert got["restarts"] == 1
        assert first["erases_by_partition"]["ota_1"] == sectors(len(image)) + again
        assert sorted(erased.values()) == [1] * (sectors(len(image)) - again) + [2] * again
    else:
        assert got["restarts"] == 0
        assert first["erases_by_partition"]["ota_1"] == sectors(len(image))
        assert set(erased.values()) == {1}
    assert sorted(erased) == [ota_1.offset + i * SECTOR for i in range(sectors(len(image)))]
    assert "Traceback" not in device.console()


def test_full_update_sector_erases_equal_image_sectors(runs):
    counters = runs["devices"]["nginx_full"].boot_counters(0)
    assert counters["erases_by_partition"]["ota_1"] == sectors(FULL) == 419


def test_token_goes_to_the_first_host_only(runs, world):
    requests = world["servers"]["token"].requests
    assert [r["host"] for r in requests] == ["localhost", "127.0.0.1"], requests
    assert requests[0]["headers"].get("authorization") == "Bearer s3cret"
    assert "authorization" not in requests[1]["headers"]


def test_200_restart_asked_for_a_range_first(runs, world):
    requests = world["servers"]["restart"].requests
    assert len(requests) == 2 and "range" not in requests[0]["headers"]
    assert requests[1]["headers"]["range"] == "bytes=300000-"


@pytest.mark.parametrize("name,drops", [("drops", 4), ("resets", 1)])
def test_random_drops_resume_with_range(runs, world, name, drops):
    requests = world["servers"][name].requests
    assert len(requests) >= 1 + drops, requests
    starts = [int(r["headers"]["range"][6:-1]) for r in requests[1:]]
    assert "range" not in requests[0]["headers"]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # always forward
