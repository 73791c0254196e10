# ESP32-C3 app images (PLATFORM.md section 3): header checks on the first chunk, then a streaming
# verifier that follows the segment structure across chunks of any size, exactly as esp_image_verify
# does at set_boot(), so a bad image is refused before the slot is committed, not at the next reset.
# Runs on the device and on the host (otactl image inspect imports this very file).
import sys
import hashlib
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
_MAX_SEGMENTS = const(16)
_SIXTEEN_MB = const(0x1000000)
_CHECKSUM_SEED = const(0xEF)
_HASH_LEN = const(32)

_CHIPS = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 12: "ESP32-C2", 13: "ESP32-C6",
          16: "ESP32-H2"}


def _u16(b, at):
    return b[at] | b[at + 1] << 8


def _u32(b, at):
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


# XOR of all bytes of buf[start:end] folded into acc (one byte). The checksum of a 1.7 MB image is
# a per-byte job: viper makes it machine code (no allocation); CPython folds one big int instead.
if sys.implementation.name == "micropython":
    @micropython.viper
    def _xor(buf, start: int, end: int, acc: int) -> int:
        p = ptr8(buf)
        i = start
        while i < end and ((int(p) + i) & 3):  # ptr32 must be aligned on RISC-V
            acc ^= p[i]
            i += 1
        words = ptr32(int(p) + i)
        n = (end - i) >> 2
        x = 0
        j = 0
        while j < n:
            x ^= words[j]
            j += 1
        i += n << 2
        while i < end:
            acc ^= p[i]
            i += 1
        x ^= x >> 16
        x ^= x >> 8
        return (acc ^ x) & 0xFF
else:
    def _xor(buf, start, end, acc):
        n = end - start
        if n <= 0:
            return acc
        x = int.from_bytes(buf[start:end], "little")
        while n > 1:
            half = (n + 1) >> 1
            x = (x & ((1 << (half * 8)) - 1)) ^ (x >> (half * 8))
            n = half
        return acc ^ x


# The checks of check_header, one function each so the host inspector can run every one of them.
# Each raises OtaError with the reason code in its name's check.
def check_magic(first):
    if first[0] != _MAGIC:
        raise OtaError("not_app_image", "first byte 0x%02x, an app image starts with 0xE9" % first[0])
    if first[23] > 1:
        raise OtaError("not_app_image", "hash_appended byte is 0x%02x, not 0 or 1" % first[23])


def check_chip(first):
    chip = _u16(first, 12)
    if chip != CHIP_ID:
        raise OtaError("wrong_chip", "image is for %s (chip id %d), this device is ESP32-C3 (%d)"
                       % (_CHIPS.get(chip, "an unknown chip"), chip, CHIP_ID))


def check_revision(first, chip_rev):
    # chip_rev: major * 100 + minor, as in the header; the bootloader's rules (max 0 or 0xFFFF = any)
    low = _u16(first, 15)
    high = _u16(first, 17)
    if chip_rev < low:
        raise OtaError("chip_revision", "image needs chip revision >= %s, this chip is %s"
                       % (_revision(low), _revision(chip_rev)))
    if high not in (0, 0xFFFF) and chip_rev > high:
        raise OtaError("chip_revision", "image supports chip revision <= %s, this chip is %s"
                       % (_revision(high), _revision(chip_rev)))


def check_segments(first, slot_size):
    count = first[1]
    if not 1 <= count <= _MAX_SEGMENTS:
        raise OtaError("bad_segments", "%d segments (1..16)" % count)
    length = _u32(first, 28)
    if length % 4 or length >= _SIXTEEN_MB:
        raise OtaError("bad_segments", "segment 0 length 0x%x is invalid" % length)
    need = 24 + 8 + length + 1 + (_HASH_LEN if first[23] else 0)
    if slot_size is not None and need > slot_size:
        raise OtaError("too_large", "segment 0 alone needs %d bytes, the slot holds %d" % (need, slot_size))


def parse_descriptor(first):
    # esp_app_desc_t at image offset 0x20 -> dict. A merged flash image starts with the bootloader,
    # whose header also says 0xE9 / ESP32-C3: only this magic tells an app from it.
    if len(first) < _DESC_OFFSET + 0xB0:
        raise OtaError("truncated", "need %d bytes of the image, got %d" % (HEADER_BYTES, len(first)))
    if _u32(first, _DESC_OFFSET) != _DESC_MAGIC:
        raise OtaError("not_app_image", "merged flash image or bootloader? no app descriptor at 0x20")
    return {
        "secure_version": _u32(first, 0x24),
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
    if _u32(first, 28) < _DESC_LEN:
        raise OtaError("bad_segments", "segment 0 is shorter than the app descriptor")
    info["min_rev"] = _u16(first, 15)
    info["max_rev"] = _u16(first, 17)
    info["segment_count"] = first[1]
    info["hash_appended"] = first[23] == 1
    return info


# Verifier states: what the next bytes of the stream are.
_HEADER = const(0)  # 24-byte image header
_SEGMENT = const(1)  # 8-byte segment header
_DATA = const(2)  # segment data: checksum + hash
_TAIL = const(3)  # zero padding, then the checksum byte ending a 16-byte block
_HASH = const(4)  # appended SHA-256
_DONE = const(5)  # past the image: ignored


class Verifier:
    # Feed the image in any chunking; finish() says whether it is whole and intact. Segment data
    # (almost every byte) goes to the hash and the checksum straight from the caller's chunk with
    # no allocation; only the small fields are copied, into one 32-byte buffer.
    # feed() raises OtaError not_app_image, bad_segments, too_large; finish() truncated,
    # bad_checksum, bad_image_hash. slot_size None (host) means no size limit.
    def __init__(self, slot_size):
        self._slot = slot_size
        self._sha = hashlib.sha256()
        self._field = bytearray(_HASH_LEN)
        self._view = memoryview(self._field)
        self._state = _HEADER
        self._need = 24  # bytes left in the current part
        self._filled = 0  # bytes of the current small field already in self._field
        self._segments = 0  # segment headers still to come
        self._xor = _CHECKSUM_SEED
        self._hash_len = 0  # 32 once the header says a SHA-256 is appended
        self._stored = 0  # the checksum byte of the image
        self.position = 0  # image bytes consumed so far (stops at image_length)
        self.image_length = None
        self.checksum_ok = None
        self.hash_ok = None

    # Few locals on purpose: a MicroPython frame of more than 11 words (locals + stack) is
    # allocated on the heap at every call.
    def feed(self, chunk):
        n = len(chunk)
        pos = 0
        while pos < n and self._state != _DONE:
            take = self._need
            if take > n - pos:
                take = n - pos
            if self._state == _DATA:
                self._sha.update(chunk if take == n else chunk[pos:pos + take])
                self._xor = _xor(chunk, pos, pos + take, self._xor)
            else:
                self._collect(chunk, pos, take)
            pos += take
            self.position += take
            self._need -= take
            if self._need == 0:
                self._next()

    def _collect(self, chunk, pos, take):
        # a small field (header, segment header, tail, hash) into self._field, byte by byte
        field = self._field
        at = self._filled
        for i in range(take):
            field[at + i] = chunk[pos + i]
        self._filled = at + take

    def _too_large(self, need):
        if self._slot is not None and need > self._slot:
            raise OtaError("too_large", "image needs %s%d bytes, the slot holds %d"
                           % ("" if self.image_length else "at least ", need, self._slot))

    def _next(self):
        # The current part is complete: act on it and set up the next one.
        field = self._field
        state = self._state
        if state == _HEADER:
            check_magic(field)
            self._sha.update(self._view[:24])
            self._hash_len = _HASH_LEN if field[23] else 0
            self._segments = field[1]
            if not 1 <= self._segments <= _MAX_SEGMENTS:
                raise OtaError("bad_segments", "%d segments (1..16)" % self._segments)
        elif state == _SEGMENT:
            self._sha.update(self._view[:8])
            length = _u32(field, 4)
            if length % 4 or length >= _SIXTEEN_MB:
                raise OtaError("bad_segments", "segment at 0x%x: length 0x%x is invalid"
                               % (self.position - 8, length))
            self._segments -= 1
            end = self.position + length
            if self._segments:
                self._too_large(end + 1 + self._hash_len)
            else:  # the last one: the image length is known now
                self.image_length = end + 16 - end % 16 + self._hash_len
                self._too_large(self.image_length)
            if length:
                self._state, self._need = _DATA, length
                return
        elif state == _TAIL:
            self._sha.update(self._view[:self._filled])
            self._stored = field[self._filled - 1]
            self.checksum_ok = self._stored == self._xor
            if self._hash_len:
                self._state, self._need, self._filled = _HASH, _HASH_LEN, 0
                return
            self._state = _DONE
            return
        elif state == _HASH:
            self._state = _DONE
            return
        # after the header, a segment header or segment data: another segment, or the tail
        self._filled = 0
        if self._segments:
            self._state, self._need = _SEGMENT, 8
        else:  # zero padding + the checksum byte, ending a 16-byte block
            self._state, self._need = _TAIL, self.image_length - self.position - self._hash_len

    def finish(self):
        # Returns the image length. Raises OtaError truncated, bad_checksum, bad_image_hash.
        if self._state != _DONE:
            if self.image_length:
                detail = "got %d of the %d bytes of the image" % (self.position, self.image_length)
            else:
                detail = "the image ends at byte %d, inside its segments" % self.position
            raise OtaError("truncated", detail)
        digest = self._sha.digest()
        if self._hash_len:
            self.hash_ok = digest == bytes(self._field)
        if not self.checksum_ok:
            raise OtaError("bad_checksum", "calculated 0x%02x, the image says 0x%02x"
                           % (self._xor, self._stored))
        if self.hash_ok is False:
            from binascii import hexlify
            raise OtaError("bad_image_hash", "SHA-256 calculated %s..., appended %s..."
                           % (hexlify(digest[:8]).decode(), hexlify(self._field[:8]).decode()))
        return self.image_length
