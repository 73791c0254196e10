# Compressed and delta artifacts: the download stage for an "OTAZ" container (docs/COMPRESSED.md).
#
#   loader = inflate.Loader(url, artifact, cfg, https, esp32, progress, open_args, feed)
#   stopped = loader.run(writer, sink)     # same contract as fetch.Download.run
#
# The container is a small header with an index, then one raw-deflate stream (window 1 << wbits) of
# either the image itself (kind 0) or a patch against the running image (kind 1, delta.py). The
# compressor made a full flush at every piece boundary (every 1 << piece_log2 bytes of the image), so
# decoding can start afresh at any piece; the index gives each piece's compressed offset (and, for a
# patch, where the base is read from there).
#
# Data path: socket -> Source (one buffer) -> deflate.DeflateIO (MicroPython's C inflater, pulling
# one byte at a time through Source.readinto) -> [delta.Patch] -> writer.free_space() -> sink.feed,
# i.e. the same image checks, hashes, writer, read-back and set_boot as an uncompressed image. The
# trigger's sha256 and size stay the image's; the container's own sha256 (the trigger's file_sha256)
# is checked over the compressed bytes, each byte once even across resumes.
#
# Resume: a drop reconnects with Range at the compressed offset of the piece holding the next image
# byte (or at the first byte not hashed yet, when a file_sha256 is to be checked and the drop came
# in the few bytes just before that offset) and decodes that piece again from its start, discarding
# what the writer already has, so the hashes, the verifier and the writer never go back. At most one
# piece (<= 64 KiB of image) is downloaded twice. A 200 to a Range request is read and discarded up to that offset.
import binascii
import gc
import hashlib
import io
import struct

try:
    from micropython import const
except ImportError:  # CPython (host tests)
    def const(x):
        return x

from ota import heap
from ota.errors import OtaError, from_oserror
from ota.fetch import _RESUMABLE, _RETRY_FIRST, _pause
from ota.state import no_watchdog, ticks_diff, ticks_ms

MAGIC = b"OTAZ"
KIND_IMAGE = const(0)
KIND_PATCH = const(1)
HEAD = const(88)  # fixed part of the header; then count * 8 bytes of index
MAX_WBITS = const(12)  # 4 KiB window: what the device budgets (docs/COMPRESSED.md, measured)
MIN_PIECE_LOG2 = const(12)
MAX_PIECE_LOG2 = const(16)
MAX_HEADER = const(1024)  # 117 pieces: a 1.9 MB slot in 16 KiB pieces, with room
_SOURCE_BUF = const(1024)  # compressed bytes per socket read (the heap budget, docs/COMPRESSED.md)
_HEAP_EVERY = const(65536)
_EINVAL = const(22)  # what DeflateIO raises for a stream uzlib cannot decode


# The container header -> dict. Raises OtaError bad_container.
def parse_header(head, n):
    if n < HEAD or bytes(head[:4]) != MAGIC:
        raise OtaError("bad_container", "not an OTAZ container")
    kind, wbits, piece_log2 = head[4], head[5], head[6]
    image_size, file_size = struct.unpack_from("<II", head, 8)
    base_size = struct.unpack_from("<I", head, 48)[0]
    count = struct.unpack_from("<H", head, 84)[0]
    if kind not in (KIND_IMAGE, KIND_PATCH):
        raise OtaError("bad_container", "kind %d" % kind)
    if not 8 <= wbits <= MAX_WBITS:
        raise OtaError("bad_container", "window 2**%d: this device decodes up to 2**%d" % (wbits, MAX_WBITS))
    if not MIN_PIECE_LOG2 <= piece_log2 <= MAX_PIECE_LOG2:
        raise OtaError("bad_container", "piece 2**%d" % piece_log2)
    if count != (image_size + (1 << piece_log2) - 1) >> piece_log2 or not image_size:
        raise OtaError("bad_container", "%d pieces for %d bytes" % (count, image_size))
    size = HEAD + 8 * count
    if size > MAX_HEADER:
        raise OtaError("bad_container", "header of %d bytes" % size)
    return {"kind": kind, "wbits": wbits, "piece_log2": piece_log2, "image_size": image_size,
            "file_size": file_size, "image_sha256": bytes(head[16:48]), "base_size": base_size,
            "base_sha256": bytes(head[52:84]), "count": count, "header_size": size}


# The index, once the whole header is in: checked so a resume can trust it. Raises bad_container.
def check_index(info, head):
    last = info["header_size"]
    for i in range(info["count"]):
        offset = struct.unpack_from("<I", head, HEAD + 8 * i)[0]
        if offset < last or offset >= info["file_size"] or (i == 0 and offset != info["header_size"]):
            raise OtaError("bad_container", "index entry %d: offset %d" % (i, offset))
        last = offset


def piece_at(head, i):
    # (compressed offset, base position) where piece i starts.
    return struct.unpack_from("<II", head, HEAD + 8 * i)


class Source(io.IOBase):
    # The compressed file as a stream for DeflateIO, which reads it one byte at a time through
    # readinto (MicroPython's io.IOBase calls it with a bytearray on the C stack: no allocation).
    # The hot path is a few words of frame (heap frames are for functions with larger state).
    def __init__(self, buf):
        self.buf = buf
        self.view = memoryview(buf)
        self.resp = None
        self.pos = self.end = 0
        self.offset = 0  # file offset of buf[end]
        self.want = 0  # first file offset this connection must deliver (skip up to it on a 200)
        self.hashed = 0  # the file's sha256 covers bytes [0, hashed): each byte once
        self.sha = hashlib.sha256()
        self.file_size = 0
        self.reading = False  # True while in the socket: an OSError then is a drop, not bad data
        self.began = 0  # file offset this connection started at
        self.bad = "bad_compressed"  # the reason for a stream that does not decode (bad_patch)

    def attach(self, resp, start, want):
        self.resp, self.offset, self.want = resp, start, want
        self.began = start
        self.pos = self.end = 0

    def readinto(self, b):
        i = self.pos
        if i == self.end:
            i = self.fill()
        b[0] = self.buf[i]
        self.pos = i + 1
        return 1

    # Refill the buffer from the socket. Returns the buffer index of the next byte. Raises OSError
    # (drop, self.reading left True), OtaError (the response's, or bad_container past the file).
    def fill(self):
        while True:
            self.reading = True
            n = self.resp.readinto(self.view)
            self.reading = False
            start = self.offset
            if n == 0:
                if start < self.file_size:
                    raise OtaError("truncated", "the file ends at %d of %d bytes" % (start, self.file_size))
                raise OtaError(self.bad, "the stream goes on past the file's %d bytes" % start)
            self.offset = start + n
            if self.offset > self.hashed:  # new bytes, never hashed (a resume re-reads a piece)
                skip = self.hashed - start
                self.sha.update(self.view if skip <= 0 and n == len(self.buf) else
                                self.view[(skip if skip > 0 else 0):n])
                self.hashed = self.offset
            if self.offset > self.want:
                first = self.want - start if self.want > start else 0
                self.end = n
                self.want = 0
                return first

    # Exactly len(dst) bytes straight from the socket, hashed (the header: nothing of the body is left
    # in the buffer, so the socket can then feed DeflateIO itself). Raises as fill().
    def take(self, dst):
        got = 0
        while got < len(dst):
            self.reading = True
            n = self.resp.readinto(dst if got == 0 else memoryview(dst)[got:])
            self.reading = False
            if n == 0:
                raise OtaError("truncated", "the file ends inside its header")
            got += n
        skip = self.hashed - self.offset  # a drop inside the header: those bytes are hashed already
        if skip < got:
            self.sha.update(dst if skip <= 0 else memoryview(dst)[skip:])
        self.offset += got
        if self.offset > self.hashed:
            self.hashed = self.offset

    # The file bytes the decoder has taken so far.
    def consumed(self):
        return self.offset - (self.end - self.pos)


class Loader:
    # artifact: the trigger's encoding fields: {"encoding": "deflate"|"delta", "file_sha256": hex or
    # None, "file_size": n or None, "base_sha256": hex or None}. size/sha256 of the image are the
    # sink's (update.py) to check; the container's must agree with them.
    def __init__(self, url, artifact, size, sha256, cfg, https, esp32, progress, open_args, feed=None):
        self.url, self.artifact, self.size, self.sha256 = url, artifact, size, sha256
        self.cfg, self.https, self.esp32 = cfg, https, esp32
        self.progress, self.open_args = progress, open_args
        self.feed = feed or no_watchdog
        self.started = ticks_ms()
        self.deadline_ms = cfg["download_deadline_s"] * 1000
        self.restarts = 0
        self.info = None
        self.head = bytearray(HEAD)  # then the exact header size, once known
        self.src = Source(bytearray(_SOURCE_BUF))
        self.patch = None  # delta.Patch for kind 1
        self.downloaded = 0  # bytes through Source, every connection (not reported yet)
        self.bad = "bad_compressed"  # the reason for a stream that does not decode; bad_patch for a patch
        self.direct = False  # DeflateIO reads the socket itself (see _raw)
        self.used = artifact.get("encoding")  # "deflate", "delta" or "fallback" (not reported yet)

    def _check_deadline(self):
        if ticks_diff(ticks_ms(), self.started) > self.deadline_ms:
            raise OtaError("download_deadline", "not done after %d s (ota.download_deadline_s)"
                           % (self.deadline_ms // 1000))

    # Same contract as fetch.Download.run. Raises OtaError (the drop's reason after `retries`
    # reconnects in a row brought no new byte, bad_container, bad_compressed, bad_patch, wrong_base
    # (a patch for another running image and no fallback), bad_file_sha256, the answer's reasons),
    # OSError (flash). A patch whose base is not the running image is dropped for the trigger's
    # fallback (the same image, plain or compressed) before anything is written.
    def run(self, writer, sink):
        try:
            return self._run(writer, sink)
        except OtaError as e:
            fallback = self.artifact.get("fallback")
            if e.reason != "wrong_base" or not fallback or writer.received:
                raise
        self.used = "fallback"
        if self.artifact.get("fallback_encoding") == "deflate":
            self.url, self.artifact = fallback, {"encoding": "deflate"}
            self.info = self.patch = None
            self.bad = "bad_compressed"
            self.head = bytearray(HEAD)
            self.src = Source(bytearray(_SOURCE_BUF))
            return self._run(writer, sink)
        from ota.fetch import Download

        self.src = self.patch = None
        return Download(fallback, self.size, self.cfg, self.https, self.esp32, self.progress,
                        self.open_args, self.feed).run(writer, sink)

    def _run(self, writer, sink):
        failures = 0
        while True:
            before = writer.received
            piece = 0 if self.info is None else min(writer.received >> self.info["piece_log2"],
                                                    self.info["count"] - 1)
            ask = start = 0 if self.info is None else piece_at(self.head, piece)[0]
            if start > self.src.hashed and self.artifact.get("file_sha256") is not None:
                # A drop in the few bytes before a piece (its flush marker, not needed by the decoder
                # yet) left them unhashed: ask from there; Source hashes them and drops them.
                ask = self.src.hashed
            error = None
            try:
                resp = self.https.open(self.url, start=ask, **self.open_args)
            except OSError as e:  # only ENOMEM comes through: never worth a retry
                raise from_oserror(e)
            except OtaError as e:
                if e.reason not in (_RESUMABLE if self.info else _RETRY_FIRST):
                    raise
                error = e
            if error is None:
                if self.patch is not None:
                    self.patch.stream = None  # the last connection's DeflateIO (4 KiB window): garbage now
                gc.collect()  # the handshake's garbage, once per connection (as fetch.py)
                try:
                    if self._connection(resp, ask, start, piece, writer, sink):
                        return True
                    return False
                except OSError as e:
                    if not self.src.reading:
                        raise  # the flash
                    self.src.reading = False
                    named = self.https.reason(e)
                    error = OtaError(named, str(e)) if named else from_oserror(e)
                except OtaError as e:
                    if e.reason not in _RESUMABLE:
                        raise
                    error = e
                finally:
                    self.downloaded += self.src.offset - self.src.began  # Source's; not the direct part
                    resp.close()
            failures = 1 if writer.received > before else failures + 1
            if failures > self.cfg["retries"] or error.reason == "low_memory":
                raise error
            _pause(self.cfg["retry_backoff_ms"] << min(failures - 1, 5), self.feed)
            self._check_deadline()
            heap.check(self.cfg["min_free"], esp32=self.esp32)

    # ask: the Range asked for; start: the first file byte the decoder needs (ask or past it).
    def _accept(self, resp, ask, start):
        if ask and resp.status == 200:  # Range ignored: read and drop up to `start`
            self.restarts += 1
            if self.restarts > self.cfg["max_restarts"]:
                raise OtaError("too_many_restarts", "%d answers of 200 to a Range request "
                               "(ota.max_restarts %d)" % (self.restarts, self.cfg["max_restarts"]))
            self.src.attach(resp, 0, start)
        else:
            self.src.attach(resp, ask, start)
        want = self.artifact.get("file_size") or (self.info and self.info["file_size"])
        if want and resp.total is not None and resp.total != want:
            raise OtaError("size_mismatch", "server has %d bytes, the artifact %d" % (resp.total, want))

    # The header (first connection only). Raises OtaError bad_container, size_mismatch, bad_sha256,
    # and delta.py's wrong_base.
    def _header(self, writer):
        src = self.src
        src.take(self.head)
        info = parse_header(self.head, HEAD)
        rest = bytearray(info["header_size"] - HEAD)
        src.take(rest)
        head = self.head = self.head + rest
        check_index(info, head)
        file_size = self.artifact.get("file_size")
        if file_size is not None and file_size != info["file_size"]:
            raise OtaError("size_mismatch", "trigger file_size %d, container %d"
                           % (file_size, info["file_size"]))
        if self.size is not None and self.size != info["image_size"]:
            raise OtaError("size_mismatch", "trigger size %d, container's image %d"
                           % (self.size, info["image_size"]))
        total = src.resp.total
        if total is not None and total != info["file_size"]:
            raise OtaError("size_mismatch", "server has %d bytes, the container says %d"
                           % (total, info["file_size"]))
        src.file_size = info["file_size"]
        if info["image_size"] > writer.slot_size:
            raise OtaError("too_large", "%d bytes, the slot holds %d"
                           % (info["image_size"], writer.slot_size))
        if self.sha256 is not None:
            if binascii.unhexlify(self.sha256) != info["image_sha256"]:
                raise OtaError("bad_sha256", "the container is of another image")
        kind = KIND_PATCH if self.artifact.get("encoding") == "delta" else KIND_IMAGE
        if info["kind"] != kind:
            raise OtaError("bad_container", "container kind %d, trigger encoding %s"
                           % (info["kind"], self.artifact.get("encoding")))
        if kind == KIND_PATCH:
            from ota import delta

            base = self.artifact.get("base_sha256")
            if base is not None and binascii.unhexlify(base) != info["base_sha256"]:
                raise OtaError("bad_container", "the trigger's base_sha256 is not the patch's")
            # The running slot's hash, before anything is written (about a second of flash reads)
            self.patch = delta.Patch(info["base_size"], info["base_sha256"], self.esp32, self.feed)
            self.bad = self.src.bad = "bad_patch"
        self.info = info

    # One connection: returns True when the sink stopped the update, False at the end. Raises
    # OtaError, OSError (socket: src.reading is True; else the flash or uzlib's EINVAL -> named).
    def _connection(self, resp, ask, start, piece, writer, sink):
        import deflate

        self._accept(resp, ask, start)
        if self.info is None:
            self._header(writer)
            piece = 0
        info = self.info
        raw = self._raw(resp)
        stream = deflate.DeflateIO(self.src if raw is None else raw, deflate.RAW, info["wbits"])
        self.direct = raw is not None
        decoder = stream
        if self.patch is not None:
            decoder = self.patch.attach(stream, piece_at(self.head, piece)[1])
        try:
            return self._decode(decoder, piece << info["piece_log2"], writer, sink)
        except OSError as e:
            # uzlib's EINVAL: bad data, also in direct mode (where src.reading is set around the
            # whole decode); any other OSError is the socket's or the flash's.
            if e.args[0] != _EINVAL or (self.src.reading and not self.direct):
                raise
            self.src.reading = False
            raise OtaError(self.bad, "the stream does not decode")
        except EOFError:  # direct: the socket closed while DeflateIO wanted more
            raise OtaError("connection_lost", "the answer ended inside the stream")

    # The socket itself as DeflateIO's input, when the trigger gives no file_sha256 and the body is
    # a plain Content-Length one: the C inflater then reads it without a Python call per byte (5x
    # less CPU than through Source, measured on the Unix port: docs/COMPRESSED.md). Else None. Any
    # bytes before the wanted offset (a 200 to a Range request) are read and dropped first.
    def _raw(self, resp):
        if resp.chunked or self.artifact.get("file_sha256") is not None:
            return None
        raw = getattr(resp, "_stream", None)  # asked last: telemetry's wrapper notes the direct read
        if raw is None:
            return None
        src = self.src
        while src.want > src.offset:
            n = src.want - src.offset
            src.reading = True
            n = resp.readinto(src.view if n >= len(src.buf) else memoryview(src.buf)[:n])
            src.reading = False
            if n == 0:
                raise OtaError("connection_lost", "the answer ended before the piece")
            src.offset += n
        return raw

    def _decode(self, decoder, pos, writer, sink):
        info = self.info
        # Decode again what the writer already has (a resume starts at a piece boundary), unused.
        while pos < writer.received:
            free = writer.free_space()
            m = writer.received - pos
            self.src.reading = self.direct
            n = decoder.readinto(free if m >= len(free) else free[:m])
            self.src.reading = False
            if n == 0:
                raise OtaError(self.bad, "the stream ends inside piece data already received")
            pos += n
        size = info["image_size"]
        next_heap = writer.received + _HEAP_EVERY
        next_report = writer.received
        collect = True
        while True:
            self.feed()
            self._check_deadline()
            free = writer.free_space()
            left = size - writer.received
            self.src.reading = self.direct  # direct: an OSError in there is the socket's (a drop)
            n = decoder.readinto(free if left >= len(free) else free[:left + 1])
            self.src.reading = False
            if n == 0:
                break
            if n > left:
                raise OtaError(self.bad, "the stream decodes to more than the image's %d bytes" % size)
            if sink.feed(free if n == len(free) else free[:n], n):
                return True
            if collect:  # once per connection, after the first chunk: the image header check's garbage
                collect = False
                gc.collect()
            if writer.received >= next_heap:
                next_heap = writer.received + _HEAP_EVERY
                heap.check_stream(self.cfg["min_free"])
            if self.progress and writer.received >= next_report:
                next_report = writer.received + self.cfg["progress_bytes"]
                self.progress(writer.received, size)
        if writer.received != size:
            raise OtaError(self.bad, "the stream ends at %d of %d image bytes" % (writer.received, size))
        if not self.direct and self.src.consumed() != info["file_size"]:
            raise OtaError(self.bad, "the stream ends at byte %d of the file's %d"
                           % (self.src.consumed(), info["file_size"]))
        expect = self.artifact.get("file_sha256")
        if expect is not None:
            got = binascii.hexlify(self.src.sha.digest()).decode()
            if got != expect:
                raise OtaError("bad_file_sha256", "recv=%s expect=%s" % (got, expect))
        if self.progress:
            self.progress(writer.received, size)
        return False
