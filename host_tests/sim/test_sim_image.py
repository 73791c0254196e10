"""A tiny ESP32-C3 app-image maker for the simulator tests (until otactl.firmware_image is shared),
checked against esptool's own parser."""
import os
import struct
import importlib.util
import subprocess

import pytest

import fakes
from paths import ROOT as REPO

DEVICE_DIR = os.path.join(REPO, "sim", "device")
# Loaded by path: sim/device is never put on sys.path here (its machine/esp32 would shadow other
# tests' fakes).
_spec = importlib.util.spec_from_file_location("sim_simpayload", os.path.join(DEVICE_DIR, "simpayload.py"))
simpayload = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(simpayload)


def build_test_image(version, files=(), chip_id=5, min_rev=3, max_rev=199, desc_magic=0xABCD5432,
                     hash_appended=True, pad_to=0):
    """24-byte header, segment 0 = app descriptor (256 bytes), segment 1 = simpayload bundle of
    `files`, XOR checksum seeded 0xEF ending a 16-byte block, SHA-256 of everything before it.
    pad_to: extra zero data in a third segment so the image reaches about that many bytes."""
    desc = struct.pack("<II8x32s32s16s16s32s32s", desc_magic, 0, version.encode(), b"simapp",
                       b"00:00:00", b"Jan  1 2026", b"v5.2-sim", b"\0" * 32).ljust(256, b"\0")
    segments = [(0x3C000020, desc)]
    if files:
        segments.append((0x3C100000, simpayload.pack(list(files))))
    used = 24 + sum(8 + len(d) for _, d in segments) + 48
    if pad_to > used + 8:
        segments.append((0x3C200000, b"\0" * ((pad_to - used - 8) // 4 * 4)))
    header = struct.pack("<BBBBIBBBBHBHH4xB", 0xE9, len(segments), 2, 0x2F, 0x40380000, 0xEE, 0, 0, 0,
                         chip_id, 0, min_rev, max_rev, 1 if hash_appended else 0)
    return fakes.assemble_image(header, segments, hash_appended)


def test_esptool_accepts_the_test_image(tmp_path):
    image = build_test_image("1.2.3", [("hello.py", b"print('hi')\n")])
    path = tmp_path / "app.bin"
    path.write_bytes(image)
    esptool = os.path.join(REPO, ".venv", "bin", "esptool")
    if not os.path.exists(esptool):
        pytest.skip("esptool not installed")
    out = subprocess.run([esptool, "--chip", "esp32c3", "image-info", str(path)],
                         capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "(valid)" in text.lower() and "invalid" not in text.lower(), text
    assert "1.2.3" in text
