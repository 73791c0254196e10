# lib/ota/https.py under CPython against the dev server: the same client code through the CPython
# stream adapter (what host-side unit tests of update.py run), plus header parsing edge cases fed
# by a raw TLS socket server.
import random
import socket
import ssl
import threading

import pytest


from devkit.devserver import DevServer
from ota import https
from ota.errors import OtaError

SIZE = 300_001


@pytest.fixture(scope="module")
def env(tls_site):
    data = random.Random(3).randbytes(SIZE)
    _, pki, www = tls_site("https_cpython", {"fw.bin": data})
    with DevServer(str(www), pki.server_cert, pki.server_key) as server:
        yield type("Env", (), dict(pki=pki, data=data, server=server))


@pytest.fixture
def dev(env):
    env.server.reset()
    yield env.server
    env.server.reset()


def fetch(env, url, **kw):
    kw.setdefault("ca_path", env.pki.ca_der)
    resp = https.open(url, **kw)
    out = bytearray()
    buf = bytearray(4096)
    with resp:
        while True:
            n = resp.readinto(buf)
            if n == 0:
                return resp, bytes(out)
            out += buf[:n]


def test_download_and_range(env, dev):
    resp, body = fetch(env, dev.url("fw.bin"))
    assert (resp.status, resp.length, resp.total, body) == (200, SIZE, SIZE, env.data)
    resp, body = fetch(env, dev.url("fw.bin"), start=1234, ca_path=env.pki.ca_pem)
    assert (resp.status, resp.range_start, resp.total, body) == (206, 1234, SIZE, env.data[1234:])


def test_chunked_and_token_redirect(env, dev):
    dev.faults.chunked = True
    dev.token = "t0k"
    dev.redirects = {"/p": (307, "{ip_origin}/fw.bin")}
    resp, body = fetch(env, dev.url("p"), token="t0k", token_origin="https://localhost:%d" % dev.port)
    assert resp.chunked and body == env.data
    assert dev.requests[0]["headers"]["authorization"] == "Bearer t0k"
    assert "authorization" not in dev.requests[1]["headers"]


def test_token_goes_to_its_origin_only(env, dev):
    # Issue 10: with the old default (token_host None: the trigger URL's host) the token went to
    # whatever host the trigger named, to other ports of that host, and over http://.
    dev.redirects = {"/p": (302, "{ip_origin}/fw.bin")}
    fetch(env, dev.url("p"), token="t0k", token_origin="https://127.0.0.1:%d" % dev.port)
    assert "authorization" not in dev.requests[0]["headers"]
    assert dev.requests[1]["headers"]["authorization"] == "Bearer t0k"
    dev.reset()
    fetch(env, dev.url("fw.bin"), token="t0k")  # no origin: no token, whatever the URL
    fetch(env, dev.url("fw.bin"), token="t0k", token_origin="https://localhost:%d" % (dev.port + 1))
    fetch(env, dev.url("fw.bin"), token="t0k", token_origin="https://localhost")  # port 443
    assert [r["headers"].get("authorization") for r in dev.requests] == [None, None, None]


def test_token_not_sent_over_http_to_an_https_origin(env, tmp_path):
    (tmp_path / "fw.bin").write_bytes(b"plain")
    with DevServer(str(tmp_path)) as plain:  # no certificate: http://
        url = plain.url("fw.bin")
        for origin in ("https://localhost:%d" % plain.port, "http://localhost:%d" % plain.port):
            fetch(env, url, token="t0k", token_origin=origin, allow_http=True)
        assert [r["headers"].get("authorization") for r in plain.requests] == [None, "Bearer t0k"]


def test_cut_and_stall(env, dev):
    dev.faults.drop_after = 100_000
    with pytest.raises(OtaError) as info:
        fetch(env, dev.url("fw.bin"))
    assert info.value.reason == "connection_lost"
    dev.faults.stall, dev.faults.stall_seconds = True, 2
    with pytest.raises((OtaError, OSError)) as info:
        fetch(env, dev.url("fw.bin"), read_timeout=0.5)
    err = info.value
    assert (err.reason if isinstance(err, OtaError) else https.reason(err)) == "timeout"


def test_header_injection_refused(env, dev):
    with pytest.raises(OtaError) as info:
        https.open(dev.url("fw.bin"), ca_path=env.pki.ca_der, token="a\r\nX-Evil: 1",
                   token_origin="https://localhost:%d" % dev.port)
    assert info.value.reason == "bad_url"


def raw_server(pki, reply):
    # One-shot TLS server answering any request with the given raw bytes.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(4096)
            tls.sendall(reply)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return "https://localhost:%d/x" % listener.getsockname()[1]


@pytest.mark.parametrize("reply,reason", [
    (b"garbage\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 5000 + b"\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 100 + b"\r\n", "bad_response"),
    (b"HTTP/1.1 206 Partial\r\nContent-Length: 5\r\n\r\nabcde", "bad_response"),
    (b"HTTP/1.1 206 Partial\r\nContent-Range: bytes 7-11/12\r\n\r\nabcde", "bad_response"),
    (b"HTTP/1.1 302 Found\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 302 Found\r\nLocation: ftp://x/y\r\n\r\n", "bad_url"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "connection_lost"),
    (b"HTTP/1.1 403 Forbidden\r\n\r\n", "http_403"),
    # Not UTF-8 (issue 10: a UnicodeError escaped and killed the agent), or not a token.
    (b"HTTP/1.1 200 OK\r\nX-\xff: 1\r\nContent-Length: 0\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 200 OK\r\nX Y: 1\r\nContent-Length: 0\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 302 Found\r\nLocation: https://localhost/\xff\xfe\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\xff\r\n\r\n", "bad_response"),
])
def test_bad_heads(env, reply, reason):
    with pytest.raises(OtaError) as info:
        https.open(raw_server(env.pki, reply), ca_path=env.pki.ca_der, start=0)
    assert info.value.reason == reason


def test_body_without_length_reads_to_eof(env):
    url = raw_server(env.pki, b"HTTP/1.0 200 OK\r\n\r\nhello world")
    resp, body = fetch(env, url)
    assert (resp.length, resp.total, body) == (None, None, b"hello world")


@pytest.mark.parametrize("body", [b"-5\r\nabcde\r\n0\r\n\r\n", b"zz\r\n", b"5\r\nabcdeXX0\r\n\r\n",
                                  b"5\r\nabcde\r\n0\r\nX-\xff: 1\r\n\r\n",
                                  b"5\r\nabcde\r\n0\r\nX: \xff\r\nLocation: \xff\r\n\r\n"])
def test_bad_chunk_framing(env, body):
    url = raw_server(env.pki, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    with pytest.raises(OtaError) as info:
        fetch(env, url)
    assert info.value.reason == "bad_response"


def test_206_range_and_total_star(env):
    url = raw_server(env.pki, b"HTTP/1.1 206 P\r\nContent-Range: bytes 3-7/*\r\n\r\nabcde")
    resp, body = fetch(env, url, start=3)
    assert (resp.range_start, resp.total, resp.length, body) == (3, None, 5, b"abcde")


@pytest.mark.parametrize("cert", ["wrong_host", "expired", "rogue"])
def test_a_server_certificate_that_does_not_verify_is_refused(env, cert):
    # The device trusts its CA for the host it asked for, and only then: a certificate of our CA for
    # another name, one past its validity, and one of another CA for the right name are each
    # tls_verify_failed, and no request reaches that server (mutant context__mutmut_19,
    # SSLContext(None), dropped the hostname check: CPython's PROTOCOL_TLS_CLIENT is what sets it).
    pki = env.pki
    with DevServer(str(env.server.root), getattr(pki, cert + "_cert"), getattr(pki, cert + "_key")) as bad:
        with pytest.raises(OtaError) as info:
            fetch(env, bad.url("fw.bin"))
        assert info.value.reason == "tls_verify_failed"
        assert bad.requests == []
