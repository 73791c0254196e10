# Compressed updates end to end (issue 14, docs/COMPRESSED.md): the real `micropython` binary on the
# simulated ESP32-C3 runs ota.update.run on an OTAZ container (raw deflate, 4 KiB window, a full flush
# every 64 KiB of image) served by real nginx and by our fault-injecting dev server over verified TLS.
# Each success ends with the same flash contents as the plain image; drops resume with Range at a
# piece boundary; a corrupt stream or a container of another image is refused with a reason code and
# the boot slot stays.
import random

import pytest

from devkit import simfleet
from devkit.nginx import find_nginx
from otactl import zimage
from devkit import firmware_bytes
from e2e_helpers import (assert_landed, assert_old_firmware_boots, assert_refused, dev_servers, piece_starts, run_jobs,
                         serving, sha)

pytestmark = pytest.mark.skipif(find_nginx() is None, reason="needs nginx")

FULL = 1_713_728  # the official MicroPython v1.24.1 ESP32_GENERIC_C3 app (docs/CHIP.md §3)
OTA = {"retry_backoff_ms": 10, "retries": 8}


def _corrupt(blob):
    # Flip bytes in the middle of the deflate stream (past the header and the first pieces).
    out = bytearray(blob)
    mid = len(out) // 2
    for i in range(mid, mid + 64):
        out[i] ^= 0x5A
    return bytes(out)


@pytest.fixture(scope="module")
def world(tls_site):
    full = simfleet.firmware("1.0.1", size=FULL, fill=firmware_bytes.code_bytes())
    other = simfleet.firmware("1.0.2", size=FULL, fill=firmware_bytes.code_bytes()[::-1])
    packed = zimage.pack_image(full)
    files = {
        "v100.bin": simfleet.firmware("1.0.0"),
        "full.bin": full,
        "full.otaz": packed,
        "corrupt.otaz": _corrupt(packed),
        "cut.otaz": packed[:len(packed) // 3],
        "wide.otaz": zimage.pack_image(full, wbits=15),
        "other.otaz": zimage.pack_image(other),
    }
    root, pki, www = tls_site("e2e-compressed", files)
    # One cut at a random offset each (a different one per server). Not every answer cut, as
    # test_e2e_update's "drops" does: a resume downloads the piece again from its start, so a server
    # that cuts every answer at random before its end never lets the last piece through.
    restart = {"drop_after": 300_000, "ignore_range": True}
    servers = dev_servers(www, pki, {"drop1": {"drop_after": "random"}, "drop2": {"drop_after": "random"},
                                     "drop3": {"drop_after": "random"},
                                     "resets": {"drop_after": "random", "drop_reset": True},
                                     "restart": restart, "restart2": restart})
    for seed, name in enumerate(("drop1", "drop2", "drop3")):
        servers[name].rng = random.Random(seed)
    with serving(www, pki, servers, target="full.bin") as web:
        yield {"root": root, "pki": pki, "files": files, "web": web, "servers": servers}


def _artifact(blob, **fields):
    return dict({"encoding": "deflate", "file_sha256": sha(blob), "file_size": len(blob)}, **fields)


def _success_jobs(world):
    web, srv, files = world["web"], world["servers"], world["files"]
    full, packed = files["full.bin"], files["full.otaz"]
    job = {"sha256": sha(full), "size": FULL, "artifact": _artifact(packed)}  # hashed: through Source
    # No file_sha256: DeflateIO reads the socket itself (inflate.Loader._raw).
    direct = {"sha256": sha(full), "size": FULL, "artifact": {"encoding": "deflate", "file_size": len(packed)}}
    return {
        "plain_full": dict(url=web.url("full.bin"), sha256=sha(full), size=FULL),
        "nginx_compressed": dict(job, url=web.url("full.otaz")),
        "random_drop1": dict(job, url=srv["drop1"].url("full.otaz")),
        "random_drop2": dict(direct, url=srv["drop2"].url("full.otaz")),
        "random_drop3": dict(direct, url=srv["drop3"].url("full.otaz")),
        "random_resets": dict(direct, url=srv["resets"].url("full.otaz")),
        "restart_200_direct": dict(direct, url=srv["restart2"].url("full.otaz")),
        "restart_200": dict(job, url=srv["restart"].url("full.otaz")),
        "no_file_fields": dict(job, url=web.url("full.otaz"), artifact={"encoding": "deflate"}),
    }


def _negative_jobs(world):
    web, files = world["web"], world["files"]
    full, packed = files["full.bin"], files["full.otaz"]
    base = {"sha256": sha(full), "size": FULL}
    return [
        # (job, reason, erases during the job: 0 = refused before anything was written)
        (dict(base, name="corrupt_stream", url=web.url("corrupt.otaz"), artifact={"encoding": "deflate"}),
         "bad_compressed", None),
        (dict(base, name="corrupt_stream_hashed", url=web.url("corrupt.otaz"),
              artifact=_artifact(files["corrupt.otaz"])), "bad_compressed", None),
        (dict(base, name="cut_file", url=web.url("cut.otaz"), artifact={"encoding": "deflate"},
              ota={"retries": 1}), "size_mismatch", 0),
        (dict(base, name="window_too_wide", url=web.url("wide.otaz"), artifact={"encoding": "deflate"}),
         "bad_container", 0),
        (dict(base, name="other_image", url=web.url("other.otaz"), artifact={"encoding": "deflate"}),
         "bad_sha256", 0),
        (dict(base, name="plain_file_as_compressed", url=web.url("full.bin"),
              artifact={"encoding": "deflate"}), "bad_container", 0),
        (dict(base, name="wrong_file_size", url=web.url("full.otaz"),
              artifact=_artifact(packed, file_size=len(packed) + 1)), "size_mismatch", 0),
        (dict(base, name="wrong_file_sha256", url=web.url("full.otaz"),
              artifact=_artifact(packed, file_sha256=sha(b"x"))), "bad_file_sha256", None),
        (dict(base, name="delta_kind_mismatch", url=web.url("full.otaz"),
              artifact={"encoding": "delta", "base_sha256": sha(b"x")}), "bad_container", 0),
    ]


@pytest.fixture(scope="module")
def runs(world):
    negative = _negative_jobs(world)
    devices, results = run_jobs(world, negative, _success_jobs(world), world["files"]["v100.bin"], OTA,
                                timeout=900)  # slow under load
    return {"devices": devices, "results": results, "negative": negative}


@pytest.mark.parametrize("name", ["plain_full", "nginx_compressed", "random_drop1", "random_drop2",
                                  "random_drop3", "random_resets", "restart_200", "restart_200_direct",
                                  "no_file_fields"])
def test_compressed_update_lands_the_same_image(runs, world, name):
    # What the plain image leaves, byte for byte. Resumes never go back in the image: each sector of it
    # erased exactly once, even after drops.
    device, _, counters = assert_landed(runs, name, world["files"]["full.bin"], FULL, version="1.0.1")
    assert counters["dirty_programs"] == 0
    assert "Traceback" not in device.console()


def test_compressed_moves_fewer_bytes(world):
    assert len(world["files"]["full.otaz"]) <= 0.70 * FULL


@pytest.mark.parametrize("name", ["drop1", "drop2", "drop3", "resets"])
def test_drops_resume_at_a_piece_boundary(runs, world, name):
    requests = world["servers"][name].requests
    assert len(requests) == 2, requests
    assert "range" not in requests[0]["headers"]
    index = piece_starts(world["files"]["full.otaz"])
    start = int(requests[1]["headers"]["range"][6:-1])
    assert start in index, (start, index)  # only ever at a piece's first byte


@pytest.mark.parametrize("server", ["restart", "restart2"])
def test_200_restart_skips_to_the_piece(runs, world, server):
    requests = world["servers"][server].requests
    assert len(requests) == 2 and "range" not in requests[0]["headers"]
    index = piece_starts(world["files"]["full.otaz"])
    start = int(requests[1]["headers"]["range"][6:-1])
    assert start in index and start <= 300_000 and 300_000 - start <= 64 * 1024


@pytest.mark.parametrize("case", range(9))
def test_bad_compressed_update_is_refused_and_the_old_slot_stays(runs, case):
    job, reason, erases = runs["negative"][case]
    assert_refused(runs["devices"]["batch"], job["name"], reason, erases)


def test_batch_device_boots_its_old_firmware(runs):
    assert_old_firmware_boots(runs)
