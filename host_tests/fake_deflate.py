# MicroPython's `deflate` module for CPython unit tests, over zlib: lets lib/ota/inflate.py and
# lib/ota/delta.py run under pytest (tests install it as sys.modules["deflate"]).
#
# Made no kinder than the real one (micropython extmod/moddeflate.c, py/stream.c):
# - the input is pulled ONE byte at a time through the source stream's readinto (moddeflate.c's
#   deflateio_read_stream reads 1 byte per uzlib callback), and only when an output byte needs it;
# - a source that answers 0 bytes while the inflater wants more raises EOFError (same function);
# - readinto(buf) fills the whole buffer unless the deflate stream ends (py/stream.c mp_stream_rw
#   loops over the read until done); after the end every read returns 0;
# - a stream that does not decode raises OSError(EINVAL) (deflateio_read: st < 0 -> MP_EINVAL), also
#   when part of the buffer was already filled (stream_readinto raises on any error code);
# - distances are limited by the window 1 << wbits: zlib's raw inflate with the same wbits refuses
#   "too far back" as uzlib's dict_size check does (wbits 8 is taken as 9, zlib's smallest raw window).
# Only the RAW format is implemented (the one inflate.py uses); asking for another is an error here.
import errno
import zlib

AUTO = 0
RAW = 1
ZLIB = 2
GZIP = 3


class DeflateIO:
    def __init__(self, stream, format=AUTO, wbits=0, close=False):
        if wbits != 0 and not 5 <= wbits <= 15:
            raise ValueError("wbits")
        if format != RAW:
            raise NotImplementedError("the fake decodes deflate.RAW only")
        self.stream = stream
        self.wbits = wbits or 8
        self.dec = zlib.decompressobj(-max(self.wbits, 9))
        self.pending = b""
        self.eof = False
        self.byte = bytearray(1)
        self.bytes_in = 0  # source bytes pulled (tests)

    def _pull(self):
        n = self.stream.readinto(self.byte)
        if not n:
            raise EOFError
        self.bytes_in += 1
        try:
            self.pending = self.dec.decompress(bytes(self.byte))
        except zlib.error:
            raise OSError(errno.EINVAL, "EINVAL") from None
        if self.dec.eof:
            self.eof = True

    def readinto(self, buf):
        out = memoryview(buf).cast("B")
        done = 0
        while done < len(out):
            if self.pending:
                n = min(len(self.pending), len(out) - done)
                out[done:done + n] = self.pending[:n]
                self.pending = self.pending[n:]
                done += n
            elif self.eof:
                break
            else:
                self._pull()
        return done

    def read(self, n=-1):
        buf = bytearray(n if n >= 0 else 1 << 20)
        return bytes(buf[:self.readinto(buf)])

    def close(self):
        pass
