"""ESP32-C3 app images on the host: build test/release images, inspect any image file.

An image built here is a real ESP-IDF app image (docs/CHIP.md §3) that `esptool image-info`
reads as valid: header like a MicroPython C3 build (DIO, 80 MHz, 4 MB, chip revision v0.3..v1.99),
segment 0 = the esp_app_desc_t (so it lands at image offset 0x20, as in a real app), a payload
segment carrying the code of the version (sim/device/simpayload.py: the simulator unpacks it the way
a real board runs its frozen modules), then pseudo-random filler so a test image can be exactly as big
as the real 1,713,728-byte MicroPython app. Checksum and the appended SHA-256 are computed as esptool
does.

The inspector runs the device's own checks (lib/ota/image.py, imported from <repo>/lib) so the host
and the device cannot disagree about an image, and adds host-only explanations.
"""
import hashlib
import os
import random
import struct

from . import REPO  # the package puts lib/ on sys.path
from .partitions import TABLE_OFFSET as PARTITION_TABLE_OFFSET
from .errors import OtaError

from ota import compat  # noqa: E402  the device's code, not a copy
from ota import image as device_image  # noqa: E402
from ota import image_verify  # noqa: E402
from ota.errors import OtaError as DeviceError  # noqa: E402


def _load_simpayload():
    # By file, not through sys.path: sim/device/ also holds the simulator's machine, network and ssl
    # modules, which must never shadow CPython's own in this process.
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "simpayload", os.path.join(REPO, "sim", "device", "simpayload.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


simpayload = _load_simpayload()

CHIP_ID_C3 = 5
# The app descriptor's project_name of our firmware: ESP-IDF writes the CMake project() name there
# (components/esp_app_format), which MicroPython's ports/esp32/CMakeLists.txt calls "micropython";
# our board turns CONFIG_APP_EXCLUDE_PROJECT_NAME_VAR off (firmware/boards/OTA_SWITCH_C3), stock
# builds leave it on and the field empty. Images built here carry the same name, so the simulator
# runs what a board runs. docs/DESIGN.md "Which images a device takes".
PRODUCT = "micropython"
CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c2": 12, "esp32c6": 13,
            "esp32h2": 16}
APP_OFFSET = 0x10000  # where the app lives in a merged flash image (firmware.bin)

# Header bytes 2..3 of a MicroPython ESP32_GENERIC_C3 build: DIO, 4 MB flash, 80 MHz.
SPI_MODE_DIO = 2
SPI_SIZE_FREQ_4MB_80M = 0x2F
WP_PIN_DISABLED = 0xEE
APP_ENTRY = 0x403805C0  # IRAM, where ESP-IDF's call_start_cpu0 lands in a C3 app
BOOTLOADER_ENTRY = 0x403CC71A

# ESP32-C3 memory map (esptool targets/esp32c3.py). Flash-mapped segments must have
# load_addr % 64 KiB == file offset % 64 KiB (esp_image_format.c verify_segment_header).
DROM = 0x3C000000
IROM = 0x42000000
IRAM = 0x40380000
DRAM = 0x3FC80000
MMU_PAGE = 0x10000

HEADER_LEN = 24
SEGMENT_HEADER_LEN = 8
HASH_LEN = 32
DESC_LEN = 256
DEFAULT_DATE = "Jan  1 2025"
DEFAULT_TIME = "00:00:00"


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
    and delta updates need bytes that compress like firmware: sim/firmware_bytes.py); repeated as
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
    from . import partitions
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


def image_length(image):
    """Length of the image in `image` (bytes after it are padding); OtaError if it is not whole."""
    verifier = image_verify.Verifier(None)
    try:
        verifier.feed(memoryview(image))
    except DeviceError as e:
        raise OtaError(e.reason, e.detail)
    if verifier.image_length is None or verifier.position < verifier.image_length:
        raise OtaError("truncated", "the image is not complete (%d bytes)" % len(image))
    return verifier.image_length


def segments_of(image):
    """[(index, file offset of the data, load address, length)] as far as the blob holds them."""
    rows = []
    if len(image) < HEADER_LEN:
        return rows
    at = HEADER_LEN
    for index in range(image[1]):
        if at + SEGMENT_HEADER_LEN > len(image):
            break
        addr, length = struct.unpack_from("<II", image, at)
        rows.append((index, at + SEGMENT_HEADER_LEN, addr, length))
        at += SEGMENT_HEADER_LEN + length
    return rows


def memory_type(addr):
    for low, high, name in ((DROM, DROM + 0x800000, "DROM"), (IROM, IROM + 0x800000, "IROM"),
                            (0x3FC80000, 0x3FCE0000, "DRAM"), (0x4037C000, 0x403E0000, "IRAM"),
                            (0x50000000, 0x50002000, "RTC")):
        if low <= addr < high:
            return name
    return "?"


class Check(tuple):
    """(name, ok, reason, detail): reason is the device's reason code when ok is False."""
    __slots__ = ()

    def __new__(cls, name, ok, reason=None, detail=""):
        return tuple.__new__(cls, (name, ok, reason, detail))

    name = property(lambda self: self[0])
    ok = property(lambda self: self[1])
    reason = property(lambda self: self[2])
    detail = property(lambda self: self[3])


class Inspection(list):
    """The list of Check rows, plus `info` (descriptor and header fields) and `verdict`: None when
    the device would accept the image, else (reason, detail) exactly as the device raises it."""
    info = None
    verdict = None

    @property
    def ok(self):
        return self.verdict is None

    def refusal(self):
        """(reason, detail) of the verdict, the detail from the failing row: the device's words plus
        the host's explanation (a merged image, a foreign chip ...). None when the image is accepted."""
        if self.verdict is None:
            return None
        reason, detail = self.verdict
        rows = [c for c in self if not c.ok and c.reason == reason]
        return reason, rows[0].detail if rows else detail


def _device_verdict(blob, slot_size, chip_rev, device):
    """What the device does with this file: check_header and compat.check on the first chunk (before
    it writes anything), then the Verifier as it streams. device: compat.check's keyword arguments."""
    try:
        info = device_image.check_header(memoryview(blob)[:device_image.HEADER_BYTES], slot_size, chip_rev)
        compat.check(info, **device)
        verifier = image_verify.Verifier(slot_size)
        view = memoryview(blob)
        for at in range(0, len(blob), 4096):
            verifier.feed(view[at:at + 4096])
        verifier.finish()
    except DeviceError as e:
        return (e.reason, e.detail)
    return None


def device_context(running_project=PRODUCT, running_version=None, version=None, project=None,
                   allow_downgrade=False):
    """What the inspector assumes about the device and the trigger: a device running our firmware
    (of an unknown version unless given), a trigger without version or project."""
    return {"running_project": running_project, "running_version": running_version, "version": version,
            "project": project, "allow_downgrade": allow_downgrade}


def _row(checks, name, check, ok_detail):
    try:
        check()
    except DeviceError as e:
        checks.append(Check(name, False, e.reason, e.detail))
        return False
    checks.append(Check(name, True, None, ok_detail() if callable(ok_detail) else ok_detail))
    return True


def _not_an_app_hint(blob):
    """Host-only: say what the file is when it is not an app."""
    if len(blob) > APP_OFFSET + 0x100 and blob[APP_OFFSET] == 0xE9:
        try:
            device_image.parse_descriptor(blob[APP_OFFSET:APP_OFFSET + 0x100])
            return ("; it is a merged flash image (bootloader at 0, app at 0x%x): use the app "
                    "alone (micropython.bin), not firmware.bin" % APP_OFFSET)
        except DeviceError:
            pass
    if len(blob) > 0x20 and blob[0x20] == 0x50:
        return "; it looks like a second-stage bootloader (esp_bootloader_desc_t at 0x20)"
    return ""


def inspect_image(blob, slot_size=None, chip_rev=None, device=None):
    """Every check of the device (lib/ota/image.py, compat.py) on `blob`, one row each, even after a
    failure: magic, chip, chip revision, app descriptor, product, version, segments, checksum,
    appended hash, fits slot. device: device_context() (default: a device running our firmware)."""
    blob = bytes(blob)
    device = device_context() if device is None else device
    checks = Inspection()
    checks.info = {"file_length": len(blob)}
    checks.verdict = _device_verdict(blob, slot_size, chip_rev, device)
    if len(blob) < HEADER_LEN:
        checks.append(Check("magic", False, "truncated", "%d bytes, a header is 24" % len(blob)))
        return checks
    first = blob[:device_image.HEADER_BYTES]
    min_rev, max_rev = struct.unpack_from("<HH", blob, 15)
    checks.info.update(min_rev=min_rev, max_rev=max_rev, segment_count=blob[1],
                       hash_appended=blob[23] == 1, entry="0x%08x" % struct.unpack_from("<I", blob, 4))
    _row(checks, "magic", lambda: device_image.check_magic(first), "0xE9")
    chip = struct.unpack_from("<H", blob, 12)[0]
    _row(checks, "chip", lambda: device_image.check_chip(first), "ESP32-C3 (chip id %d)" % chip)
    span = "v%d.%d..v%d.%d" % (min_rev // 100, min_rev % 100, max_rev // 100, max_rev % 100)
    if chip_rev is None:
        checks.append(Check("chip revision", True, None, "image runs on %s (no chip revision given)"
                            % span))
    else:
        _row(checks, "chip revision", lambda: device_image.check_revision(first, chip_rev),
             "v%d.%d is within %s" % (chip_rev // 100, chip_rev % 100, span))

    def descriptor():
        info = device_image.parse_descriptor(first)
        checks.info.update(info)
        if len(blob) >= 32 and struct.unpack_from("<I", blob, 28)[0] < DESC_LEN:
            raise DeviceError("bad_segments", "segment 0 is shorter than the app descriptor")

    if not _row(checks, "app descriptor", descriptor,
                lambda: "version %r, project %r" % (checks.info["version"], checks.info["project_name"])):
        name, ok, reason, detail = checks[-1]
        checks[-1] = Check(name, ok, reason, detail + _not_an_app_hint(blob))
    else:
        _row(checks, "product", lambda: compat.check_project(
            checks.info["project_name"], device["running_project"], device["project"]),
            lambda: "%r, as the device runs" % checks.info["project_name"] if device["project"] is None
            else "%r, as the trigger's project %r allows" % (checks.info["project_name"], device["project"]))
        _row(checks, "version", lambda: compat.check_version(
            checks.info["version"], device["running_version"], device["version"], device["allow_downgrade"]),
            lambda: "%r against the running %s" % (checks.info["version"] or device["version"] or "",
                                                   device["running_version"] or "(not given)"))

    verifier = image_verify.Verifier(None)
    try:
        verifier.feed(memoryview(blob))
        verifier.finish()
    except DeviceError as e:
        failure = e
    else:
        failure = None
    layout = ", ".join("%s %d" % (memory_type(addr), length)
                       for _, _, addr, length in segments_of(blob))
    if failure is not None and failure.reason in ("not_app_image", "bad_segments", "truncated"):
        checks.append(Check("segments", False, failure.reason, "%s [%s]" % (failure.detail, layout)))
    else:
        extra = len(blob) - verifier.image_length
        checks.append(Check("segments", True, None, "%d: %s; image %d bytes%s" % (
            blob[1], layout, verifier.image_length,
            " + %d bytes after it (ignored)" % extra if extra else "")))
        checks.info["image_length"] = verifier.image_length
    said = {failure.reason: failure.detail} if failure is not None else {}
    if verifier.checksum_ok is not None:
        checks.append(Check("checksum", verifier.checksum_ok,
                            None if verifier.checksum_ok else "bad_checksum",
                            "XOR of the segment data matches" if verifier.checksum_ok
                            else said.get("bad_checksum", "checksum byte does not match the data")))
    if not checks.info["hash_appended"]:
        checks.append(Check("appended hash", True, None, "none appended (hash_appended = 0)"))
    elif verifier.hash_ok is not None:
        checks.append(Check("appended hash", verifier.hash_ok,
                            None if verifier.hash_ok else "bad_image_hash",
                            "SHA-256 matches" if verifier.hash_ok
                            else said.get("bad_image_hash", "SHA-256 of the image does not match "
                                                            "its appended hash")))
    if slot_size is None:
        checks.append(Check("fits slot", True, None, "no slot size given"))
    else:
        def fits():
            device_image.check_segments(first, slot_size)
            image_verify.Verifier(slot_size).feed(memoryview(blob))
        length = checks.info.get("image_length")
        _row(checks, "fits slot", fits, lambda: "%d of %d bytes (%d free)" % (
            length, slot_size, slot_size - length) if length else "slot holds %d bytes" % slot_size)
    if checks.verdict and not any(c.reason == checks.verdict[0] for c in checks if not c.ok):
        checks.append(Check("device verdict", False, *checks.verdict))
    return checks
