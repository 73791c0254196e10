# Streaming HTTP/1.1 GET over TLS for firmware downloads. Written because MicroPython's `requests`
# never verifies certificates, re-sends Authorization to whatever host a redirect names, drops the
# timeout on redirects and follows them forever (PLATFORM.md §6).
#
#   resp = https.open(url, ca_path="ca.der", token=tok, start=0)
#   n = resp.readinto(buf)      # 0 at the end of the body
#   resp.close()
#
# open() turns every failure into an OtaError with a stable reason (docs/DESIGN.md): bad_url,
# http_not_allowed, dns_failed, connect_failed, tls_verify_failed, tls_failed, timeout,
# http_<status>, too_many_redirects, insecure_redirect, bad_response, connection_lost; the one
# OSError it lets through is ENOMEM (the TLS buffers did not fit the heap: a device state, not a
# server problem). Response.readinto() lets socket errors through as OSError, because a try block
# would cost its zero-allocation hot path; reason(e) names them (timeout / connection_lost).
# Resuming is the caller's job (update.py): open(url, start=bytes_received).
import errno
import socket
import ssl
import sys

from ota import url as urls
from ota.errors import OtaError

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MICROPYTHON = sys.implementation.name == "micropython"
_HEADER_LINE = const(2048)  # longest header line: signed S3 / GitHub Location URLs run ~1 KB
_MAX_HEADERS = const(64)
_CHUNK_LINE = const(80)  # "1000;ext=..." chunk-size line
_open_file = open  # the builtin, before this module's open() shadows it
_REDIRECTS = (301, 302, 303, 307, 308)
_USER_AGENT = "micropython-ota/1"

try:
    _TIMEOUT_TYPES = (TimeoutError,)  # CPython raises it for socket timeouts, with errno None
except NameError:
    _TIMEOUT_TYPES = ()  # MicroPython: OSError(ETIMEDOUT)


# Open url and read the status line and headers, following redirects. Returns a Response whose
# status is 200 or 206. start > 0 sends "Range: bytes=start-": a server that ignores Range answers
# 200 (range_start None) and the caller must then restart from 0. token goes as
# "Authorization: Bearer" only to token_host (default: the first URL's host), never to a host a
# redirect leads to. headers: extra {name: value} sent to every hop (put no secrets there).
# Raises OtaError (reasons above) or OSError(ENOMEM).
def open(url, ca_path="ca.der", token=None, token_host=None, start=0, allow_http=False,
         connect_timeout=10, read_timeout=10, max_redirects=5, headers=None):
    scheme, host, port, path = urls.split(url)
    if token_host is None:
        token_host = host
    context = None  # built at the first https hop, then reused: the CA is parsed once
    hops = 0
    while True:
        if scheme == "http" and not allow_http:
            raise OtaError("http_not_allowed", host)
        if scheme == "https" and context is None:
            context = _context(ca_path)
        request = _request(scheme, host, port, path, token if host == token_host else None,
                           start, headers)
        stream = _connect(host, port, connect_timeout, read_timeout,
                          context if scheme == "https" else None)
        try:
            _send(stream, request)
            status, fields = _read_head(stream)
            if status in _REDIRECTS:
                location = fields.get("location")
                if not location:
                    raise OtaError("bad_response", "%d without Location" % status)
            elif status == 200 or status == 206:
                resp = Response(stream, status, fields, start, url)
                stream = None  # the Response owns it now
                return resp
            else:
                raise OtaError("http_%d" % status, host + path.split("?")[0])
        finally:
            if stream is not None:
                stream.close()  # before the next hop: never two TLS sessions at once on the C3
        hops += 1
        if hops > max_redirects:
            raise OtaError("too_many_redirects", "%d hops" % hops)
        url = urls.join(url, location)
        new_scheme, host, port, path = urls.split(url)
        if scheme == "https" and new_scheme != "https":
            raise OtaError("insecure_redirect", host)
        scheme = new_scheme


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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Fill buf with body bytes; returns how many, fewer than len(buf) only at the end of the body or,
    # when chunked, at a chunk boundary; 0 once the body is complete.
    # Raises OSError when the connection fails (reset, or no byte for read_timeout seconds:
    # reason(e) names it "timeout" or "connection_lost"; inside chunk framing these come as
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


# The SSLContext for the CA file on the device filesystem. PEM is converted to DER here: the
# MicroPython 1.29 Unix port rejects PEM cadata ("invalid cert"), DER loads everywhere. Each
# certificate of a PEM bundle is loaded (the chain accumulates). Raises OtaError tls_failed.
def _context(ca_path):
    try:
        with _open_file(ca_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise OtaError("tls_failed", "cannot read CA file %s: %s" % (ca_path, e))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED  # the MicroPython wrapper defaults to CERT_NONE
    try:
        if data.startswith(b"-----BEGIN"):
            import binascii

            found = False
            for block in data.split(b"-----BEGIN CERTIFICATE-----")[1:]:
                context.load_verify_locations(cadata=binascii.a2b_base64(block.split(b"-----END")[0]))
                found = True
            if not found:
                raise ValueError("no certificate in PEM")
        else:
            context.load_verify_locations(cadata=data)
    except ValueError as e:
        raise OtaError("tls_failed", "bad CA file %s: %s" % (ca_path, e))
    return context


def _request(scheme, host, port, path, token, start, headers):
    lines = [
        "GET %s HTTP/1.1" % path,
        "Host: " + urls.netloc(scheme, host, port),
        "User-Agent: " + _USER_AGENT,
        "Accept-Encoding: identity",
        "Connection: close",
    ]
    if start > 0:
        lines.append("Range: bytes=%d-" % start)
    if token:
        lines.append("Authorization: Bearer " + token)
    if headers:
        for name in headers:
            lines.append("%s: %s" % (name, headers[name]))
    text = "\r\n".join(lines) + "\r\n\r\n"
    if text.count("\n") != len(lines) + 1:
        raise OtaError("bad_url", "line break inside a header")  # header injection
    return text.encode()


# Resolve, connect, and (context given) do the TLS handshake with server_hostname = host.
# Returns a stream with readinto(buf, n), readline(limit), write(data), close().
def _connect(host, port, connect_timeout, read_timeout, context):
    try:
        info = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    except (OSError, IndexError) as e:
        raise OtaError("dns_failed", "%s: %s" % (host, e))
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.settimeout(connect_timeout)
        try:
            sock.connect(info[-1])
        except OSError as e:
            code = _errno(e)
            if code is None or code in (errno.ETIMEDOUT, errno.EAGAIN, errno.EINPROGRESS):
                raise OtaError("timeout", "connect to %s:%d" % (host, port))
            raise OtaError("connect_failed", "%s:%d: %s" % (host, port, e))
        sock.settimeout(read_timeout)  # bounds the handshake and every later read
        if context is not None:
            try:
                sock = context.wrap_socket(sock, server_hostname=host)
            except ValueError as e:
                # MicroPython: ValueError("\nThe certificate validity has expired\n") and the like;
                # CPython: ssl.SSLCertVerificationError (a ValueError too).
                raise OtaError("tls_verify_failed", "%s: %s" % (host, _message(e)))
            except OSError as e:
                _raise_io(e, "tls_failed", "handshake with " + host)
        stream = sock if _MICROPYTHON else _CPythonStream(sock)
        sock = None
        return stream
    finally:
        if sock is not None:
            sock.close()


def _send(stream, request):
    try:
        stream.write(request)
    except OSError as e:
        _raise_io(e, "connection_lost", "sending request")


# Status line and headers. Returns (status, {lower-case name: str value}) for the headers we use.
def _read_head(stream):
    line = _readline(stream, _HEADER_LINE)
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
        raise OtaError("bad_response", "status line %r" % line[:40])
    try:
        status = int(parts[1])
    except ValueError:
        raise OtaError("bad_response", "status line %r" % line[:40])
    return status, _read_fields(stream)


_WANTED = ("content-length", "content-range", "transfer-encoding", "location")


def _read_fields(stream):
    fields = {}
    for _ in range(_MAX_HEADERS):
        line = _readline(stream, _HEADER_LINE)
        if line == b"\r\n" or line == b"\n":
            return fields
        colon = line.find(b":")
        if colon <= 0:
            raise OtaError("bad_response", "header line %r" % line[:40])
        name = line[:colon].strip().lower().decode()
        if name in _WANTED:
            value = line[colon + 1 :].strip().decode()
            if name != "location":
                value = value.lower()
            if name in fields and fields[name] != value:
                raise OtaError("bad_response", "conflicting " + name)
            fields[name] = value
    raise OtaError("bad_response", "more than %d header lines" % _MAX_HEADERS)


def _readline(stream, limit):
    try:
        line = stream.readline(limit)
    except OSError as e:
        _raise_io(e, "connection_lost", "reading headers")
    if not line:
        raise OtaError("connection_lost", "closed where a header or chunk line was due")
    if not line.endswith(b"\n"):
        if len(line) >= limit:
            raise OtaError("bad_response", "header line longer than %d" % limit)
        raise OtaError("connection_lost", "closed inside a header line")
    return line


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


def _errno(e):
    if isinstance(e, _TIMEOUT_TYPES):
        return errno.ETIMEDOUT
    code = e.args[0] if e.args and isinstance(e.args[0], int) else None
    # The MicroPython TLS layer passes socket errors through mbedTLS and may flip their sign.
    return -code if code is not None and -256 < code < 0 else code


# The reason code for an OSError that Response.readinto let through: "timeout" or
# "connection_lost"; None for ENOMEM (a device state to report as it is, not a network failure).
def reason(e):
    code = _errno(e)
    if code == errno.ENOMEM:
        return None
    if code in (errno.ETIMEDOUT, errno.EAGAIN):
        return "timeout"
    return "connection_lost"


# Map an OSError to a reason: timeouts -> timeout, out of memory stays OSError, the rest -> reason.
def _raise_io(e, reason, doing):
    code = _errno(e)
    if code == errno.ENOMEM:
        raise e
    if code in (errno.ETIMEDOUT, errno.EAGAIN):
        raise OtaError("timeout", doing)
    raise OtaError(reason, "%s: %s" % (doing, _message(e)))


# "-29184 MBEDTLS_ERR_SSL_INVALID_RECORD", or mbedTLS's verify text on one line.
def _message(e):
    text = " ".join(str(a).strip() for a in e.args) if e.args else type(e).__name__
    return "; ".join([line.strip() for line in text.split("\n") if line.strip()])


class _CPythonStream:
    # CPython sockets lack MicroPython's readinto(buf, n)/readline/write: adapt them, so this module
    # also runs under CPython (unit tests, host tools).
    def __init__(self, sock):
        self._sock = sock
        self._file = sock.makefile("rb")

    def readinto(self, buf, n=None):
        return self._file.readinto(memoryview(buf)[:n])

    def readline(self, limit):
        return self._file.readline(limit)

    def write(self, data):
        self._sock.sendall(data)

    def close(self):
        self._file.close()
        self._sock.close()
