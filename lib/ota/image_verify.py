# The streaming image check: follows the segment structure of an ESP32-C3 app image across chunks of
# any size, exactly as esp_image_verify does at set_boot(), so a bad image is refused before the slot
# is committed, not at the next reset. It checks the 24-byte header again itself, so it also works
# alone (on the host); on the device image.check_header has vetted the first 0x100 bytes before.
# Runs on the device and on the host (otactl image inspect imports this very file).
import sys
import hashlib

from ota.errors import OtaError
from ota.image import MAX_SEGMENTS, SIXTEEN_MB, check_magic, u32

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_CHECKSUM_SEED = const(0xEF)
_HASH_LEN = const(32)


# XOR of all bytes of buf[start:end] folded into acc (one byte). The checksum of a 1.7 MB image is
# a per-byte job: on MicroPython viper makes it machine code (ota/xor_viper.py, no allocation);
# CPython folds one big int instead.
def _xor_bytecode(buf, start, end, acc):
    # Where the firmware has no native emitter (docs/HARDWARE.md, "Native code"): plain bytecode, about
    # 100x slower but still allocation-free (a `for ... in range()` loop makes no range object).
    for i in range(start, end):
        acc ^= buf[i]
    return acc


if sys.implementation.name == "micropython":
    # Chosen at run time: a port built without the RISC-V emitter cannot compile the viper source
    # (SyntaxError) nor load its native .mpy (ValueError "native code in .mpy unsupported").
    try:
        from ota.xor_viper import xor as _xor
    except (ImportError, SyntaxError, ValueError):
        _xor = _xor_bytecode
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


class _NoSha:
    # Stands for the SHA-256 of a Verifier made with hashing=False.
    def update(self, data):
        pass

    def digest(self):
        return None


_NO_SHA = _NoSha()


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
    # bad_checksum, bad_image_hash. slot_size None (host) means no size limit. hashing=False: the
    # structure and the checksum only, no SHA-256 (update.py hashes the image on the read-back).
    def __init__(self, slot_size, hashing=True):
        self._slot = slot_size
        self._sha = hashlib.sha256() if hashing else _NO_SHA
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
                if self._sha is not _NO_SHA:
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
            if not 1 <= self._segments <= MAX_SEGMENTS:
                raise OtaError("bad_segments", "%d segments (1..16)" % self._segments)
        elif state == _SEGMENT:
            self._sha.update(self._view[:8])
            length = u32(field, 4)
            if length % 4 or length >= SIXTEEN_MB:
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

    # What the stream held, to compare with the same image read back from flash: (image length,
    # checksum byte as calculated, the appended SHA-256 or checksum tail as received). Call after
    # the whole image was fed.
    def witness(self):
        return self.image_length, self._xor, bytes(self._view[:self._filled])

    def finish(self):
        # Returns the image length. Raises OtaError truncated, bad_checksum, bad_image_hash.
        if self._state != _DONE:
            if self.image_length:
                detail = "got %d of the %d bytes of the image" % (self.position, self.image_length)
            else:
                detail = "the image ends at byte %d, inside its segments" % self.position
            raise OtaError("truncated", detail)
        digest = self._sha.digest()
        if self._hash_len and digest is not None:
            self.hash_ok = digest == bytes(self._field)
        if not self.checksum_ok:
            raise OtaError("bad_checksum", "calculated 0x%02x, the image says 0x%02x"
                           % (self._xor, self._stored))
        if self.hash_ok is False:
            from binascii import hexlify
            raise OtaError("bad_image_hash", "SHA-256 calculated %s..., appended %s..."
                           % (hexlify(digest[:8]).decode(), hexlify(self._field[:8]).decode()))
        return self.image_length
