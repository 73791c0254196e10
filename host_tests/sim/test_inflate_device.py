# The compressed data path on MicroPython without a network (host_tests/drivers/mp_inflate.py drives the real
# ota.update.run over file-backed partitions): the image lands byte for byte, 0 bytes allocated per
# chunk in the steady state, the peak heap above idle within the 24 KiB budget, a drop re-downloads at
# most one piece, a corrupt stream fails with a reason code, both ways of feeding DeflateIO (through
# inflate.Source, or the response's stream itself), a patch against the running slot; and the
# host-side container (otactl/zimage.py) against its own decoder.
import hashlib
import os
import subprocess

import pytest

from devkit import images as firmware_image
from otactl import zimage
from devkit import firmware_bytes

from paths import DRIVERS as HERE, ROOT as REPO
MICROPYTHON = os.path.join(REPO, ".venv", "bin", "micropython")
FULL = 1_713_728
SLOT = 0x1D0000
PIECE = 64 * 1024

pytestmark = pytest.mark.skipif(not os.access(MICROPYTHON, os.X_OK), reason="no micropython binary")


@pytest.fixture(scope="module")
def image():
    return firmware_image.build_image("1.0.1", files=[("lib/app.py", b"print('hello')\n" * 40)], size=FULL,
                                      fill=firmware_bytes.code_bytes())


@pytest.fixture(scope="module")
def packed(image):
    return zimage.pack_image(image)


def run(tmp_path, container, image, encoding="deflate", drops=(), sha=None, base=None, base_sha=None,
        direct=False, file_sha=None):
    (tmp_path / "c.otaz").write_bytes(container)
    slots = bytearray(b"\xff" * (2 * SLOT))
    if base is not None:
        slots[:len(base)] = base
    (tmp_path / "slots.bin").write_bytes(bytes(slots))
    args = [MICROPYTHON, os.path.join(HERE, "mp_inflate.py"), os.path.join(REPO, "lib"),
            str(tmp_path / "c.otaz"), str(tmp_path / "slots.bin"), encoding,
            sha or hashlib.sha256(image).hexdigest(), str(len(image)), ",".join(str(d) for d in drops)]
    args.append(base_sha or "-")
    args.append("direct" if direct else "-")
    if file_sha:
        args.append(file_sha)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    line = [x for x in proc.stdout.splitlines() if x.startswith("inflate ")][-1]
    out = dict(part.split("=") for part in line.split()[1:])
    for key in ("chunks", "steady_max", "total", "downloaded", "peak"):
        out[key] = int(out[key])
    out["set_boot"] = "set_boot ota_1" in proc.stdout
    with open(tmp_path / "slots.bin", "rb") as f:
        f.seek(SLOT)
        out["slot"] = f.read(len(image))
    return out


def test_container_round_trip_and_index(image, packed):
    info = zimage.parse_header(packed)
    assert zimage.unpack(packed) == image
    assert info["wbits"] == 12 and info["piece_log2"] == 16 and info["count"] == (FULL + PIECE - 1) // PIECE
    assert info["file_size"] == len(packed) and info["image_sha256"] == hashlib.sha256(image).hexdigest()
    # Every piece decodes on its own from its index offset (a full flush resets the window).
    import zlib

    offsets = [o for o, _ in info["index"]] + [len(packed)]
    for i in (0, 7, info["count"] - 1):
        dec = zlib.decompressobj(-12)
        piece = dec.decompress(packed[offsets[i]:offsets[i + 1]])
        assert piece == image[i * PIECE:(i + 1) * PIECE]


def test_firmware_like_bytes_compress_within_the_goal(image, packed):
    assert len(packed) <= 0.70 * len(image)


def test_compressed_update_on_micropython(tmp_path, image, packed):
    out = run(tmp_path, packed, image)
    assert out["result"] == "ok" and out["set_boot"], out
    assert out["slot"] == image
    assert out["downloaded"] == len(packed)
    assert out["steady_max"] == 0, out  # no allocation per chunk in the steady state
    assert out["peak"] <= 24 * 1024, out


def test_drops_re_download_at_most_one_piece_each(tmp_path, image, packed):
    drops = [1000, 200_000, 200_050, 450_001, len(packed) - 10]
    out = run(tmp_path, packed, image, drops=drops)
    assert out["result"] == "ok" and out["set_boot"], out
    assert out["slot"] == image
    longest = max(b - a for a, b in zip([o for o, _ in zimage.parse_header(packed)["index"]],
                                        [o for o, _ in zimage.parse_header(packed)["index"]][1:] + [len(packed)]))
    assert longest <= PIECE  # a piece of firmware-like bytes compresses: never more than 64 KiB
    # Each drop costs what was read of the interrupted piece, plus the read buffer.
    assert out["downloaded"] - len(packed) <= len(drops) * (longest + 1024), out


def test_corrupt_stream_fails_with_a_reason_and_no_set_boot(tmp_path, image, packed):
    bad = bytearray(packed)
    for i in range(len(bad) // 2, len(bad) // 2 + 64):
        bad[i] ^= 0x5A
    out = run(tmp_path, bytes(bad), image)
    assert out["result"] == "error" and out["reason"] == "bad_compressed", out
    assert not out["set_boot"]
    assert out["slot"][:4096] == b"\xff" * 4096  # invalidated: never bootable


def test_container_of_another_image_is_refused_before_any_write(tmp_path, image, packed):
    out = run(tmp_path, packed, image, sha=hashlib.sha256(b"other").hexdigest())
    assert out["reason"] == "bad_sha256" and not out["set_boot"], out
    assert out["slot"] == b"\xff" * len(image)


@pytest.mark.parametrize("wbits", [9, 12])
def test_small_windows_decode(tmp_path, image, wbits):
    out = run(tmp_path, zimage.pack_image(image, wbits=wbits), image)
    assert out["result"] == "ok" and out["slot"] == image, out


def test_wider_window_than_the_device_budgets_is_refused(tmp_path, image):
    out = run(tmp_path, zimage.pack_image(image, wbits=13), image)
    assert out["reason"] == "bad_container" and out["slot"] == b"\xff" * len(image), out


def test_direct_mode_decodes_from_the_stream_itself(tmp_path, image, packed):
    # No file_sha256: DeflateIO reads the response's stream (here the file object) in C.
    out = run(tmp_path, packed, image, direct=True)
    assert out["result"] == "ok" and out["set_boot"] and out["slot"] == image, out
    assert out["steady_max"] == 0, out
    assert out["peak"] <= 24 * 1024, out


def test_delta_on_micropython(tmp_path, image):
    base = firmware_image.build_image("1.0.0", files=[("lib/app.py", b"print('hello')\n" * 40)], size=FULL,
                                      fill=firmware_bytes.code_bytes())
    patch = zimage.pack_patch(base, image)
    assert len(patch) <= 0.05 * len(image)
    for direct in (False, True):
        out = run(tmp_path, patch, image, encoding="delta", base=base, direct=direct)
        assert out["result"] == "ok" and out["set_boot"] and out["slot"] == image, out
        assert out["peak"] <= 24 * 1024, out
    # The wrong base: refused before anything is written (no fallback in this trigger).
    out = run(tmp_path, patch, image, encoding="delta", base=image)
    assert out["reason"] == "wrong_base" and out["slot"] == b"\xff" * len(image), out


def test_file_sha256_holds_across_drops_even_inside_the_header(tmp_path, image, packed):
    # Each byte of the file is hashed once, whatever is downloaded twice.
    good = hashlib.sha256(packed).hexdigest()
    out = run(tmp_path, packed, image, drops=[40, 100, 250_000], file_sha=good)
    assert out["result"] == "ok" and out["slot"] == image, out
    out = run(tmp_path, packed, image, drops=[250_000], file_sha=hashlib.sha256(b"x").hexdigest())
    assert out["reason"] == "bad_file_sha256" and not out["set_boot"], out
