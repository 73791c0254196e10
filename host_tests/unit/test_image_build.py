"""otactl.firmware_image builds images that esptool itself calls valid, and its bad variants fail
both esptool and our inspector (which runs the device's lib/ota/image.py)."""
import os
import re
import struct
import subprocess

import pytest

from paths import ROOT

from otactl import cli, firmware_image as fi
from devkit import images
from ota.errors import OtaError
from devkit.images import simpayload  # loaded by file: sim/device stays off sys.path

ESPTOOL = os.path.join(ROOT, ".venv", "bin", "esptool")
SLOT = 0x1D0000
REAL_APP_SIZE = 1713728  # the official MicroPython v1.24.1 ESP32_GENERIC_C3 app


def esptool_info(tmp_path, blob, name="image.bin"):
    if not os.path.exists(ESPTOOL):
        pytest.skip("esptool not installed in .venv")
    path = tmp_path / name
    path.write_bytes(blob)
    run = subprocess.run([ESPTOOL, "image-info", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def assert_esptool_valid(out):
    assert re.search(r"^Checksum: 0x[0-9a-f]{2} \(valid\)$", out, re.M), out
    assert re.search(r"^Validation hash: [0-9a-f]{64} \(valid\)$", out, re.M), out
    assert "Chip ID: 5 (ESP32-C3)" in out


@pytest.mark.parametrize("version,size", [
    ("1.0.0", None), ("1.0.1", 65536), ("2.3.4-rc1", 300000), ("1.0.1", REAL_APP_SIZE),
    ("9.9.9", SLOT),
])
def test_built_images_pass_esptool_and_the_inspector(tmp_path, version, size):
    files = [("ota/hello.py", b"VERSION = %r\n" % version.encode())]
    image = images.build_image(version, files, size=size, seed=len(version))
    if size:
        assert len(image) == size
    out = esptool_info(tmp_path, image)
    assert_esptool_valid(out)
    assert "App version: %s" % version in out
    assert "Project name: micropython" in out
    assert "Minimal chip revision: v0.3" in out and "Maximal chip revision: v1.99" in out
    assert "Segment" in out and "DROM" in out and "IROM" in out
    report = fi.inspect_image(image, slot_size=SLOT, chip_rev=4)
    assert report.verdict is None
    assert all(check.ok for check in report), report
    assert [c.name for c in report] == ["magic", "chip", "chip revision", "app descriptor", "product", "version", "segments",
                                        "checksum", "appended hash", "fits slot"]
    assert report.info["version"] == version and report.info["image_length"] == len(image)


def test_the_descriptor_is_at_0x20_and_the_payload_round_trips():
    files = [("ota/a.py", b"A = 1\n"), ("umqtt/simple.py", b"# umqtt\n" * 100)]
    image = images.build_image("1.2.3", files, secure_version=7)
    assert struct.unpack_from("<I", image, 0x20)[0] == 0xABCD5432
    assert image[0x30:0x35] == b"1.2.3" and struct.unpack_from("<I", image, 0x24)[0] == 7
    payloads = [image[at:at + length] for _, at, _, length in fi.segments_of(image)
                if simpayload.is_payload(image[at:at + length])]
    assert len(payloads) == 1 and simpayload.unpack(payloads[0]) == files


def test_mapped_segments_keep_their_page_offset():
    # esp_image_format.c verify_segment_header: flash-mapped data offset % 64 KiB == load addr % 64 KiB
    image = images.build_image("1.0.0", [("x.py", b"x" * 5000)], size=REAL_APP_SIZE)
    for _, at, addr, _ in fi.segments_of(image):
        if fi.memory_type(addr) in ("DROM", "IROM"):
            assert at % 0x10000 == addr % 0x10000


def test_builds_are_deterministic_and_the_seed_changes_the_filler():
    a = images.build_image("1.0.0", size=65536)
    assert a == images.build_image("1.0.0", size=65536)
    assert a != images.build_image("1.0.0", size=65536, seed=1)


def test_no_hash_appended_is_still_valid(tmp_path):
    image = images.build_image("1.0.0", size=8192, hash_appended=False)
    out = esptool_info(tmp_path, image)
    assert "Checksum: " in out and "(valid)" in out and "Validation hash" not in out
    assert fi.inspect_image(image).verdict is None


def test_impossible_sizes_are_refused():
    with pytest.raises(OtaError) as e:
        images.build_image("1.0.0", size=65537)
    assert e.value.reason == "bad_image_size"
    with pytest.raises(OtaError) as e:
        images.build_image("1.0.0", [("big.py", b"x" * 10000)], size=4096)
    assert e.value.reason == "bad_image_size"
    with pytest.raises(OtaError) as e:
        images.build_image("a-version-string-longer-than-31-bytes")
    assert e.value.reason == "bad_image_field"


@pytest.mark.parametrize("corrupt,esptool_says,reason", [
    (images.corrupt_checksum, r"^Checksum: 0x[0-9a-f]{2} \(invalid - calculated", "bad_checksum"),
    (images.corrupt_hash, r"^Validation hash: [0-9a-f]{64} \(invalid\)$", "bad_image_hash"),
])
def test_corrupted_copies_fail_esptool_and_the_inspector(tmp_path, corrupt, esptool_says, reason):
    image = corrupt(images.build_image("1.0.1", size=REAL_APP_SIZE))
    out = esptool_info(tmp_path, image)
    assert re.search(esptool_says, out, re.M), out
    report = fi.inspect_image(image, slot_size=SLOT)
    assert report.verdict[0] == reason
    assert [c.reason for c in report if not c.ok] == [reason]


def test_corrupt_hash_hides_from_the_xor_checksum(tmp_path):
    # the reason images carry a SHA-256: two flipped bits in the same position cancel in the XOR
    out = esptool_info(tmp_path, images.corrupt_hash(images.build_image("1.0.1")))
    assert re.search(r"^Checksum: 0x[0-9a-f]{2} \(valid\)$", out, re.M)


def test_chip_patched_image_is_valid_for_esptool_but_wrong_chip_for_us(tmp_path):
    image = images.with_chip_id(images.build_image("1.0.1"), "esp32s3")
    out = esptool_info(tmp_path, image)
    assert "Chip ID: 9 (ESP32-S3)" in out and "(invalid" not in out
    report = fi.inspect_image(image, slot_size=SLOT)
    assert report.verdict == ("wrong_chip", "image is for ESP32-S3 (chip id 9), this device is ESP32-C3 (5)")


def test_merged_and_bootloader_images_look_fine_to_esptool_but_are_not_apps(tmp_path):
    app = images.build_image("1.0.1")
    boot = images.bootloader_image()
    for blob in (boot, images.merged_image(app)):
        out = esptool_info(tmp_path, blob)
        assert_esptool_valid(out)  # magic, chip and checksum pass: esp_image_verify would too
        assert "Bootloader Information" in out and "Application Information" not in out
        report = fi.inspect_image(blob, slot_size=SLOT)
        assert report.verdict[0] == "not_app_image"
        failed = [c for c in report if not c.ok]
        assert [c.name for c in failed] == ["app descriptor"]
        assert "merged flash image or bootloader? no app descriptor at 0x20" in failed[0].detail
    merged = images.merged_image(app)
    assert merged[fi.APP_OFFSET:] == app
    assert merged[images.PARTITION_TABLE_OFFSET:images.PARTITION_TABLE_OFFSET + 2] == b"\xaa\x50"
    hint = [c for c in fi.inspect_image(merged) if not c.ok][0].detail
    assert "merged flash image (bootloader at 0, app at 0x10000)" in hint


def test_device_files_are_lib_and_umqtt():
    if not os.path.isdir(images.UMQTT_DIR):
        pytest.skip(".mpy_packages/umqtt not fetched")
    names = [name for name, _ in images.device_files()]
    assert "ota/image.py" in names and "ota/errors.py" in names and "umqtt/simple.py" in names
    assert all(name.endswith(".py") for name in names)


def test_cli_build_then_inspect(tmp_path, capsys):
    out = tmp_path / "f.bin"
    src = tmp_path / "src"
    (src / "ota").mkdir(parents=True)
    (src / "ota" / "x.py").write_bytes(b"X = 1\n")
    assert cli.main(["image", "build", "--version", "1.0.1", "--size", str(REAL_APP_SIZE),
                           "--out", str(out), "--files-from", str(src)]) == 0
    assert len(out.read_bytes()) == REAL_APP_SIZE
    assert cli.main(["image", "inspect", str(out), "--chip-rev", "4"]) == 0
    text = capsys.readouterr().out
    assert "the device would accept this image" in text and "fits slot" in text
    assert "1713728 of 1900544 bytes" in text  # slot size read from the repository's partitions.csv


def test_cli_inspect_bad_image_exits_1_with_the_reason(tmp_path, capsys):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(images.with_chip_id(images.build_image("1.0.1"), 9))
    assert cli.main(["image", "inspect", str(bad)]) == 1
    captured = capsys.readouterr()
    assert "FAIL  chip" in captured.out and "wrong_chip" in captured.out
    assert captured.err.strip() == ("otactl: wrong_chip: image is for ESP32-S3 (chip id 9), "
                                    "this device is ESP32-C3 (5)")
    too_big = tmp_path / "big.bin"
    too_big.write_bytes(images.build_image("1.0.1", size=SLOT + 0x10000))
    assert cli.main(["image", "inspect", str(too_big)]) == 1
    assert capsys.readouterr().err.startswith("otactl: too_large: ")
