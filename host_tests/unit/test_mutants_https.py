"""ota.https: the request on the wire, the socket's errors as reason codes, the CA file, and what each
hop gets (pinned after `make mutate`, issue 15). CPython with a scripted socket module in place of
`socket` (the real-socket cases are test_https_cpython.py): every call the device's socket sees is
recorded, so the order "connect with connect_timeout, then read_timeout for the handshake" and the
closing of every socket are asserted, not assumed."""
import errno
import io
import ssl

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import https
from ota.errors import OtaError


class FakeSock:
    def __init__(self, net, family):
        self.net, self.family = net, family
        self.calls = []
        self.closed = False
        self.sent = b""

    def setsockopt(self, level, name, value):
        self.calls.append(("setsockopt", level, name, value))
        if self.net.nodelay_error:
            raise OSError(errno.ENOPROTOOPT)

    def settimeout(self, t):
        self.calls.append(("settimeout", t))

    def connect(self, addr):
        self.calls.append(("connect", addr))
        if self.net.connect_error is not None:
            raise self.net.connect_error

    def makefile(self, mode):
        return io.BytesIO(self.net.reply)

    def sendall(self, data):
        if self.net.send_error is not None:
            raise self.net.send_error
        self.sent += data

    def close(self):
        self.closed = True


class FakeSocketModule:
    SOCK_STREAM = 1
    IPPROTO_TCP = 6
    TCP_NODELAY = 1

    def __init__(self):
        self.reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        self.addrinfo = None  # None: one IPv4 answer
        self.dns_error = None
        self.connect_error = self.send_error = None
        self.nodelay_error = False
        self.sockets = []
        self.lookups = []

    def getaddrinfo(self, host, port, family, kind):
        self.lookups.append((host, port, family, kind))
        if self.dns_error is not None:
            raise self.dns_error
        if self.addrinfo is not None:
            return self.addrinfo
        return [(2, kind, 6, "", ("10.0.0.%d" % len(self.lookups), port))]

    def socket(self, family, kind):
        assert kind == self.SOCK_STREAM
        s = FakeSock(self, family)
        self.sockets.append(s)
        return s


class FakeContext:
    def __init__(self, error=None):
        self.error = error
        self.wrapped = []

    def wrap_socket(self, sock, server_hostname):
        self.wrapped.append(server_hostname)
        sock.calls.append(("wrap", server_hostname))
        if self.error is not None:
            raise self.error
        return sock


@pytest.fixture
def net(monkeypatch):
    n = FakeSocketModule()
    monkeypatch.setattr(https, "socket", n)
    monkeypatch.setattr(https, "_NODELAY", n.TCP_NODELAY)
    return n


def answer_in_turn(net, replies):
    # Each new connection gets the next of replies: a redirect chain, one socket per hop.
    def socket(family, kind):
        net.reply = replies[len(net.sockets)]
        return FakeSocketModule.socket(net, family, kind)

    net.socket = socket


def reason(call, *args, **kw):
    with pytest.raises(OtaError) as e:
        call(*args, **kw)
    return e.value.reason


# ---------------------------------------------------------------- _connect

def test_connect_order_of_calls_and_timeouts(net):
    ctx = FakeContext()
    stream = https._connect("fw.example", 8443, 7, 11, ctx)
    sock = net.sockets[0]
    assert net.lookups == [("fw.example", 8443, 0, 1)]
    assert sock.family == 2
    assert sock.calls == [("setsockopt", 6, 1, 1), ("settimeout", 7), ("connect", ("10.0.0.1", 8443)),
                          ("settimeout", 11), ("wrap", "fw.example")]
    assert not sock.closed
    assert stream.readline(100) == b"HTTP/1.1 200 OK\r\n"  # the stream reads the socket's answer
    stream.write(b"GET")
    assert sock.sent == b"GET"


def test_connect_without_tls_does_no_handshake(net):
    https._connect("fw.example", 80, 7, 11, None)
    assert [c[0] for c in net.sockets[0].calls] == ["setsockopt", "settimeout", "connect", "settimeout"]


def test_a_stack_without_nodelay(net, monkeypatch):
    net.nodelay_error = True  # the option is refused: slower, not wrong
    https._connect("fw.example", 443, 7, 11, None)
    monkeypatch.setattr(https, "_NODELAY", None)  # the module has no TCP_NODELAY at all
    https._connect("fw.example", 443, 7, 11, None)
    assert [c[0] for c in net.sockets[1].calls] == ["settimeout", "connect", "settimeout"]
    assert not net.sockets[0].closed and not net.sockets[1].closed


@pytest.mark.parametrize("error", [OSError(-2, "EAI_NONAME"), OSError("no network"), IndexError()])
def test_dns_failures(net, error):
    net.dns_error = error
    assert reason(https._connect, "nowhere.example", 443, 7, 11, None) == "dns_failed"
    assert net.sockets == []


def test_dns_with_no_answer(net):
    net.addrinfo = []
    assert reason(https._connect, "nowhere.example", 443, 7, 11, None) == "dns_failed"


@pytest.mark.parametrize("error,expected", [
    (OSError(errno.ECONNREFUSED), "connect_failed"),
    (OSError(errno.EHOSTUNREACH), "connect_failed"),
    (OSError(-errno.ECONNREFUSED), "connect_failed"),  # the sign flipped by the TLS layer
    (OSError(errno.ETIMEDOUT), "timeout"),
    (OSError(errno.EAGAIN), "timeout"),
    (OSError(errno.EINPROGRESS), "timeout"),  # MicroPython's connect with a timeout that ran out
    (OSError("timed out"), "timeout"),  # no errno at all
    (TimeoutError(), "timeout"),
])
def test_connect_errors(net, error, expected):
    net.connect_error = error
    assert reason(https._connect, "fw.example", 443, 7, 11, FakeContext()) == expected
    assert net.sockets[0].closed  # never left open
    assert ("wrap", "fw.example") not in net.sockets[0].calls


@pytest.mark.parametrize("error,expected", [
    (ValueError("\nThe certificate validity has expired\n"), "tls_verify_failed"),
    (ssl.SSLCertVerificationError("hostname mismatch"), "tls_verify_failed"),
    (OSError(-29184, "MBEDTLS_ERR_SSL_INVALID_RECORD"), "tls_failed"),
    (OSError(errno.ECONNRESET), "tls_failed"),
    (OSError(errno.ETIMEDOUT), "timeout"),
])
def test_handshake_errors(net, error, expected):
    assert reason(https._connect, "fw.example", 443, 7, 11, FakeContext(error)) == expected
    assert net.sockets[0].closed


def test_handshake_enomem_stays_oserror_and_closes(net):
    with pytest.raises(OSError) as e:
        https._connect("fw.example", 443, 7, 11, FakeContext(OSError(errno.ENOMEM)))
    assert e.value.args[0] == errno.ENOMEM
    assert net.sockets[0].closed


# ---------------------------------------------------------------- _send and the request

@pytest.mark.parametrize("error,expected", [(OSError(errno.ECONNRESET), "connection_lost"),
                                            (OSError(errno.EPIPE), "connection_lost"),
                                            (OSError(errno.ETIMEDOUT), "timeout")])
def test_send_errors(net, error, expected):
    net.send_error = error
    assert reason(https.open, "https://fw.example/a.bin", tls_context=FakeContext()) == expected
    assert net.sockets[0].closed


def test_the_request_on_the_wire(net):
    resp = https.open("https://fw.example:8443/fw/a.bin?x=1", tls_context=FakeContext(), start=0,
                      headers={"X-Device": "dev-1"})
    sent = net.sockets[0].sent
    assert sent == (b"GET /fw/a.bin?x=1 HTTP/1.1\r\nHost: fw.example:8443\r\nUser-Agent: micropython-ota/1\r\n"
                    b"Accept-Encoding: identity\r\nConnection: close\r\nX-Device: dev-1\r\n\r\n")
    assert net.lookups[0][:2] == ("fw.example", 8443)
    resp.close()


def test_range_only_from_byte_one(net):
    net.reply = b"HTTP/1.1 206 P\r\nContent-Range: bytes 1-1/2\r\n\r\nk"
    https.open("https://fw.example/a", tls_context=FakeContext(), start=1).close()
    assert b"\r\nRange: bytes=1-\r\n" in net.sockets[0].sent
    net.reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    https.open("https://fw.example/a", tls_context=FakeContext(), start=0).close()
    assert b"Range" not in net.sockets[1].sent


@pytest.mark.parametrize("headers", [{"X-A": "v\r\nEvil: 1"}, {"X-A\nEvil": "v"}, {"X-A": "v\n"}])
def test_header_injection_is_bad_url_before_any_connection(net, headers):
    assert reason(https.open, "https://fw.example/a", tls_context=FakeContext(), headers=headers) == "bad_url"
    assert net.sockets == []


def test_a_token_with_a_line_break_is_refused(net):
    assert reason(https.open, "https://fw.example/a", tls_context=FakeContext(), token="t\r\nX: y",
                  token_origin="https://fw.example") == "bad_url"


def test_token_only_with_an_origin_and_only_to_it(net):
    https.open("https://fw.example/a", tls_context=FakeContext(), token="sekrit").close()
    assert b"sekrit" not in net.sockets[-1].sent  # no token_origin: the token goes nowhere
    https.open("https://fw.example/a", tls_context=FakeContext(), token="sekrit",
               token_origin="https://fw.example").close()
    assert b"\r\nAuthorization: Bearer sekrit\r\n" in net.sockets[-1].sent
    https.open("https://fw.example/a", tls_context=FakeContext(), token="sekrit",
               token_origin="https://fw.example:8443").close()
    assert b"sekrit" not in net.sockets[-1].sent  # another port
    https.open("https://fw.example/a", tls_context=FakeContext(), token="",
               token_origin="https://fw.example").close()
    assert b"Authorization" not in net.sockets[-1].sent  # an empty token is none


# ---------------------------------------------------------------- open: hops and statuses

def test_plain_http_needs_allow_http_and_gets_no_tls(net, monkeypatch):
    made = []
    monkeypatch.setattr(https, "context", lambda ca: made.append(ca) or FakeContext())
    assert reason(https.open, "http://fw.example/a") == "http_not_allowed"
    assert net.sockets == []
    resp = https.open("http://fw.example/a", allow_http=True)
    assert resp.status == 200 and resp.tls_context is None and made == []
    assert [c[0] for c in net.sockets[0].calls] == ["setsockopt", "settimeout", "connect", "settimeout"]
    assert net.lookups[0][:2] == ("fw.example", 80)


def test_one_context_made_from_ca_path_and_handed_on(net, monkeypatch):
    made = []
    ctx = FakeContext()
    monkeypatch.setattr(https, "context", lambda ca: made.append(ca) or ctx)
    net.reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    resp = https.open("https://fw.example/a", ca_path="my-ca.der", connect_timeout=3, read_timeout=4)
    assert made == ["my-ca.der"] and resp.tls_context is ctx and ctx.wrapped == ["fw.example"]
    assert ("settimeout", 3) in net.sockets[0].calls and net.sockets[0].calls[-2] == ("settimeout", 4)
    given = FakeContext()
    resp = https.open("https://fw.example/a", tls_context=given)
    assert made == ["my-ca.der"] and resp.tls_context is given  # a context given is used, none made


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_followed(net, status):
    replies = [b"HTTP/1.1 %d X\r\nLocation: https://b.example/z\r\n\r\n" % status,
               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    answer_in_turn(net, replies)
    resp = https.open("https://a.example/x", tls_context=FakeContext())
    assert resp.url == "https://b.example/z" and resp.status == 200
    assert [s.closed for s in net.sockets] == [True, False]  # the hop's socket closed first
    assert net.sockets[1].sent.startswith(b"GET /z HTTP/1.1\r\nHost: b.example\r\n")


@pytest.mark.parametrize("status", [300, 304, 305, 404, 500, 204, 201])
def test_other_statuses_are_http_reasons(net, status):
    net.reply = b"HTTP/1.1 %d X\r\nLocation: /y\r\n\r\n" % status
    assert reason(https.open, "https://fw.example/a", tls_context=FakeContext()) == "http_%d" % status
    assert net.sockets[0].closed and len(net.sockets) == 1


def test_a_redirect_without_location(net):
    net.reply = b"HTTP/1.1 302 Found\r\nLocation: \r\n\r\n"
    assert reason(https.open, "https://fw.example/a", tls_context=FakeContext()) == "bad_response"
    net.reply = b"HTTP/1.1 302 Found\r\n\r\n"
    assert reason(https.open, "https://fw.example/a", tls_context=FakeContext()) == "bad_response"
    assert all(s.closed for s in net.sockets)


def test_https_to_http_redirect_is_insecure_even_when_http_is_allowed(net):
    net.reply = b"HTTP/1.1 302 Found\r\nLocation: http://fw.example/a\r\n\r\n"
    assert reason(https.open, "https://fw.example/a", tls_context=FakeContext(), allow_http=True) == \
        "insecure_redirect"
    assert len(net.sockets) == 1 and net.sockets[0].closed


def test_http_to_https_redirect_is_fine(net, monkeypatch):
    ctx = FakeContext()
    monkeypatch.setattr(https, "context", lambda ca: ctx)
    replies = [b"HTTP/1.1 301 X\r\nLocation: https://fw.example/a\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    answer_in_turn(net, replies)
    resp = https.open("http://fw.example/a", allow_http=True)
    assert resp.tls_context is ctx and ctx.wrapped == ["fw.example"]
    assert [lookup[1] for lookup in net.lookups] == [80, 443]


def test_a_head_that_fails_closes_the_socket(net):
    net.reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"
    assert reason(https.open, "https://fw.example/a", tls_context=FakeContext()) == "bad_response"
    assert net.sockets[0].closed


# ---------------------------------------------------------------- context(ca_path)

def test_context_from_a_missing_or_bad_ca_file(tmp_path):
    assert reason(https.context, str(tmp_path / "none.der")) == "tls_failed"
    empty_pem = tmp_path / "empty.pem"
    empty_pem.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert reason(https.context, str(empty_pem)) == "tls_failed"  # PEM without a certificate


def test_context_from_pem_and_der(tls_site):
    _, pki, _ = tls_site("ca-forms")
    ctx = https.context(pki.ca_der)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and len(ctx.get_ca_certs()) == 1
    ctx = https.context(pki.ca_pem)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "OTA test CA"),),)]
    bundle = pki.ca_pem + ".bundle"
    with open(bundle, "wb") as out:  # each certificate of a PEM bundle is loaded
        out.write(open(pki.ca_pem, "rb").read() + open(pki.other_ca_pem, "rb").read())
    names = sorted(c["subject"][0][0][1] for c in https.context(bundle).get_ca_certs())
    assert names == ["OTA test CA", "Unrelated test CA"]


# ---------------------------------------------------------------- session 21

def test_open_called_bare_takes_the_configuration_defaults(net, monkeypatch):
    # The bench and the tests call open(url) with nothing else: it must then behave as a device with
    # the default configuration (config.DEFAULTS["ota"]), not with values of its own (mutants open _1,
    # _2 ca_path, _3 start, _5 connect_timeout, _6 read_timeout).
    from ota.config import DEFAULTS

    ota = DEFAULTS["ota"]
    made = []
    monkeypatch.setattr(https, "context", lambda ca: made.append(ca) or FakeContext())
    resp = https.open("https://fw.example/a.bin")
    assert resp.status == 200 and made == [ota["ca_path"]]
    timeouts = [c[1] for c in net.sockets[0].calls if c[0] == "settimeout"]
    assert timeouts == [ota["connect_timeout"], ota["read_timeout"]]
    assert b"Range:" not in net.sockets[0].sent  # from byte 0: no Range


def test_a_plain_http_hop_is_never_wrapped_in_the_context_it_is_given(net):
    # fetch.py hands every reconnect the context of the last response: for an http:// URL that
    # redirected to https, the resume starts again at the http hop with that context in hand. That
    # hop stays plain; the https hop after it uses the context (mutant open _66 wrapped both).
    ctx = FakeContext()
    replies = [b"HTTP/1.1 302 X\r\nLocation: https://fw.example/a\r\n\r\n",
               b"HTTP/1.1 206 P\r\nContent-Range: bytes 5-6/7\r\n\r\nok"]

    answer_in_turn(net, replies)
    resp = https.open("http://fw.example/a", allow_http=True, tls_context=ctx, start=5)
    assert resp.status == 206 and resp.tls_context is ctx
    assert ctx.wrapped == ["fw.example"]  # one handshake: the https hop's
    assert ("wrap", "fw.example") not in net.sockets[0].calls and ("wrap", "fw.example") in net.sockets[1].calls
