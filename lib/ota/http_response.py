# The answer half of https.py: the status line and headers (bounded: a line of _HEADER_LINE bytes,
# _MAX_HEADERS lines), the body's framing (Content-Length, Content-Range of a 206, chunked), and
# Response, whose readinto() is the download's hot path.
#
#   status, fields = read_head(stream)              # {lower-case name: value} of the headers we use
#   resp = Response(stream, status, fields, start, url)
#   n = resp.readinto(buf)                          # 0 at the end of the body
#
# Everything here raises OtaError bad_response (a malformed answer) or connection_lost (the answer
# ends early); socket errors in readinto() stay OSError (see Response.readinto), elsewhere they go
# through http_stream.raise_io.
from ota.errors import OtaError
from ota.http_stream import raise_io

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_HEADER_LINE = const(2048)  # longest header line: signed S3 / GitHub Location URLs run ~1 KB
HEADER_LINE = _HEADER_LINE  # for fetch.py's heap check before a resume
_MAX_HEADERS = const(64)
_CHUNK_LINE = const(80)  # "1000;ext=..." chunk-size line


# Status line and headers. Returns (status, {lower-case name: str value}) for the headers we use.
# line: where the lines are read, a writable buffer of at least _HEADER_LINE bytes (https.open passes
# the free part of the download's chunk buffer: the body has not started, so nothing is there yet);
# None or shorter: a buffer is made for this answer (the 2 KiB the head used to cost every time).
def read_head(stream, line=None):
    if line is None or len(line) < _HEADER_LINE:
        line = bytearray(_HEADER_LINE)
    one = bytearray(1)
    n = _line_into(stream, line, one)
    first = bytes(line[:n])  # the status line alone: short, unless a server is hostile (then garbage)
    parts = first.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
        raise OtaError("bad_response", "status line %r" % first[:40])
    try:
        status = int(parts[1])
    except ValueError:
        raise OtaError("bad_response", "status line %r" % first[:40])
    return status, _read_fields(stream, line, one)


_WANTED = (b"content-length", b"content-range", b"transfer-encoding", b"location")
_LONGEST_WANTED = const(17)  # len("transfer-encoding")


# Headers (and a chunked body's trailers, which come the same way). Names must be visible ASCII and
# are compared as bytes; only the values we use are decoded: a server's bytes are not UTF-8 until
# checked, and a UnicodeError escaping from here once killed the agent (issue 10). Each line goes
# into `line` (see read_head); only a name and a wanted value are copied out of it.
def _read_fields(stream, line=None, one=None):
    if line is None:
        line, one = bytearray(_HEADER_LINE), bytearray(1)
    fields = {}
    for _ in range(_MAX_HEADERS + 1):  # the header lines, then the blank line that ends them
        n = _line_into(stream, line, one)
        if line[0] == 10 or (n == 2 and line[0] == 13):  # "\n" or "\r\n": the end of the head
            return fields
        colon = 0
        while colon < n and line[colon] != 58:  # ":"; a memoryview has no find()
            colon += 1
        if colon == 0 or colon == n:
            raise OtaError("bad_response", "header line %r" % bytes(line[:min(n, 40)]))
        start, end = 0, colon
        while start < end and line[start] in b" \t":
            start += 1
        while end > start and line[end - 1] in b" \t":
            end -= 1
        for i in range(start, end):  # a field name is an RFC 9110 token: visible ASCII
            if line[i] <= 32 or line[i] >= 127:
                raise OtaError("bad_response", "header name %r" % bytes(line[start:min(end, start + 40)]))
        # Copied out of the buffer only when it may be one we use (the longest is 17 bytes).
        name = bytes(line[start:end]).lower() if end - start <= _LONGEST_WANTED else None
        if name in _WANTED:
            name = name.decode()  # one of _WANTED: ASCII
            value = _text(bytes(line[colon + 1:n]).strip(), name)
            if name != "location":
                value = value.lower()
            if name in fields and fields[name] != value:
                raise OtaError("bad_response", "conflicting " + name)
            fields[name] = value
    raise OtaError("bad_response", "more than %d header lines" % _MAX_HEADERS)


# A header value as str. Raises OtaError bad_response when it is not UTF-8.
def _text(raw, name):
    try:
        return raw.decode()
    except UnicodeError:  # MicroPython's; CPython's UnicodeDecodeError is one too
        raise OtaError("bad_response", "%s is not UTF-8: %r" % (name, raw[:40]))


def _readline(stream, limit):
    try:
        line = stream.readline(limit)
    except OSError as e:
        raise_io(e, "connection_lost", "reading headers")
    if not line:
        raise OtaError("connection_lost", "closed where a header or chunk line was due")
    if not line.endswith(b"\n"):
        if len(line) >= limit:
            raise OtaError("bad_response", "header line longer than %d" % limit)
        raise OtaError("connection_lost", "closed inside a header line")
    return line


# One line of the head into buf, byte by byte through `one` (a socket has no unread: reading ahead
# would swallow the start of the body); the socket's own readline(limit) would allocate a fresh
# `limit`-byte buffer per line. Returns its length, line end included. Raises OtaError bad_response
# (longer than buf), connection_lost (the answer ends first, or the socket fails; timeout for that).
def _line_into(stream, buf, one):
    n = 0
    limit = len(buf) if len(buf) < _HEADER_LINE else _HEADER_LINE
    while n < limit:
        try:
            got = stream.readinto(one, 1)
        except OSError as e:
            raise_io(e, "connection_lost", "reading headers")
        if not got:
            if n:
                raise OtaError("connection_lost", "closed inside a header line")
            raise OtaError("connection_lost", "closed where a header or chunk line was due")
        byte = one[0]
        buf[n] = byte
        n += 1
        if byte == 10:
            return n
    raise OtaError("bad_response", "header line longer than %d" % limit)


class Response:
    # Reads the body of one answer. readinto() does no allocation for identity bodies (one socket
    # readinto per call); chunked bodies cost a small allocation per chunk-size line.
    def __init__(self, stream, status, fields, start, url):
        self.status = status
        self.url = url  # after redirects
        self.range_start = None
        coding = fields.get("transfer-encoding", "identity")
        if coding not in ("chunked", "identity"):
            raise OtaError("bad_response", "Transfer-Encoding " + coding[:40])  # e.g. gzip
        self.chunked = coding == "chunked"
        self.length = None if self.chunked else _int_field(fields, "content-length")
        self.total = self.length
        if status == 206:
            self.range_start, end, self.total = _content_range(fields.get("content-range"))
            if self.range_start != start:
                raise OtaError("bad_response", "asked for byte %d, got %d" % (start, self.range_start))
            if self.length is not None and self.length != end + 1 - self.range_start:
                raise OtaError("bad_response", "Content-Length disagrees with Content-Range")
            if self.length is None and not self.chunked:
                self.length = end + 1 - self.range_start
        self._stream = stream
        # Body bytes still to come when Content-Length framed; -1 when chunked or until EOF, which
        # sends every call down the slow path.
        self._left = -1 if self.length is None else self.length
        self._chunk_left = 0
        self._done = False
        self.tls_context = None  # https.open's, for the next connection of the same download

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Fill buf with body bytes; returns how many, fewer than len(buf) only at the end of the body or,
    # when chunked, at a chunk boundary; 0 once the body is complete.
    # Raises OSError when the connection fails (reset, or no byte for read_timeout seconds:
    # https.reason(e) names it "timeout" or "connection_lost"; inside chunk framing these come as
    # OtaError with those reasons), OtaError("connection_lost") when the body ends before
    # Content-Length (or the last chunk), OtaError("bad_response") for bad chunk framing.
    # Either way the caller may resume with open(..., start=bytes_received).
    def readinto(self, buf):
        # The hot path: one socket readinto straight into the caller's buffer, no allocation.
        # Deliberately tiny, without a try block: a function whose locals + stack + exception
        # handlers exceed 11 words gets its frame on the GC heap at every call (MicroPython's
        # VM_MAX_STATE_ON_STACK). The MicroPython socket's readinto(buf) fills buf or hits EOF.
        if self._left >= len(buf):
            n = self._stream.readinto(buf)
            self._left -= n
            if n == 0:
                raise OtaError("connection_lost", "body ended %d bytes early" % self._left)
            return n
        return self._readinto_slow(buf)

    def _readinto_slow(self, buf):
        if self._done:
            return 0
        if self.chunked:
            return self._readinto_chunked(buf)
        if self._left == 0:
            self._done = True
            return 0
        want = len(buf) if self._left < 0 else self._left
        n = self._stream.readinto(buf, want)
        if n == 0:
            if self._left > 0:
                raise OtaError("connection_lost", "body ended %d bytes early" % self._left)
            self._done = True  # no Content-Length: the body ends with the connection
        elif self._left > 0:
            self._left -= n
        return n

    def _readinto_chunked(self, buf):
        if self._chunk_left == 0:
            line = _readline(self._stream, _CHUNK_LINE)
            size = line.split(b";")[0].strip()
            try:
                self._chunk_left = int(size, 16)
            except ValueError:
                self._chunk_left = -1
            if self._chunk_left < 0:
                raise OtaError("bad_response", "bad chunk size")
            if self._chunk_left == 0:
                _read_fields(self._stream)  # trailers, up to the blank line
                self._done = True
                return 0
        want = len(buf)
        if self._chunk_left < want:
            want = self._chunk_left
        n = self._stream.readinto(buf, want)
        if n == 0:
            raise OtaError("connection_lost", "chunked body cut")
        self._chunk_left -= n
        if self._chunk_left == 0 and _readline(self._stream, _CHUNK_LINE) != b"\r\n":
            raise OtaError("bad_response", "no CRLF after chunk")
        return n

    def close(self):
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _int_field(fields, name):
    text = fields.get(name)
    if text is None:
        return None
    if not text or len(text) > 12 or not _digits(text):
        raise OtaError("bad_response", "%s: %s" % (name, text[:20]))
    return int(text)


def _digits(text):
    for ch in text:
        if ch not in "0123456789":
            return False
    return True


# "bytes 100-1999/2000" -> (100, 1999, 2000); total None for "/*".
def _content_range(text):
    if not text or not text.startswith("bytes "):
        raise OtaError("bad_response", "206 without a byte Content-Range")
    parts = text[6:].split("/")
    span = parts[0].split("-")
    if len(parts) != 2 or len(span) != 2:
        raise OtaError("bad_response", "Content-Range " + text[:40])
    first, last, total = span[0], span[1], parts[1]
    if not (first and last and _digits(first) and _digits(last)) or int(last) < int(first):
        raise OtaError("bad_response", "Content-Range " + text[:40])
    if total == "*":
        total = None
    elif total and _digits(total):
        total = int(total)
    else:
        raise OtaError("bad_response", "Content-Range " + text[:40])
    return int(first), int(last), total

