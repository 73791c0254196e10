# Compressed updates end to end (issue 14, docs/COMPRESSED.md): the real `micropython` binary on the
# simulated ESP32-C3 runs ota.update.run on an OTAZ container (raw deflate, 4 KiB window, a full flush
# every 64 KiB of image) served by real nginx and by our fault-injecting dev server over verified TLS.
# Each success ends with the same flash contents as the plain image; drops resume with Range at a
# piece boundary; a corrupt stream or a container of another image is refused with a reason code and
# the boot slot stays.
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

FULL = 1_713_728  # the official MicroPython v1.24.1 ESP32_GENERIC_C3 app (docs/CHIP.md §3)
SECTOR = 4096
OTA = {"retry_backoff_ms": 10, "retries": 8}


def sha(blob):
    return hashlib.sha256(blob).hexdigest()


def _corrupt(blob):
    # Flip bytes in the middle of the deflate stream (past the header and the first pieces).
    out = bytearray(blob)
    mid = len(out) // 2
    for i in range(mid, mid + 64):
        out[i] ^= 0x5A
    return bytes(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-compressed")
    pki = make_pki(str(root / "pki"))
    www = root / "www"
    www.mkdir()
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
    for name, blob in files.items():
        (www / name).write_bytes(blob)
    servers = {}
    for name in ("drop1", "drop2", "drop3", "resets", "restart", "restart2"):
        servers[name] = DevServer(str(www), pki.server_cert, pki.server_key).start()
    # One cut at a random offset each (a different one per server). Not every answer cut, as
    # test_e2e_update's "drops" does: a resume downloads the piece again from its start, so a server
    # that cuts every answer at random before its end never lets the last piece through.
    for seed, name in enumerate(("drop1", "drop2", "drop3")):
        servers[name].rng = random.Random(seed)
        servers[name].faults.drop_after = "random"
    servers["resets"].faults.drop_after = "random"
    servers["resets"].faults.drop_reset = True
    servers["restart"].faults.drop_after = 300_000
    servers["restart"].faults.ignore_range = True
    servers["restart2"].faults.drop_after = 300_000
    servers["restart2"].faults.ignore_range = True
    web = Nginx(str(www), pki.server_cert, pki.server_key, target="full.bin").start()
    try:
        yield {"root": root, "pki": pki, "files": files, "web": web, "servers": servers}
    finally:
        web.stop()
        for server in servers.values():
            server.stop()


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
    device.create(world["files"]["v100.bin"], fs_files=fs)
    return device


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
    for name, job in _success_jobs(world).items():
        devices[name] = _device(world, name, [dict(job, name=name)])
    for device in devices.values():
        device.start(max_boots=3)
    results = {name: device.wait(timeout=900) for name, device in devices.items()}  # slow under load
    return {"devices": devices, "results": results, "negative": negative}


@pytest.mark.parametrize("name", ["plain_full", "nginx_compressed", "random_drop1", "random_drop2",
                                  "random_drop3", "random_resets", "restart_200", "restart_200_direct",
                                  "no_file_fields"])
def test_compressed_update_lands_the_same_image(runs, world, name):
    device = runs["devices"][name]
    full = world["files"]["full.bin"]
    assert runs["results"][name] == "exit", device.console()
    got = _jobs_of(device)[name]
    assert got.get("result") == "ok", got
    assert got["bytes"] == FULL and got["sha256"] == sha(full) and got["boot_label"] == "ota_1"
    assert [(b["slot"], b["version"]) for b in device.boots()] == [("ota_0", "1.0.0"), ("ota_1", "1.0.1")]
    ota_1 = device.partition("ota_1")
    assert device.read_flash(ota_1.offset, FULL) == full  # what the plain image leaves, byte for byte
    counters = device.boot_counters(0)
    # Resumes never go back in the image: each sector of it erased exactly once, even after drops.
    assert counters["erases_by_partition"]["ota_1"] == (FULL + SECTOR - 1) // SECTOR
    assert counters["dirty_programs"] == 0
    assert "Traceback" not in device.console()


def test_compressed_moves_fewer_bytes(world):
    assert len(world["files"]["full.otaz"]) <= 0.70 * FULL


@pytest.mark.parametrize("name", ["drop1", "drop2", "drop3", "resets"])
def test_drops_resume_at_a_piece_boundary(runs, world, name):
    requests = world["servers"][name].requests
    assert len(requests) == 2, requests
    assert "range" not in requests[0]["headers"]
    index = [offset for offset, _ in zimage.parse_header(world["files"]["full.otaz"])["index"]]
    start = int(requests[1]["headers"]["range"][6:-1])
    assert start in index, (start, index)  # only ever at a piece's first byte


@pytest.mark.parametrize("server", ["restart", "restart2"])
def test_200_restart_skips_to_the_piece(runs, world, server):
    requests = world["servers"][server].requests
    assert len(requests) == 2 and "range" not in requests[0]["headers"]
    index = [offset for offset, _ in zimage.parse_header(world["files"]["full.otaz"])["index"]]
    start = int(requests[1]["headers"]["range"][6:-1])
    assert start in index and start <= 300_000 and 300_000 - start <= 64 * 1024


@pytest.mark.parametrize("case", range(9))
def test_bad_compressed_update_is_refused_and_the_old_slot_stays(runs, case):
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
