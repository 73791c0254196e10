# What Home Assistant's entity and the per-update telemetry cost the device, under the real MicroPython
# (host_tests/drivers/mp_ha_heap.py): the metered data path still allocates nothing per 4 KiB chunk, and the
# payloads and objects stay small. Numbers are the Unix port's (64-bit: objects about twice a C3's).
import os
import subprocess

import pytest

from paths import ROOT
from test_writer import MICROPYTHON, run_mp_alloc

DRIVER = os.path.join(ROOT, "host_tests", "drivers", "mp_ha_heap.py")
LIB = os.path.join(ROOT, "lib")


def run_driver(*args, heap="128wK"):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no .venv/bin/micropython")
    out = subprocess.run([MICROPYTHON, "-X", "heapsize=" + heap, DRIVER, LIB] + [str(a) for a in args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    return {k: int(v) if v.isdigit() else v for k, v in (item.split("=") for item in out.stdout.split()[1:])}


def test_metered_data_path_allocates_nothing_per_chunk(tmp_path):
    from devkit.images import build_image

    plain = run_mp_alloc(tmp_path, "update")
    img, slot = tmp_path / "img.bin", tmp_path / "slot.bin"
    img.write_bytes(build_image("1.2.0", size=1024 * 1024))
    slot.write_bytes(b"\xff" * 0x1D0000)
    # 8wK above the plain run's 64wK: the telemetry module's bytecode (flash on a board) and this
    # driver's own; what is compared below is bytes allocated, which the heap's size does not change.
    metered = run_driver("alloc", img, slot, heap="72wK")
    assert metered["ok"] == 1 and metered["chunks"] == 257
    assert metered["steady_max"] == 0  # the wrappers' readinto/writeblocks: small ints only
    assert metered["total"] == int(plain["total"])  # not one byte more than without the meter
    assert slot.read_bytes()[:1024 * 1024] == img.read_bytes()


def test_payload_and_object_costs():
    got = run_driver("heap")
    print("heap costs (64-bit Unix port):", got)
    assert got["discovery_len"] < 700 and got["entity_len"] < 256  # on the wire
    assert got["discovery"] < 3 * got["discovery_len"]  # the format, the quoted values, one encode
    # Garbage once per state message: no more than twice what the state message itself costs.
    assert got["entity"] < 2 * got["state_plain"] and got["ha_object"] < 1024 and got["meter"] < 1024
    assert got["state_with_t"] - got["state_plain"] < 1024  # the record's share of a final message
