# ESP32-C3 app images (docs/CHIP.md §3): the header checks on the first chunk, before a byte
# is written. The rest of the image is checked as it streams by image_verify.Verifier.
# Runs on the device and on the host (otactl image inspect imports this very file).
from ota.errors import OtaError

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

HEADER_BYTES = const(0x100)  # check_header needs this many bytes from the start of the image
CHIP_ID = const(5)  # ESP32-C3
_MAGIC = const(0xE9)
_DESC_MAGIC = const(0xABCD5432)
_DESC_OFFSET = const(0x20)
_DESC_LEN = const(0x100)
MAX_SEGMENTS = const(16)
SIXTEEN_MB = const(0x1000000)  # a segment length must stay below it
_HASH_LEN = const(32)

_CHIPS = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 12: "ESP32-C2", 13: "ESP32-C6",
          16: "ESP32-H2"}


def u16(b, at):
    return b[at] | b[at + 1] << 8


def u32(b, at):
    return b[at] | b[at + 1] << 8 | b[at + 2] << 16 | b[at + 3] << 24


def _text(b, at, size):
    raw = bytes(b[at:at + size])
    end = raw.find(b"\0")
    try:
        return (raw if end < 0 else raw[:end]).decode()
    except UnicodeError:
        raise OtaError("not_app_image", "app descriptor field at 0x%x is not text" % at)


def _revision(full):
    return "v%d.%d" % (full // 100, full % 100)


# The checks of check_header, one function each so the host inspector can run every one of them.
# Each raises OtaError with the reason code in its name's check.
def check_magic(first):
    if first[0] != _MAGIC:
        raise OtaError("not_app_image", "first byte 0x%02x, an app image starts with 0xE9" % first[0])
    if first[23] > 1:
        raise OtaError("not_app_image", "hash_appended byte is 0x%02x, not 0 or 1" % first[23])


def check_chip(first):
    chip = u16(first, 12)
    if chip != CHIP_ID:
        raise OtaError("wrong_chip", "image is for %s (chip id %d), this device is ESP32-C3 (%d)"
                       % (_CHIPS.get(chip, "an unknown chip"), chip, CHIP_ID))


def check_revision(first, chip_rev):
    # chip_rev: major * 100 + minor, as in the header; the bootloader's rules (max 0 or 0xFFFF = any)
    low = u16(first, 15)
    high = u16(first, 17)
    if chip_rev < low:
        raise OtaError("chip_revision", "image needs chip revision >= %s, this chip is %s"
                       % (_revision(low), _revision(chip_rev)))
    if high not in (0, 0xFFFF) and chip_rev > high:
        raise OtaError("chip_revision", "image supports chip revision <= %s, this chip is %s"
                       % (_revision(high), _revision(chip_rev)))


def check_segments(first, slot_size):
    count = first[1]
    if not 1 <= count <= MAX_SEGMENTS:
        raise OtaError("bad_segments", "%d segments (1..16)" % count)
    length = u32(first, 28)
    if length % 4 or length >= SIXTEEN_MB:
        raise OtaError("bad_segments", "segment 0 length 0x%x is invalid" % length)
    need = 24 + 8 + length + 1 + (_HASH_LEN if first[23] else 0)
    if slot_size is not None and need > slot_size:
        raise OtaError("too_large", "segment 0 alone needs %d bytes, the slot holds %d" % (need, slot_size))


def parse_descriptor(first):
    # esp_app_desc_t at image offset 0x20 -> dict. A merged flash image starts with the bootloader,
    # whose header also says 0xE9 / ESP32-C3: only this magic tells an app from it.
    if len(first) < _DESC_OFFSET + 0xB0:
        raise OtaError("truncated", "need %d bytes of the image, got %d" % (HEADER_BYTES, len(first)))
    if u32(first, _DESC_OFFSET) != _DESC_MAGIC:
        raise OtaError("not_app_image", "merged flash image or bootloader? no app descriptor at 0x20")
    return {
        "secure_version": u32(first, 0x24),
        "version": _text(first, 0x30, 32),
        "project_name": _text(first, 0x50, 32),
        "time": _text(first, 0x70, 16),
        "date": _text(first, 0x80, 16),
        "idf_ver": _text(first, 0x90, 32),
    }


def check_header(first, slot_size, chip_rev=None):
    # first: the first HEADER_BYTES (or more) bytes of the image. Returns the descriptor dict plus
    # header fields. Raises OtaError truncated, not_app_image, wrong_chip, chip_revision,
    # bad_segments, too_large.
    if len(first) < HEADER_BYTES:
        raise OtaError("truncated", "need %d bytes of the image, got %d" % (HEADER_BYTES, len(first)))
    check_magic(first)
    check_chip(first)
    if chip_rev is not None:
        check_revision(first, chip_rev)
    check_segments(first, slot_size)
    info = parse_descriptor(first)
    if u32(first, 28) < _DESC_LEN:
        raise OtaError("bad_segments", "segment 0 is shorter than the app descriptor")
    info["min_rev"] = u16(first, 15)
    info["max_rev"] = u16(first, 17)
    info["segment_count"] = first[1]
    info["hash_appended"] = first[23] == 1
    return info
