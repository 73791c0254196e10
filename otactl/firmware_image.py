"""ESP32-C3 app images on the host: inspect any image file the way a device would.

The inspector runs the device's own checks (lib/ota/image.py, compat.py, image_verify.py, the `ota`
package) so the host and the device cannot disagree about an image, and adds host-only explanations
(a merged flash image, a bootloader, a foreign chip). Building synthetic images for the simulator is
the dev kit's (devkit/images.py): an operator's images come from the firmware build.
"""
import struct

# otactl/__init__.py has put lib/ on sys.path (in a checkout; an installed otactl has `ota` beside it)
from ota import compat  # the device's code, not a copy
from ota import image as device_image
from ota import image_verify
from ota.errors import OtaError

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


def image_length(image):
    """Length of the image in `image` (bytes after it are padding); OtaError if it is not whole."""
    verifier = image_verify.Verifier(None)
    verifier.feed(memoryview(image))  # the device's OtaError, as the device raises it
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
    except OtaError as e:
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
    except OtaError as e:
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
        except OtaError:
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
            raise OtaError("bad_segments", "segment 0 is shorter than the app descriptor")

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
    except OtaError as e:
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
