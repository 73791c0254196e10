"""Frozen modules run in place (issue 13): the simulated device packs the booted image's frozen .mpy
files into a ROMFS image (sim/device/simromfs.py) and mounts it in one block taken at power-on
(sim/device/simboot.py), as the board runs frozen bytecode from flash. Without it every import copied
bytecode into the GC heap and left holes there."""
import os
import re
import subprocess

import pytest

from devkit import simfleet
from sim.runner import ROM_ROOM, Device, heap_bytes, sim_rom_image

from paths import MICROPYTHON

pytestmark = pytest.mark.skipif(not os.path.exists(MICROPYTHON), reason="no micropython binary")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = b"""
import gc, simdev, sys
gc.collect(); print("start", gc.mem_alloc() - simdev.rom_reserved, gc.mem_free())
from ota import agent, update, https, image, writer, heap, selftest, health, jobs, state, trigger
gc.collect(); print("loaded", gc.mem_alloc() - simdev.rom_reserved, gc.mem_free())
print("file", update.__file__)
print("room", simdev.rom_reserved - 32)
"""


def test_the_builder_writes_what_mpremote_romfs_build_writes(tmp_path):
    romfs = pytest.importorskip("mpremote.romfs")
    src = tmp_path / "src"
    (src / "pkg" / "sub").mkdir(parents=True)
    (src / "a.mpy").write_bytes(bytes(range(256)) * 3)
    (src / "pkg" / "__init__.mpy").write_bytes(b"")
    (src / "pkg" / "sub" / "b.txt").write_bytes(b"x" * 200)  # lengths above 127: two-byte uints
    out = tmp_path / "mine.romfs"
    script = ("import sys; sys.path.insert(0, %r); import simromfs; "
              "print(simromfs.build(%r, %r, memoryview(bytearray(100))))"
              % (os.path.join(ROOT, "sim", "device"), str(src), str(out)))
    run = subprocess.run([MICROPYTHON, "-c", script], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    expected = romfs.make_romfs(str(src), mpy_cross=False)
    assert out.read_bytes() == expected
    assert int(run.stdout.split()[-1]) == len(expected)


def _probe(tmp_path, name, romfs):
    device = Device(str(tmp_path / name), heapsize=simfleet.FLEET_HEAP)
    device.create(simfleet.firmware("1.0.0"), fs_files={"main.py": PROBE}, romfs=romfs)
    assert device.run(timeout=60) == "exit", device.console()
    console = device.console()
    numbers = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^(start|loaded) (\d+) (\d+)$", console, re.M)}
    return numbers, re.search(r"^file (\S+)$", console, re.M).group(1), device


def test_frozen_bytecode_runs_in_place_and_the_boot_heap_stays_as_it_was(tmp_path):
    rom, rom_file, device = _probe(tmp_path, "rom", True)
    heap, heap_file, _ = _probe(tmp_path, "heap", False)
    image = os.path.getsize(device.path("frozen.romfs"))
    sim_image = sim_rom_image(MICROPYTHON)
    own = os.path.getsize(sim_image) if sim_image else 0
    # The room simboot took (a little under ROM_ROOM: the GC's tables take their share) holds both
    # images, the simulator's own first (simmain._mount_image aligns the second to 16 bytes), and
    # is not much bigger than they are: gc.mem_free() and every collection walk it, which the chip
    # does not (sim.runner.ROM_ROOM). Checked before the /rom/ assertion below, so that a package
    # that outgrew the room says so.
    room = int(re.search(r"^room (\d+)$", device.console(), re.M).group(1))
    assert room <= ROM_ROOM
    spare = room - ((own + 15) // 16 * 16 + image)
    assert 0 <= spare < 48 * 1024, (own, image, room)
    assert rom_file.startswith("/rom/"), rom_file
    assert not heap_file.startswith("/rom/"), heap_file
    rom_cost = rom["loaded"][0] - rom["start"][0]
    heap_cost = heap["loaded"][0] - heap["start"][0]
    # The bytecode, its str/bytes constants and qstr text stay in the image: the imports take far
    # less heap than when every .mpy was copied in (about 80 KB against 132 KB when measured).
    assert heap_cost - rom_cost > image // 2, (rom_cost, heap_cost, image)
    # The room for the image is added to -X heapsize and taken at once: before main.py the device
    # has the free heap FLEET_HEAP gives (the sim is not kinder; mounting costs a little).
    assert abs(rom["start"][1] - heap["start"][1]) < 4096, (rom["start"], heap["start"])
    assert rom["start"][1] < heap_bytes(simfleet.FLEET_HEAP)


def test_heap_bytes_reads_heapsize_as_the_unix_port():
    assert heap_bytes("64wK") == 131072  # 64-bit words: twice the 32-bit size
    assert heap_bytes("155712") == 155712
    assert heap_bytes(2048) == 2048
    assert heap_bytes("1M") == 1 << 20
    with pytest.raises(ValueError):
        heap_bytes("64kw")


def test_a_payload_met_before_comes_from_the_cache_unchanged(tmp_path):
    image = simfleet.firmware("1.0.0")
    images = []
    for name in ("first", "second"):
        device = Device(str(tmp_path / name))
        device.create(image, fs_files={"main.py": b"import ota.update\nprint('imported', ota.update.__file__)\n"})
        assert device.run(timeout=60) == "exit", device.console()
        assert "imported /rom/ota/update.mpy" in device.console()
        with open(device.path("frozen.romfs"), "rb") as f:
            images.append(f.read())
        assert os.path.exists(os.path.join(device.devdir, "frozen", "ota", "update.mpy"))
    assert images[0] == images[1]
    cache = os.path.join(ROOT, "build", "frozen-cache")
    cached = []
    for entry in os.listdir(cache):
        path = os.path.join(cache, entry, "frozen.romfs")
        if os.path.exists(path):
            with open(path, "rb") as f:
                cached.append(f.read())
    assert images[0] in cached
