# esp_image_verify for an ESP32-C3 app image in flash (IDF bootloader_support/src/esp_image_format.c):
# magic 0xE9, segment count <= 16, chip id 0x0005, chip revision range, segment headers (length % 4,
# inside the partition), XOR checksum seeded 0xEF on the segment data, SHA-256 appended when
# hash_appended. It does NOT look at the app descriptor magic. What it does with a merged image or a
# bootloader in an app slot depends on the ESP-IDF (sim.json "idf_version", default the pinned
# firmware's 5.5.1; docs/CHIP.md):
# - ESP-IDF v5.2.3+, v5.3.2+ and v5.4+ read segment 0 as an esp_app_desc_t and check its eFuse block
#   revision range (min/max_efuse_blk_rev_full at +176/+178; 0 and 0xFFFF mean unset) against the
#   chip's (sim.json "efuse_blk_rev", default 0): a bootloader's bytes there usually fail it, so
#   set_boot() may refuse the image. v5.2.0-5.2.2 and v5.3.0-5.3.1 do not look: set_boot() accepts it.
# - the bootloader (boot=True) refuses, in every version, a segment that would load over its own RAM
#   (verify_load_addresses: "overlaps loader IRAM" / "bootloader data"), which a 2nd-stage bootloader's
#   segments always do, and boots another slot.
import hashlib
import struct

import simdev
import simflash

CHIP_ID_C3 = 0x0005
_buf = simflash.scratch  # the one shared scratch buffer (simflash.CHUNK bytes)
_view = memoryview(_buf)
_header = bytearray(24)


def chip_rev():
    # Full chip revision (major*100 + minor) of the simulated chip; sim.json "chip_rev", default v0.3.
    return simdev.config.get("chip_rev", 3)


# The C3's 2nd-stage bootloader RAM (components/bootloader/subproject/main/ld/esp32c3/bootloader.ld,
# the same in v5.2.2 and v5.4.1): iram_seg + iram_loader_seg, and dram_seg up to the usable end.
_BOOTLOADER_RAM = ((0x403CC710, 0x403D5710), (0x3FCD5710, 0x3FCDC710))


def _efuse_blk_check():
    # -> True when this ESP-IDF checks segment 0's eFuse block revision range (see above).
    major, minor, patch = (int(n) for n in (simdev.config.get("idf_version", "5.5.1") + ".0.0").split(".")[:3])
    return (major, minor) >= (5, 4) or (major, minor) == (5, 3) and patch >= 2 or \
        (major, minor) == (5, 2) and patch >= 3


def _check_efuse_blk(data_address):
    simflash.read(data_address + 176, _view[:4])
    low, high = struct.unpack_from("<HH", _buf, 0)
    rev = simdev.config.get("efuse_blk_rev", 0)
    if low not in (0, 0xFFFF) and rev < low or high not in (0, 0xFFFF) and rev > high:
        raise ValueError("image requires efuse blk rev %d..%d, chip is %d" % (low, high, rev))


def _check_load_address(index, load, length):
    for start, end in _BOOTLOADER_RAM:
        if load < end and start < load + length:
            raise ValueError("segment %d 0x%08x-0x%08x overlaps the bootloader's RAM" % (index, load, load + length))


def verify(address, size, boot=False):
    # -> (segments, image_length) where segments = [(data_address, data_length), ...].
    # Raises ValueError(reason) for an image the chip would not accept; boot=True: as the bootloader
    # loading it (load addresses checked too).
    if size < 24 + 8:
        raise ValueError("partition too small")
    simflash.read(address, _header)
    if _header[0] != 0xE9:
        raise ValueError("bad magic 0x%02x" % _header[0])
    count = _header[1]
    if count == 0 or count > 16:
        raise ValueError("bad segment count %d" % count)
    chip_id, _, min_rev, max_rev = struct.unpack_from("<HBHH", _header, 12)
    if chip_id != CHIP_ID_C3:
        raise ValueError("chip id 0x%04x is not an ESP32-C3" % chip_id)
    rev = chip_rev()
    if rev < min_rev or (max_rev != 0xFFFF and rev > max_rev):
        raise ValueError("chip revision %d outside %d..%d" % (rev, min_rev, max_rev))
    sha = hashlib.sha256()
    sha.update(_header)
    checksum = 0xEF
    pos = 24
    segments = []
    for _ in range(count):
        if pos + 8 > size:
            raise ValueError("segment header past the partition")
        seg = _view[:8]
        simflash.read(address + pos, seg)
        sha.update(seg)
        load, length = struct.unpack_from("<II", _buf, 0)
        pos += 8
        if length % 4 or pos + length > size:
            raise ValueError("bad segment length %d" % length)
        if boot:
            _check_load_address(len(segments), load, length)
        if not segments and _efuse_blk_check():
            _check_efuse_blk(address + pos)
        segments.append((address + pos, length))
        checksum = _feed(sha, address + pos, length, checksum)
        pos += length
    pad = 15 - pos % 16
    tail_len = pad + 1
    simflash.read(address + pos, _view[:tail_len])
    if _buf[pad] != checksum:
        raise ValueError("bad checksum 0x%02x, computed 0x%02x" % (_buf[pad], checksum))
    sha.update(_view[:tail_len])
    pos += tail_len
    if _header[23] == 1:
        if pos + 32 > size:
            raise ValueError("image does not fit the partition")
        digest = sha.digest()
        simflash.read(address + pos, _view[:32])
        if _buf[:32] != digest:
            raise ValueError("bad SHA-256")
        pos += 32
    if pos > size:
        raise ValueError("image does not fit the partition")
    return segments, pos


def _feed(sha, address, length, checksum):
    # Hash and XOR `length` bytes of segment data through the shared scratch buffer.
    done = 0
    size = len(_buf)
    while done < length:
        n = min(size, length - done)
        chunk = _view[:n] if n < size else _view
        simflash.read(address + done, chunk)
        sha.update(chunk)
        checksum = simflash.xor_bytes(_buf, n, checksum)
        done += n
    return checksum


def app_version(address):
    # version[32] of the app descriptor (image offset 0x30), '' when the descriptor magic is absent.
    simflash.read(address + 0x20, _view[:48])
    if struct.unpack_from("<I", _buf, 0)[0] != 0xABCD5432:
        return ""
    return bytes(_buf[16:48]).split(b"\0")[0].decode()
