# ota.http_stream: the socket adapter under CPython and the reason codes of socket errors, which
# decide whether a download is retried (timeout, connection_lost) or reported as it is (ENOMEM).
import errno
import socket

import pytest

from ota import http_stream
from ota.errors import OtaError


@pytest.mark.parametrize("error,want", [
    (OSError(errno.ENOMEM, "ENOMEM"), None),
    (OSError(-errno.ENOMEM, "ENOMEM"), None),  # the TLS layer may flip the sign
    (OSError(errno.ETIMEDOUT, "ETIMEDOUT"), "timeout"),
    (OSError(errno.EAGAIN, "EAGAIN"), "timeout"),
    (OSError(-errno.EAGAIN), "timeout"),
    (socket.timeout("timed out"), "timeout"),
    (OSError(errno.ECONNRESET, "ECONNRESET"), "connection_lost"),
    (OSError(-29184, "MBEDTLS_ERR_SSL_INVALID_RECORD"), "connection_lost"),
    (OSError("no number"), "connection_lost"),
    (OSError(), "connection_lost"),
])
def test_reason(error, want):
    assert http_stream.reason(error) == want


def test_raise_io():
    enomem = OSError(errno.ENOMEM, "ENOMEM")
    with pytest.raises(OSError) as e:
        http_stream.raise_io(enomem, "tls_failed", "handshake with h")
    assert e.value is enomem
    for code in (errno.ETIMEDOUT, errno.EAGAIN):
        with pytest.raises(OtaError) as e:
            http_stream.raise_io(OSError(code, "x"), "tls_failed", "handshake with h")
        assert e.value.reason == "timeout" and e.value.detail == "handshake with h"
    with pytest.raises(OtaError) as e:
        http_stream.raise_io(OSError(-29184, "MBEDTLS_ERR_SSL_INVALID_RECORD"), "tls_failed", "handshake with h")
    assert e.value.reason == "tls_failed"
    assert e.value.detail == "handshake with h: -29184 MBEDTLS_ERR_SSL_INVALID_RECORD"


def test_message():
    assert http_stream.message(OSError(-29184, "MBEDTLS_ERR_SSL_INVALID_RECORD")) == \
        "-29184 MBEDTLS_ERR_SSL_INVALID_RECORD"
    verify = OSError("  The certificate is not trusted\n\n  expired \n")
    assert http_stream.message(verify) == "The certificate is not trusted; expired"
    assert http_stream.message(OSError()) == "OSError"
    assert http_stream.message(TimeoutError()) == "TimeoutError"


def test_wrap_on_micropython_is_the_socket(monkeypatch):
    sock = object()
    monkeypatch.setattr(http_stream, "_MICROPYTHON", True)
    assert http_stream.wrap(sock) is sock


def test_cpython_stream_reads_lines_and_bounded_chunks():
    a, b = socket.socketpair()
    try:
        stream = http_stream.wrap(a)
        assert isinstance(stream, http_stream._CPythonStream)
        b.sendall(b"HTTP/1.1 200 OK\r\nrest of the body")
        b.shutdown(socket.SHUT_WR)  # the end of the answer: a read past it returns what is left
        assert stream.readline(100) == b"HTTP/1.1 200 OK\r\n"
        assert stream.readline(4) == b"rest"
        buf = bytearray(10)
        assert stream.readinto(buf, 3) == 3 and buf[:3] == b" of"
        assert stream.readinto(buf) == 9 and buf[:9] == b" the body"
        stream.write(b"GET / HTTP/1.1\r\n")
        assert b.recv(100) == b"GET / HTTP/1.1\r\n"
        stream.close()
        assert a.fileno() == -1
        assert stream._file.closed
    finally:
        a.close()
        b.close()
