"""Synthetic ESP32-C3 app images for the simulator, the tests, the demo and the benchmarks.

An image built here is a real ESP-IDF app image (docs/CHIP.md §3) that `esptool image-info`
reads as valid: header like a MicroPython C3 build (DIO, 80 MHz, 4 MB, chip revision v0.3..v1.99),
segment 0 = the esp_app_desc_t (so it lands at image offset 0x20, as in a real app), a payload
segment carrying the code of the version (sim/device/simpayload.py: the simulator unpacks it the way
a real board runs its frozen modules), then pseudo-random filler so a test image can be exactly as big
as the real 1,713,728-byte MicroPython app. Checksum and the appended SHA-256 are computed as esptool
does. Also the bad variants the tests need (another chip, a merged image, a bootloader, a broken
checksum or hash). Checking an image is otactl's (otactl/firmware_image.py), which these reuse.
"""
import hashlib
import os
import random
import struct

import sim
from otactl import partitions
from otactl.firmware_image import (  # the format's facts; tests read some from here
    APP_OFFSET, CHIP_ID_C3, CHIP_IDS, DESC_LEN, DROM, HASH_LEN, HEADER_LEN, IRAM, IROM, MMU_PAGE, PRODUCT,
    SEGMENT_HEADER_LEN, image_length)
from otactl.partitions import TABLE_OFFSET as PARTITION_TABLE_OFFSET

from ota import image_verify
from ota.errors import OtaError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

UMQTT_DIR = os.path.join(REPO, ".mpy_packages", "umqtt")

# Header bytes 2..3 of a MicroPython ESP32_GENERIC_C3 build: DIO, 4 MB flash, 80 MHz.
SPI_MODE_DIO = 2
SPI_SIZE_FREQ_4MB_80M = 0x2F
WP_PIN_DISABLED = 0xEE
APP_ENTRY = 0x403805C0  # IRAM, where ESP-IDF's call_start_cpu0 lands in a C3 app
BOOTLOADER_ENTRY = 0x403CC71A
DEFAULT_DATE = "Jan  1 2025"
DEFAULT_TIME = "00:00:00"


def _load_simpayload():
    # By file, not through sys.path: sim/device/ also holds the simulator's machine, network and ssl
    # modules, which must never shadow CPython's own in this process.
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "simpayload", os.path.join(os.path.dirname(os.path.abspath(sim.__file__)), "device", "simpayload.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


simpayload = _load_simpayload()


def _cstr(text, size):
    raw = text.encode() if isinstance(text, str) else bytes(text)
    if len(raw) >= size:
        raise OtaError("bad_image_field", "%r is longer than %d bytes" % (text, size - 1))
    return raw.ljust(size, b"\0")


def app_descriptor(version, project_name=PRODUCT, secure_version=0, idf_ver="v5.2.2",
                   date=DEFAULT_DATE, time=DEFAULT_TIME):
    """esp_app_desc_t (256 bytes) as ESP-IDF v5 lays it out (esptool cmds.py _parse_app_info)."""
    elf_sha = hashlib.sha256(("%s %s" % (project_name, version)).encode()).digest()
    desc = struct.pack("<II8s", 0xABCD5432, secure_version, b"\0" * 8)
    desc += _cstr(version, 32) + _cstr(project_name, 32) + _cstr(time, 16) + _cstr(date, 16)
    desc += _cstr(idf_ver, 32) + elf_sha
    desc += struct.pack("<HHB3s", 0, 199, 16, b"\0" * 3)  # efuse blk rev 0..v1.99, MMU page 2**16
    desc += b"\0" * 72
    assert len(desc) == DESC_LEN
    return desc


def _header(segment_count, entry, chip_id, min_rev, max_rev, hash_appended):
    return struct.pack("<BBBBIB3sHBHH4sB", 0xE9, segment_count, SPI_MODE_DIO, SPI_SIZE_FREQ_4MB_80M,
                       entry, WP_PIN_DISABLED, b"\0\0\0", chip_id, min_rev % 100, min_rev, max_rev,
                       b"\0" * 4, 1 if hash_appended else 0)


def checksum(segments):
    """ESP ROM checksum: XOR of every segment data byte, seeded with 0xEF."""
    value = 0xEF
    for _, data in segments:
        value ^= image_verify._xor(data, 0, len(data), 0)
    return value


def assemble(segments, entry=APP_ENTRY, chip_id=CHIP_ID_C3, min_rev=3, max_rev=199,
             hash_appended=True, segment_count=None):
    """Header + (load_addr, data) segments + padding + checksum (+ SHA-256). segment_count
    overrides the header's count (for broken test images)."""
    for addr, data in segments:
        if len(data) % 4:
            raise OtaError("bad_segments", "segment 0x%08x: length %d is not a multiple of 4"
                           % (addr, len(data)))
    parts = [_header(len(segments) if segment_count is None else segment_count, entry, chip_id,
                     min_rev, max_rev, hash_appended)]
    for addr, data in segments:
        parts.append(struct.pack("<II", addr, len(data)))
        parts.append(bytes(data))
    body = b"".join(parts)
    body += b"\0" * (15 - len(body) % 16) + bytes([checksum(segments)])
    if hash_appended:
        body += hashlib.sha256(body).digest()
    return body


def _mapped(base, offset):
    """A flash-mapped load address for data at file offset `offset` (same offset in the 64 KiB page)."""
    return base + offset % MMU_PAGE + MMU_PAGE * 2


def filler(length, seed=0):
    """Deterministic pseudo-random bytes standing in for the compiled firmware."""
    return random.Random(seed).randbytes(length)


def build_image(version, files=(), size=None, project_name=PRODUCT, secure_version=0,
                chip_id=CHIP_ID_C3, min_rev=3, max_rev=199, idf_ver="v5.2.2", hash_appended=True,
                extra_segments=(), seed=0, date=DEFAULT_DATE, time=DEFAULT_TIME, fill=None):
    """A valid ESP32-C3 app image whose app descriptor says `version`.

    files: (name, bytes) pairs packed into the payload segment (the code of this version).
    size: exact total length in bytes (a multiple of 16), reached with a filler segment in IROM;
    without it the filler is a token 4 KiB. extra_segments: more (load_addr, data) segments placed
    after the payload. fill: bytes for the filler segment instead of pseudo-random ones (compressed
    and delta updates need bytes that compress like firmware: devkit/firmware_bytes.py); repeated as
    needed. Raises OtaError bad_image_size when `size` cannot be met.
    """
    desc = app_descriptor(version, project_name, secure_version, idf_ver, date, time)
    payload = simpayload.pack(list(files))
    segments = [(DROM + 0x20, desc)]  # data at file offset 0x20 -> 0x3C000020, as in a real app
    offset = HEADER_LEN + SEGMENT_HEADER_LEN + len(desc)
    # frozen code lives in flash rodata (DROM) on a board; a token IRAM segment holds the entry point
    rest = [(DROM, payload)] + [tuple(s) for s in extra_segments] + [(IRAM, b"\x13\0\0\0" * 64)]
    for addr, data in rest:
        offset += SEGMENT_HEADER_LEN
        segments.append((_mapped(addr, offset) if addr in (DROM, IROM) else addr, data))
        offset += len(data)
    offset += SEGMENT_HEADER_LEN  # the filler's segment header
    filler_addr = _mapped(IROM, offset)
    tail = 1 + (HASH_LEN if hash_appended else 0)
    if size is None:
        filler_len = 4096
    else:
        if size % 16:
            raise OtaError("bad_image_size", "an image length is a multiple of 16, not %d" % size)
        room = size - tail - offset  # filler + padding (padding is 0..15, filler a multiple of 4)
        if room < 0:
            raise OtaError("bad_image_size", "%d bytes cannot hold this image: it needs at least %d"
                           % (size, offset + 16 + (tail - 1)))
        filler_len = room - room % 4
    if fill:
        data = bytes(fill) * (filler_len // len(fill) + 1)
        segments.append((filler_addr, data[:filler_len]))
    else:
        segments.append((filler_addr, filler(filler_len, seed)))
    if len(segments) > 16:
        raise OtaError("bad_segments", "%d segments, an image holds at most 16" % len(segments))
    image = assemble(segments, APP_ENTRY, chip_id, min_rev, max_rev, hash_appended)
    if size is not None and len(image) != size:
        raise OtaError("bad_image_size", "built %d bytes instead of %d" % (len(image), size))
    return image


def bootloader_image(seed=1, idf_ver="v5.2.2"):
    """Like a C3 second-stage bootloader: 0xE9, chip 5, esp_bootloader_desc_t in DRAM, no app
    descriptor. It passes magic, chip and checksum, as a real one does."""
    desc = struct.pack("<B3sI32s24s16s", 0x50, b"\0" * 3, 1, _cstr(idf_ver, 32),
                       _cstr(DEFAULT_DATE + " " + DEFAULT_TIME, 24), b"\0" * 16)
    segments = [
        (0x3FCD5820, desc + filler(0x18C0 - len(desc), seed)),
        (0x403CC710, filler(0x0C10, seed + 1)),
        (0x403CE710, filler(0x2F80, seed + 2)),
    ]
    return assemble(segments, BOOTLOADER_ENTRY, CHIP_ID_C3, 3, 199, True)


def partition_table(path=None):
    return partitions.to_binary(partitions.load(path or os.path.join(REPO, "partitions.csv")))


def merged_image(app, bootloader=None, table=None):
    """A merged flash image (MicroPython's firmware.bin): bootloader at 0, the partition table at
    0x8000, the app at 0x10000, 0xFF between them."""
    boot = bootloader_image() if bootloader is None else bootloader
    table = partition_table() if table is None else table
    blob = boot.ljust(PARTITION_TABLE_OFFSET, b"\xff") + table
    return blob.ljust(APP_OFFSET, b"\xff") + app


def rehash(image):
    """Recompute the appended SHA-256 (after a deliberate header patch)."""
    length = image_length(image)
    if not image[23]:
        return image
    body = image[:length - HASH_LEN]
    return body + hashlib.sha256(body).digest() + image[length:]


def with_chip_id(image, chip_id):
    """The same image claiming another chip (bytes 12..13), hash recomputed."""
    if isinstance(chip_id, str):
        chip_id = CHIP_IDS[chip_id]
    return rehash(image[:12] + struct.pack("<H", chip_id) + image[14:])


def with_chip_revision(image, min_rev, max_rev):
    patched = image[:14] + struct.pack("<BHH", min_rev % 100, min_rev, max_rev) + image[19:]
    return rehash(patched)


def _checksum_at(image):
    length = image_length(image)
    return length - 1 - (HASH_LEN if image[23] else 0)


def corrupt_checksum(image):
    """Wrong checksum byte, hash recomputed: only the checksum check fails."""
    at = _checksum_at(image)
    return rehash(image[:at] + bytes([image[at] ^ 0x5A]) + image[at + 1:])


def corrupt_hash(image):
    """Flip the same bit in two bytes of the last segment's data: the XOR checksum still matches
    (its blind spot), only the SHA-256 catches the corruption."""
    at = _checksum_at(image) - 64
    at -= at % 4
    blob = bytearray(image)
    blob[at] ^= 0x10
    blob[at + 4] ^= 0x10
    return bytes(blob)


def files_under(root, prefix="", python_only=False):
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(names):
            if name.startswith(".") or (python_only and not name.endswith(".py")):
                continue
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            with open(path, "rb") as f:
                files.append((prefix + rel, f.read()))
    return files


def device_files(repo=REPO):
    """The code frozen into our firmware: lib/**.py (as ota/...) and umqtt.simple (as umqtt/...)."""
    files = files_under(os.path.join(repo, "lib"), python_only=True)
    umqtt = os.path.join(repo, ".mpy_packages", "umqtt")
    if not os.path.isdir(umqtt):
        raise OtaError("missing_package", "%s is missing: run `make venv` to fetch micropython-umqtt.simple"
                       % umqtt)
    return files + files_under(umqtt, "umqtt/", python_only=True)
