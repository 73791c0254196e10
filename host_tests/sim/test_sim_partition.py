"""The simulated esp32.Partition, otadata and bootloader, run in-process under CPython (fast).

Each test gets a fresh device folder; the sim modules are reloaded so their per-process state
(counters, faults, parsed table) starts clean, as a new MicroPython process would."""
import importlib
import json
import os
import struct
import sys

import pytest

from test_sim_image import DEVICE_DIR, build_test_image
from sim.runner import Device

SLOT = 0x1D0000
V1 = build_test_image("1.0.0", [("app.py", b"VERSION = '1.0.0'\n")])
V2 = build_test_image("2.0.0", [("app.py", b"VERSION = '2.0.0'\n")])


def power_on(devdir, running=None):
    """A new 'process' on the device: fresh sim modules; runs the bootloader unless `running`."""
    mods = {}
    saved_path = list(sys.path)
    saved_esp32 = sys.modules.pop("esp32", None)  # another test's fake, put back below
    sys.path.insert(0, DEVICE_DIR)
    try:
        for name in ("simdev", "simflash", "simtable", "simotadata", "simimage", "simbootloader", "esp32"):
            sys.modules.pop(name, None)  # a fresh import, in dependency order, per "process"
            mods[name] = importlib.import_module(name)
    finally:
        sys.path[:] = saved_path
        sys.modules.pop("esp32", None)
        if saved_esp32 is not None:
            sys.modules["esp32"] = saved_esp32
    mods["simdev"].init(str(devdir))
    mods["simflash"].open_flash()
    mods["simtable"].load()
    if running is None:
        mods["boot"] = mods["simbootloader"].boot()
        running = mods["boot"]["slot"]
    mods["simdev"].running = running
    return mods


def end_process(mods, marker="exit"):
    mods["simflash"].save_counters(marker)
    mods["simflash"]._file.close()


@pytest.fixture
def dev(tmp_path):
    device = Device(tmp_path / "dev")
    device.create(V1)
    return device


@pytest.fixture
def sim(dev):
    mods = power_on(dev.devdir)
    yield mods
    mods["simflash"]._file.close()


def oserror_args(call, *args):
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value.args


# --- constructor, find, info ------------------------------------------------------------------
def test_constructor_ids_labels_and_errors(sim):
    P = sim["esp32"].Partition
    assert (P.BOOT, P.RUNNING, P.TYPE_APP, P.TYPE_DATA) == (0, 1, 0, 1)
    assert P(P.RUNNING).info() == (0, 0x10, 0x10000, SLOT, "ota_0", False)
    assert P(P.BOOT).info()[4] == "ota_0"
    assert P("otadata").info() == (1, 0x00, 0xD000, 0x2000, "otadata", False)
    with pytest.raises(ValueError):
        P(2)
    assert oserror_args(P, "nope") == (2,)
    with pytest.raises(TypeError):
        P(id=1)
    assert P("vfs", 512).ioctl(5, 0) == 512


def test_find_in_table_order_new_objects(sim):
    P = sim["esp32"].Partition
    apps = P.find(P.TYPE_APP)
    assert [p.info()[4] for p in apps] == ["ota_0", "ota_1"]
    assert [p.info()[4] for p in P.find(P.TYPE_DATA)] == ["nvs", "otadata", "phy_init", "vfs"]
    assert [p.info()[4] for p in P.find(P.TYPE_DATA, subtype=0x81)] == ["vfs"]
    assert P.find(P.TYPE_APP, label="ota_1")[0].info()[2] == 0x1E0000
    assert P.find(P.TYPE_APP)[0] is not P.find(P.TYPE_APP)[0]


def test_get_next_update(sim):
    P = sim["esp32"].Partition
    assert P("ota_0").get_next_update().info()[4] == "ota_1"
    assert P("ota_1").get_next_update().info()[4] == "ota_0"
    assert P("vfs").get_next_update().info()[4] == "ota_0"


# --- blocks, NOR semantics, bounds ------------------------------------------------------------
def test_writeblocks_erases_readblocks_reads(sim):
    part = sim["esp32"].Partition("ota_1")
    part.writeblocks(1, bytes(range(256)) * 16)
    buf = bytearray(16)
    part.readblocks(1, buf, 16)
    assert bytes(buf) == bytes(range(16, 32))
    part.writeblocks(1, b"\xff" * 4096)
    part.readblocks(1, buf)
    assert bytes(buf) == b"\xff" * 16
    counters = sim["simflash"].counters  # the first boot also wrote otadata: 1 erase, 32 bytes
    assert counters["sector_erases"] == 1 + 2 and counters["bytes_programmed"] == 32 + 8192
    assert counters["dirty_programs"] == 0


def test_three_arg_write_never_erases_and_ands(sim):
    part = sim["esp32"].Partition("ota_1")
    part.writeblocks(0, b"\x0f" * 4096)
    part.writeblocks(0, b"\xf3\xf3", 10)
    buf = bytearray(4)
    part.readblocks(0, buf, 9)
    assert bytes(buf) == b"\x0f\x03\x03\x0f"
    counters = sim["simflash"].counters
    assert counters["sector_erases"] == 1 + 1
    assert counters["dirty_programs"] == 1 and counters["overprogrammed_bytes"] == 2


def test_invalid_size_writes_nothing(sim):
    part = sim["esp32"].Partition("ota_1")
    part.writeblocks(0, b"\0" * 4096)
    assert oserror_args(part.writeblocks, 0, b"\x11" * 100) == (-260, "ESP_ERR_INVALID_SIZE")
    buf = bytearray(4)
    part.readblocks(0, buf)
    assert bytes(buf) == b"\0\0\0\0"


def test_bounds_errors(sim):
    part = sim["esp32"].Partition("phy_init")  # 4096 bytes
    buf = bytearray(16)
    assert oserror_args(part.readblocks, 2, buf) == (-258, "ESP_ERR_INVALID_ARG")
    assert oserror_args(part.readblocks, 0, buf, 4090) == (-260, "ESP_ERR_INVALID_SIZE")
    assert oserror_args(part.writeblocks, 0, b"\0" * 8192) == (-260, "ESP_ERR_INVALID_SIZE")
    assert oserror_args(part.writeblocks, 0, b"\0" * 16, 4095) == (-260, "ESP_ERR_INVALID_SIZE")
    with pytest.raises(OSError) as info:
        part.readblocks(0, bytearray(8192))
    assert info.value.errno == -260


def test_ioctl(sim):
    P = sim["esp32"].Partition
    part = P("ota_1")
    assert [part.ioctl(c, 0) for c in (1, 2, 3, 4, 5)] == [0, 0, 0, SLOT // 4096, 4096]
    part.writeblocks(3, b"\0" * 4096)
    assert part.ioctl(6, 3) == 0
    buf = bytearray(4)
    part.readblocks(3, buf)
    assert bytes(buf) == b"\xff" * 4
    assert part.ioctl(99, 0) is None
    assert P("ota_1", 512).ioctl(6, 0) == -22


# --- otadata ----------------------------------------------------------------------------------
def test_crc_vectors(sim):
    crc = sim["simotadata"].crc
    assert (crc(1), crc(2), crc(3)) == (0x4743989A, 0x55F63774, 0xED4A5011)


def test_first_boot_from_blank_otadata_writes_seq1_valid(dev, sim):
    assert sim["boot"]["slot"] == "ota_0" and sim["boot"]["state"] == "VALID"
    data = dev.read_otadata()
    assert data["entries"][0]["seq"] == 1 and data["entries"][0]["state_name"] == "VALID"
    assert data["entries"][1]["seq"] == 0xFFFFFFFF


def test_set_boot_sequence_rules(dev, sim):
    P = sim["esp32"].Partition
    dev.write_slot("ota_1", V2)
    P("ota_1").set_boot()                  # active seq 1 (sector 0) -> seq 2 in sector 1
    assert [e["seq"] for e in dev.read_otadata()["entries"]] == [1, 2]
    assert dev.read_otadata()["entries"][1]["state_name"] == "NEW"
    P("ota_0").set_boot()                  # active seq 2 (sector 1) -> seq 3 in sector 0
    assert [e["seq"] for e in dev.read_otadata()["entries"]] == [3, 2]
    P("ota_0").set_boot()                  # active seq 3 (sector 0), ota_0 again -> seq 3 in sector 1
    data = dev.read_otadata()
    assert [e["seq"] for e in data["entries"]] == [3, 3] and data["slot"] == "ota_0"


@pytest.mark.parametrize("seq,slot,expect_sector,expect_seq", [
    (5, 0, 1, 5), (5, 1, 1, 6), (6, 0, 1, 7), (6, 1, 1, 6), (0x10, 1, 1, 0x10)])
def test_set_boot_from_active_seq(dev, seq, slot, expect_sector, expect_seq):
    otadata = dev.partition("otadata").offset
    entry = struct.pack("<I20sII", seq, b"\xff" * 20, 2, _crc(seq))
    dev.write_flash(otadata, entry)
    dev.write_slot("ota_1", V2)
    mods = power_on(dev.devdir, running="ota_0")
    mods["esp32"].Partition("ota_%d" % slot).set_boot()
    entries = dev.read_otadata()["entries"]
    assert entries[expect_sector]["seq"] == expect_seq and entries[expect_sector]["state_name"] == "NEW"
    assert dev.read_otadata()["slot"] == "ota_%d" % slot


def _crc(seq):
    import binascii
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


def test_rollback_sequence(dev, sim):
    dev.write_slot("ota_1", V2)
    sim["esp32"].Partition("ota_1").set_boot()
    end_process(sim, "reset")
    second = power_on(dev.devdir)
    assert second["boot"]["slot"] == "ota_1" and second["boot"]["state"] == "PENDING_VERIFY"
    assert second["boot"]["version"] == "2.0.0"
    end_process(second, "reset")           # reset without mark_app_valid_cancel_rollback
    third = power_on(dev.devdir)
    assert third["boot"]["slot"] == "ota_0" and third["boot"]["state"] == "VALID"
    assert dev.read_otadata()["entries"][1]["state_name"] == "ABORTED"
    end_process(third)


def test_confirm_makes_new_slot_stick(dev, sim):
    dev.write_slot("ota_1", V2)
    sim["esp32"].Partition("ota_1").set_boot()
    end_process(sim, "reset")
    second = power_on(dev.devdir)
    second["esp32"].Partition.mark_app_valid_cancel_rollback()
    assert dev.read_otadata()["entries"][1]["state_name"] == "VALID"
    erases = second["simflash"].counters["sector_erases"]
    second["esp32"].Partition.mark_app_valid_cancel_rollback()  # already VALID: no flash write
    assert second["simflash"].counters["sector_erases"] == erases
    end_process(second, "reset")
    assert power_on(dev.devdir)["boot"]["slot"] == "ota_1"


def test_mark_valid_with_blank_otadata_is_esp_fail(dev):
    mods = power_on(dev.devdir, running="ota_0")  # no bootloader step: otadata stays blank
    assert oserror_args(mods["esp32"].Partition.mark_app_valid_cancel_rollback) == (1, "ESP_FAIL")


def test_mark_valid_without_otadata_partition(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("nvs, data, nvs, 0x9000, 0x6000,\nfactory, app, factory, 0x10000, 0x100000,\n")
    device = Device(tmp_path / "d", partitions_csv=str(csv)).create(V1)
    mods = power_on(device.devdir)
    assert mods["boot"]["slot"] == "factory"
    P = mods["esp32"].Partition
    assert oserror_args(P.mark_app_valid_cancel_rollback) == (-261, "ESP_ERR_NOT_FOUND")
    assert oserror_args(P(P.RUNNING).get_next_update) == (2,)


def test_bootloader_falls_back_when_active_image_is_broken(dev, sim):
    dev.write_slot("ota_1", V2)
    sim["esp32"].Partition("ota_1").set_boot()
    end_process(sim, "reset")
    broken = bytearray(V2)
    broken[-40] ^= 0xFF
    dev.write_slot("ota_1", bytes(broken))
    mods = power_on(dev.devdir)
    assert mods["boot"]["slot"] == "ota_0" and mods["boot"]["fallback"] is True
    assert dev.read_otadata()["entries"][1]["state_name"] == "PENDING_VERIFY"


# --- image validation in set_boot -------------------------------------------------------------
def _corrupt(image, offset, value):
    data = bytearray(image)
    data[offset] = value
    return bytes(data)


@pytest.mark.parametrize("name,image", [
    ("magic", _corrupt(V2, 0, 0xE8)),
    ("chip_id", build_test_image("2.0.0", [("a.py", b"")], chip_id=0)),
    ("min_rev", build_test_image("2.0.0", [("a.py", b"")], min_rev=101)),
    ("max_rev", build_test_image("2.0.0", [("a.py", b"")], min_rev=0, max_rev=2)),
    ("checksum", _corrupt(V2, len(V2) - 33, V2[len(V2) - 33] ^ 1)),
    ("hash", _corrupt(V2, len(V2) - 1, V2[-1] ^ 1)),
    ("data", _corrupt(V2, 0x40, V2[0x40] ^ 1)),
    ("too_big", build_test_image("2.0.0", pad_to=SLOT + 4096)[:SLOT]),
    ("erased", b""),
])
def test_set_boot_rejects_invalid_images(dev, sim, name, image):
    dev.write_slot("ota_1", image)
    before = dev.read_flash(dev.partition("otadata").offset, 0x2000)
    part = sim["esp32"].Partition("ota_1")
    assert oserror_args(part.set_boot) == (-5379, "ESP_ERR_OTA_VALIDATE_FAILED")
    assert dev.read_flash(dev.partition("otadata").offset, 0x2000) == before


def test_set_boot_accepts_image_without_app_descriptor_magic(dev, sim):
    merged_like = build_test_image("2.0.0", [("a.py", b"")], desc_magic=0)
    dev.write_slot("ota_1", merged_like)
    sim["esp32"].Partition("ota_1").set_boot()
    assert dev.read_otadata()["slot"] == "ota_1"


def test_idf_heap_info(sim):
    esp32 = sim["esp32"]
    info = esp32.idf_heap_info(esp32.HEAP_DATA)
    assert isinstance(info, list) and all(len(region) == 4 for region in info)


# --- faults (CPython: die() raises Died instead of killing the process) ------------------------
def test_cut_at_named_point_is_consumed(dev, sim):
    dev.write_slot("ota_1", V2)
    dev.set_fault(point="otadata_erase", count=1)
    mods = power_on(dev.devdir, running="ota_0")
    with pytest.raises(mods["simdev"].Died) as info:
        mods["esp32"].Partition("ota_1").set_boot()
    assert info.value.marker == "power_cut"
    assert dev.faults() == [] and dev.last_exit() == "power_cut"
    assert dev.counters()["boots"][-1]["exit"] == "power_cut"
    assert dev.read_otadata()["entries"][1]["seq"] == 0xFFFFFFFF  # erased, never written
    assert power_on(dev.devdir)["boot"]["slot"] == "ota_0"


def test_cut_after_bytes_programs_partially(dev, sim):
    end_process(sim)
    dev.set_fault(cut_after_bytes=5000)
    mods = power_on(dev.devdir, running="ota_0")
    part = mods["esp32"].Partition("ota_1")
    part.writeblocks(0, b"\0" * 4096)
    with pytest.raises(mods["simdev"].Died):
        part.writeblocks(1, b"\0" * 4096)
    p = dev.partition("ota_1").offset
    assert dev.read_flash(p + 4096, 904) == b"\0" * 904
    assert dev.read_flash(p + 5000, 16) == b"\xff" * 16
    record = dev.counters()["boots"][-1]
    assert record["bytes_programmed"] == 5000 and record["erases_by_partition"] == {"ota_1": 2}
    assert json.loads(open(os.path.join(dev.devdir, "faults.json")).read()) == []


# --- merged images and bootloaders in an app slot, per ESP-IDF version (docs/CHIP.md) ---------------
def _not_an_app(kind):
    from devkit import images

    boot = images.bootloader_image()
    return boot if kind == "bootloader" else images.merged_image(V2, boot)[:SLOT]


@pytest.mark.parametrize("kind", ["bootloader", "merged"])
def test_old_idf_set_boot_accepts_a_merged_image_and_the_bootloader_boots_the_other_slot(tmp_path, kind):
    # ESP-IDF v5.2.0-5.2.2 and v5.3.0-5.3.1: set_boot() verifies magic, chip, segments, checksum and
    # hash, all of which a bootloader passes; at the reset the bootloader will not load segments over
    # its own RAM and boots ota_0 again.
    device = Device(tmp_path / "dev").create(V1, idf_version="5.2.2")
    mods = power_on(device.devdir)
    device.write_slot("ota_1", _not_an_app(kind))
    mods["esp32"].Partition("ota_1").set_boot()
    assert device.read_otadata()["slot"] == "ota_1"
    end_process(mods, "reset")
    mods = power_on(device.devdir)
    assert mods["boot"]["slot"] == "ota_0"
    end_process(mods)


@pytest.mark.parametrize("idf", ["5.2.3", "5.3.2", "5.4.1", "5.5.1"])
@pytest.mark.parametrize("kind", ["bootloader", "merged"])
def test_newer_idf_set_boot_refuses_a_merged_image_by_its_efuse_block_range(tmp_path, kind, idf):
    # From v5.2.3, v5.3.2 and v5.4 segment 0 is read as an app descriptor and its eFuse block revision
    # range checked: a bootloader's bytes there (ours: nonzero filler) fail it.
    device = Device(tmp_path / "dev").create(V1, idf_version=idf)
    mods = power_on(device.devdir)
    device.write_slot("ota_1", _not_an_app(kind))
    before = device.read_flash(device.partition("otadata").offset, 0x2000)
    assert oserror_args(mods["esp32"].Partition("ota_1").set_boot) == (-5379, "ESP_ERR_OTA_VALIDATE_FAILED")
    assert device.read_flash(device.partition("otadata").offset, 0x2000) == before
    end_process(mods)


def test_an_app_image_with_an_efuse_block_range_the_chip_is_outside_is_refused(tmp_path):
    image = bytearray(V2)
    image[0x20 + 176:0x20 + 180] = bytes([0x64, 0, 0x63, 0])  # min v1.00, max v0.99: nothing fits
    device = Device(tmp_path / "dev").create(V1, idf_version="5.4.1")
    mods = power_on(device.devdir)
    device.write_slot("ota_1", bytes(image))
    part = device.partition("ota_1")
    with pytest.raises(ValueError, match="efuse blk rev 100..99, chip is 0"):
        mods["simimage"].verify(part.offset, part.size)
    end_process(mods)
