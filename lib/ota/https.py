# Streaming HTTP/1.1 GET over TLS for firmware downloads. Written because MicroPython's `requests`
# never verifies certificates, re-sends Authorization to whatever host a redirect names, drops the
# timeout on redirects and follows them forever (docs/CHIP.md §10).
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
# Resuming is the caller's job (fetch.py): open(url, start=bytes_received).
#
# The answer (status line, headers, body framing, Response) is http_response.py; the socket adapter
# and the OSError -> reason mapping are http_stream.py.
import errno
import socket
import ssl

from ota import url as urls
from ota.errors import OtaError
from ota.http_response import Response, read_head
# reason is not used here: it is imported for the callers' https.reason(e) (fetch.py, tests, bench).
from ota.http_stream import errno_of, message, raise_io, reason, wrap  # noqa: F401

_open_file = open  # the builtin, before this module's open() shadows it
_REDIRECTS = (301, 302, 303, 307, 308)
_USER_AGENT = "micropython-ota/1"
# Nagle's algorithm holds a small TLS record until the previous one is ACKed, and the server delays
# that ACK (40 ms on Linux): every handshake and request paid it (issue 13: 56 -> 13 ms to open a
# connection). The ESP32 port's socket has TCP_NODELAY since v1.23.0 (MP ports/esp32/modsocket.c,
# IPPROTO_TCP level of setsockopt); the Unix port has not (the simulator adds it, sim/device/socket.py).
_NODELAY = getattr(socket, "TCP_NODELAY", None)


# Open url and read the status line and headers, following redirects. Returns a Response whose
# status is 200 or 206. start > 0 sends "Range: bytes=start-": a server that ignores Range answers
# 200 (range_start None) and the caller must then restart from 0. token goes as
# "Authorization: Bearer" only to a hop whose scheme, host and port are token_origin's
# ("https://fw.example.com:8443"; the default port of the scheme when it names none); without
# token_origin it goes nowhere. Whatever the trigger's URL or a redirect names, another host, another
# port of the same host or plain http never gets it. headers: extra {name: value} sent to every hop
# (put no secrets there). tls_context: an SSLContext to reuse (None: made from ca_path at the first
# https hop); the one used is resp.tls_context, so that a resume reuses it (fetch.py): the CA is
# parsed once per update and no context is garbage per connection. line: a writable buffer for the
# status and header lines, at least http_response's 2 KiB (fetch.py passes the chunk buffer's free
# part; None: read_head makes one). Raises OtaError (reasons above) or OSError(ENOMEM).
def open(url, ca_path="ca.der", token=None, token_origin=None, start=0, allow_http=False,
         connect_timeout=10, read_timeout=10, max_redirects=5, headers=None, tls_context=None, line=None):
    scheme, host, port, path = urls.split(url)
    origin = urls.origin(token_origin) if token and token_origin else None
    hops = 0
    while True:
        if scheme == "http" and not allow_http:
            raise OtaError("http_not_allowed", host)
        if scheme == "https" and tls_context is None:
            tls_context = context(ca_path)
        request = _request(scheme, host, port, path, token if origin == (scheme, host, port) else None,
                           start, headers)
        stream = _connect(host, port, connect_timeout, read_timeout,
                          tls_context if scheme == "https" else None)
        try:
            _send(stream, request)
            status, fields = read_head(stream, line)
            if status in _REDIRECTS:
                location = fields.get("location")
                if not location:
                    raise OtaError("bad_response", "%d without Location" % status)
            elif status == 200 or status == 206:
                resp = Response(stream, status, fields, start, url)
                resp.tls_context = tls_context
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


# The SSLContext for the CA file on the device filesystem. PEM is converted to DER here: the
# MicroPython 1.29 Unix port rejects PEM cadata ("invalid cert"), DER loads everywhere. Each
# certificate of a PEM bundle is loaded (the chain accumulates). Raises OtaError tls_failed.
# link.py builds the MQTT session's context with it too.
def context(ca_path):
    try:
        with _open_file(ca_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise OtaError("tls_failed", "cannot read CA file %s: %s" % (ca_path, e))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED  # the MicroPython wrapper defaults to CERT_NONE
    try:
        if data.startswith(b"-----BEGIN"):
            import binascii

            found = False
            for block in data.split(b"-----BEGIN CERTIFICATE-----")[1:]:
                ctx.load_verify_locations(cadata=binascii.a2b_base64(block.split(b"-----END")[0]))
                found = True
            if not found:
                raise ValueError("no certificate in PEM")
        else:
            ctx.load_verify_locations(cadata=data)
    except ValueError as e:
        raise OtaError("tls_failed", "bad CA file %s: %s" % (ca_path, e))
    return ctx


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
        if _NODELAY is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _NODELAY, 1)
            except OSError:
                pass  # a stack without it is slower to open a connection, not wrong
        sock.settimeout(connect_timeout)
        try:
            sock.connect(info[-1])
        except OSError as e:
            code = errno_of(e)
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
                raise OtaError("tls_verify_failed", "%s: %s" % (host, message(e)))
            except OSError as e:
                raise_io(e, "tls_failed", "handshake with " + host)
        stream = wrap(sock)
        sock = None
        return stream
    finally:
        if sock is not None:
            sock.close()


# The whole request in one write (one TLS record, one segment): with TCP_NODELAY a request written
# in pieces would go out as that many small segments.
def _send(stream, request):
    try:
        stream.write(request)
    except OSError as e:
        raise_io(e, "connection_lost", "sending request")

