# Delta updates: a patch against the running image, applied as it streams (docs/COMPRESSED.md).
#
#   patch = delta.Patch(base_size, base_sha256, esp32, feed)   # raises OtaError wrong_base first
#   decoder = patch.attach(deflate_stream, base_pos)           # at a piece boundary (inflate.py)
#   n = decoder.readinto(writer_free_space)                    # image bytes, like DeflateIO's
#
# The patch (otactl/zdelta.py) is a sequence of operations, deflated in an OTAZ container:
#   "A" u24 n, 0 + n bytes: add to the base (mod 256)   "I" u24 n, 0 + n bytes: insert
#   "S" u24 d, sign: seek the base forward (sign 0) or back (sign 1)
# The base is the running slot, read with readblocks through one 1 KiB buffer; the new image goes
# to the writer's buffer as any image does, so the hashes, the image checks, the read-back and
# set_boot are the same. Before the first byte is written, the running slot's first base_size bytes
# must hash to the patch's base (wrong_base otherwise: inflate.loader then takes the trigger's
# fallback). Bounded memory: 1 KiB + 5 bytes, whatever the patch.
import hashlib

try:
    from micropython import const
except ImportError:  # CPython (host tests)
    def const(x):
        return x

from ota.errors import OtaError

_ADD = const(65)  # "A"
_INSERT = const(73)  # "I"
_SEEK = const(83)  # "S"
_BASE_BUF = const(1024)

try:
    import micropython

    @micropython.viper
    def _add(dst, at: int, src, n: int):
        d = ptr8(dst)  # noqa: F821 (viper builtin)
        s = ptr8(src)  # noqa: F821
        i = 0
        while i < n:
            d[at + i] = d[at + i] + s[i]  # ptr8 stores the low byte: mod 256
            i += 1
except (ImportError, AttributeError, NameError, SyntaxError):  # CPython: the plain loop
    def _add(dst, at, src, n):
        for i in range(n):
            dst[at + i] = (dst[at + i] + src[i]) & 0xFF


# SHA-256 (bytes) of the first `length` bytes of a partition, through buf. Raises OSError.
def partition_sha256(part, length, buf, feed):
    digest = hashlib.sha256()
    view = memoryview(buf)
    pos = 0
    while pos < length:
        feed()
        n = len(buf) if length - pos >= len(buf) else length - pos
        part.readblocks(0, view if n == len(buf) else view[:n], pos)
        digest.update(view if n == len(buf) else view[:n])
        pos += n
    return digest.digest()


class Patch:
    # base_sha256: bytes (32) the patch was made against. Raises OtaError wrong_base when the running
    # slot is not that image (or is too small to hold base_size bytes), OSError from the flash.
    def __init__(self, base_size, base_sha256, esp32, feed):
        self.part = esp32.Partition(esp32.Partition.RUNNING)
        self.slot_size = self.part.info()[3]
        self.buf = bytearray(_BASE_BUF)
        self.head = bytearray(5)
        self.base_size = base_size
        self.base_sha256 = base_sha256
        if (base_size > self.slot_size
                or partition_sha256(self.part, base_size, self.buf, feed) != base_sha256):
            raise OtaError("wrong_base", "the running image is not the patch's base")
        self.stream = None
        self.pos = self.left = self.op = 0

    # At a piece boundary: base_pos from the container's index. Returns self (the decoder).
    def attach(self, stream, base_pos):
        if base_pos > self.base_size:
            raise OtaError("bad_patch", "piece starts at base byte %d of %d" % (base_pos, self.base_size))
        self.stream, self.pos, self.left, self.op = stream, base_pos, 0, 0
        return self

    # Fills out (from its start) with image bytes; fewer only at the end of the patch. Raises OtaError
    # bad_patch, OSError (the stream's: a drop, or EINVAL for a corrupt deflate stream; the flash).
    # The hot path is split in small functions on purpose: MicroPython puts the frame of a function
    # with more than a few words of locals and stack on the heap, at every call.
    def readinto(self, out):
        done = 0
        while done < len(out):
            n = self._some(out, done)
            if n == 0:
                break
            done += n
        return done

    # Image bytes into out[done:], from one operation. Returns how many, 0 at the end of the patch.
    def _some(self, out, done):
        while self.left == 0:
            if not self._next():
                return 0
        n = len(out) - done
        if self.left < n:
            n = self.left
        part = out if n == len(out) else _view(out, done, n)  # a slice only at operation edges
        if self.stream.readinto(part) != n:
            raise OtaError("bad_patch", "the patch ends inside an operation")
        if self.op == _ADD:
            self._add_base(out, done, n)
        self.left -= n
        return n

    # Reads the next operation header. Returns False at the end of the patch. Raises bad_patch.
    def _next(self):
        head = self.head
        got = self.stream.readinto(head)
        if got == 0:
            return False
        if got != 5:
            raise OtaError("bad_patch", "the patch ends inside an operation header")
        op = head[0]
        n = head[1] | head[2] << 8 | head[3] << 16  # small ints: no struct tuple, no big int
        if op == _SEEK:
            pos = self.pos - n if head[4] else self.pos + n
            if not 0 <= pos <= self.base_size or head[4] > 1:
                raise OtaError("bad_patch", "seek to base byte %d of %d" % (pos, self.base_size))
            self.pos = pos
            return True
        if head[4]:
            raise OtaError("bad_patch", "operation header %r" % bytes(head))
        if op == _ADD:
            if self.pos + n > self.base_size:
                raise OtaError("bad_patch", "add past the base's %d bytes" % self.base_size)
        elif op != _INSERT:
            raise OtaError("bad_patch", "operation %d" % op)
        self.op, self.left = op, n
        return True

    # out[at:at + n] += base[pos:pos + n], a buffer at a time.
    def _add_base(self, out, at, n):
        while n > 0:
            m = self._add_step(out, at, n)
            at += m
            n -= m

    # One buffer of base bytes added. Returns how many (<= 1 KiB).
    def _add_step(self, out, at, n):
        m = _BASE_BUF if n > _BASE_BUF else n
        self._read_base()
        _add(out, at, self.buf, m)
        self.pos += m
        return m

    def _read_base(self):
        if self.pos + _BASE_BUF <= self.slot_size:
            self.part.readblocks(0, self.buf, self.pos)  # a whole buffer, no slice: still the slot
        else:
            self.part.readblocks(0, _view(self.buf, 0, self.slot_size - self.pos), self.pos)


def _view(buf, start, n):
    return memoryview(buf)[start:start + n]
