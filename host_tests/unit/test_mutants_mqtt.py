"""ota.mqtt: the client built for both umqtt.simple flavours, never with unverified TLS, and the guarded
wait_msg that never holds a PUBLISH payload above max_payload, on MQTT 3.1.1 bytes (pinned after
`make mutate`: no CPython test reached ota.mqtt before). CPython.

`Umqtt` below is umqtt.simple 1.3.4's surface as ota.mqtt uses it (constructor, _recv_len, check_msg,
the attributes its wait_msg reads), copied from PyPI's micropython-umqtt.simple 1.3.4 (the package
micropython-packages.txt pins); its socket is a fake that replays the broker's bytes and records ours.
"""
import sys

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import mqtt


@pytest.fixture(autouse=True)
def fresh_guard_cache(monkeypatch):
    # ota.mqtt caches one guarded subclass per umqtt class for the process: each test makes its own,
    # or a test would run the subclass an earlier one made (mutmut runs tests in one process too).
    monkeypatch.setattr(mqtt, "_guarded", {})


class Sock:
    # A broker's bytes, read as MicroPython's socket stream reads them: read(n) gives up to n bytes,
    # None when a non-blocking socket has nothing yet, b"" once the peer closed.
    def __init__(self, data=b"", closed=True, none_reads=0):
        self.data, self.closed = bytearray(data), closed
        self.none_reads = none_reads  # readinto answers None this many times first (EAGAIN)
        self.written = bytearray()
        self.blocking = []
        self.readinto_sizes = []

    def read(self, n):
        if not self.data:
            return b"" if self.closed else None
        out, self.data = bytes(self.data[:n]), self.data[n:]
        return out

    def readinto(self, buf, n):
        self.readinto_sizes.append(n)
        if self.none_reads:
            self.none_reads -= 1
            return None
        chunk = self.read(n)
        buf[:len(chunk)] = chunk
        return len(chunk)

    def write(self, data, n=None):
        self.written += bytes(data)[:n]

    def setblocking(self, flag):
        self.blocking.append(flag)


class Umqtt:
    # umqtt.simple 1.3.4 (PyPI): the constructor always sets ssl_params.
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=False,
                 ssl_params={}):
        if port == 0:
            port = 8883 if ssl else 1883
        self.client_id, self.server, self.port = client_id, server, port
        self.user, self.pswd, self.keepalive = user, password, keepalive
        self.ssl, self.ssl_params = ssl, ssl_params
        self.sock, self.cb = None, None

    def _recv_len(self):
        n = 0
        sh = 0
        while 1:
            b = self.sock.read(1)[0]
            n |= (b & 0x7F) << sh
            if not b & 0x80:
                return n
            sh += 7

    def set_callback(self, f):
        self.cb = f

    def wait_msg(self):  # the original's, which the guard replaces (never reached here)
        raise AssertionError("umqtt's own wait_msg was called")

    def check_msg(self):
        self.sock.setblocking(False)
        return self.wait_msg()


class LibUmqtt(Umqtt):
    # micropython-lib's umqtt.simple: ssl=<SSLContext>, no ssl_params attribute.
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        Umqtt.__init__(self, client_id, server, port, user, password, keepalive, ssl)
        del self.ssl_params


class Plain:
    # A class that is not umqtt's (no _recv_len): a unit-test fake, used as it is.
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        self.args = (client_id, server, port, user, password, keepalive, ssl)


class Context:
    def __init__(self, verify_mode=2):
        self.verify_mode = verify_mode
        self.wrapped = []

    def wrap_socket(self, sock, server_hostname=None):
        self.wrapped.append((sock, server_hostname))
        return ("tls", sock)


def _publish(topic, payload, qos=0, packet_id=0x1234, retain=False):
    # A PUBLISH packet as a broker sends it (MQTT 3.1.1 §3.3), remaining length as a varint.
    body = bytes((len(topic) >> 8, len(topic) & 0xFF)) + topic
    if qos:
        body += bytes((packet_id >> 8, packet_id & 0xFF))
    body += payload
    size, length = len(body), bytearray()
    while True:
        byte = size & 0x7F
        size >>= 7
        length.append(byte | (0x80 if size else 0))
        if not size:
            break
    return bytes((0x30 | qos << 1 | int(retain),)) + bytes(length) + body


def _client(data=b"", max_payload=1024, closed=True, none_reads=0, cls=Umqtt):
    got, over = [], []
    c = mqtt.client(cls, "dev1", "broker.lan", 1883, None, None, 60, max_payload=max_payload,
                    on_oversize=lambda t, n: over.append((t, n)))
    c.set_callback(lambda t, m: got.append((t, m)))
    c.sock = Sock(data, closed, none_reads)
    return c, got, over


# --- wait_msg: the PUBLISH path ------------------------------------------------------------------
def test_a_payload_of_exactly_max_payload_reaches_the_callback_and_one_more_is_drained():
    c, got, over = _client(_publish(b"/switch/cmd/root", b"x" * 1024))
    assert c.check_msg() == 0x30
    assert got == [(b"/switch/cmd/root", b"x" * 1024)] and over == []
    c, got, over = _client(_publish(b"/switch/cmd/root", b"x" * 1025) + b"\xd0\x00")
    assert c.check_msg() == 0x30
    assert got == [] and over == [(b"/switch/cmd/root", 1025)]
    assert c.sock.data == b"\xd0\x00"  # drained to the byte: the next packet is read in step


def test_an_oversized_payload_is_drained_in_reads_of_at_most_256_bytes():
    c, _, over = _client(_publish(b"t", b"y" * 70000))
    c.check_msg()
    assert over == [(b"t", 70000)] and not c.sock.data
    sizes = c.sock.readinto_sizes
    assert max(sizes) == 256 and sizes[-1] == 70000 % 256 and sum(sizes) == 70000


def test_a_drain_read_that_gives_nothing_yet_counts_as_no_bytes():
    c, _, over = _client(_publish(b"t", b"y" * 300), max_payload=100, none_reads=1)
    c.check_msg()
    assert over == [(b"t", 300)] and not c.sock.data


def test_an_oversized_payload_without_an_on_oversize_is_dropped_silently():
    c, got, _ = _client(_publish(b"t", b"y" * 2000, qos=1, packet_id=7))
    c.on_oversize = None
    assert c.check_msg() == 0x32
    assert got == [] and bytes(c.sock.written) == b"\x40\x02\x00\x07"  # still acknowledged


def test_qos1_is_acknowledged_with_its_packet_id_and_qos0_is_not():
    c, got, _ = _client(_publish(b"/switch/cmd/a", b"{}", qos=1, packet_id=0x1234))
    assert c.check_msg() == 0x32
    assert got == [(b"/switch/cmd/a", b"{}")] and bytes(c.sock.written) == b"\x40\x02\x12\x34"
    c, got, _ = _client(_publish(b"/switch/cmd/a", b"{}", qos=0))
    assert c.check_msg() == 0x30 and got == [(b"/switch/cmd/a", b"{}")] and c.sock.written == b""


@pytest.mark.parametrize("qos,acked", [(0, b""), (1, b"\x40\x02\xab\xcd")])
def test_a_retained_message_is_read_like_any_other(qos, acked):
    # The retain bit (0x01) is not a QoS bit: no packet id is read for QoS 0, one PUBACK for QoS 1.
    c, got, _ = _client(_publish(b"/switch/release", b"{}", qos=qos, packet_id=0xABCD, retain=True))
    c.check_msg()
    assert got == [(b"/switch/release", b"{}")] and bytes(c.sock.written) == acked


def test_a_topic_longer_than_255_bytes_and_a_multi_byte_length():
    topic = b"/t/" + b"a" * 300  # the topic length's high byte counts
    c, got, _ = _client(_publish(topic, b"p" * 200, qos=1, packet_id=0x0102), max_payload=200)
    c.check_msg()
    assert got == [(topic, b"p" * 200)] and bytes(c.sock.written) == b"\x40\x02\x01\x02"
    c, got, over = _client(_publish(topic, b"p" * 201, qos=1), max_payload=200)
    c.check_msg()
    assert got == [] and over == [(topic, 201)]


# --- wait_msg: everything else ---------------------------------------------------------------------
def test_nothing_waiting_is_none_and_a_closed_socket_is_oserror():
    c, got, _ = _client(b"", closed=False)
    assert c.check_msg() is None and got == []
    assert c.sock.blocking == [False, True]  # polled, then back to blocking for the packet's rest
    c, _, _ = _client(b"", closed=True)
    with pytest.raises(OSError):
        c.check_msg()


def test_pingresp_is_read_whole_and_other_packets_go_back_to_umqtt():
    c, got, _ = _client(b"\xd0\x00\x90\x03\x00\x01\x01")
    assert c.check_msg() is None and bytes(c.sock.data) == b"\x90\x03\x00\x01\x01"
    assert c.check_msg() == 0x90 and bytes(c.sock.data) == b"\x03\x00\x01\x01"  # SUBACK: umqtt reads it
    c, _, _ = _client(b"\x40\x02\x00\x01")
    assert c.check_msg() == 0x40 and got == []


@pytest.mark.parametrize("cut", [b"\x30\x05", b"\x30\x05\x00"])
def test_a_publish_cut_before_its_topic_length_is_a_lost_connection(cut):
    c, got, _ = _client(cut)
    with pytest.raises(OSError):
        c.check_msg()
    assert got == []


# --- client(): which class, which limit --------------------------------------------------------------
def test_the_guard_is_made_once_per_class_and_holds_1024_bytes_by_default():
    guarded = mqtt._guard(Umqtt)
    assert mqtt._guard(Umqtt) is guarded and issubclass(guarded, Umqtt) and guarded is not Umqtt
    c = guarded("dev1", "broker.lan")
    c.set_callback(lambda t, m: got.append(m))
    got = []
    c.sock = Sock(_publish(b"t", b"z" * 1024) + _publish(b"t", b"z" * 1025))
    c.check_msg()
    c.check_msg()
    assert got == [b"z" * 1024]  # the second one drained, with no on_oversize set


def test_client_guards_umqtt_only_when_a_limit_is_given():
    c, _, _ = _client(max_payload=10)
    assert type(c) is mqtt._guard(Umqtt) and c.max_payload == 10 and c.on_oversize is not None
    plain = mqtt.client(Umqtt, "dev1", "broker.lan", 1883, None, None, 60)
    assert type(plain) is Umqtt and not hasattr(plain, "on_oversize")
    fake = mqtt.client(Plain, "dev1", "broker.lan", 1883, "u", "p", 30, max_payload=10)
    assert type(fake) is Plain and not hasattr(fake, "max_payload")
    assert fake.args == ("dev1", "broker.lan", 1883, "u", "p", 30, None)


# --- client(): TLS, never unverified -----------------------------------------------------------------
def test_a_context_that_does_not_require_a_certificate_is_refused():
    for mode in (0, 1):  # CERT_NONE, CERT_OPTIONAL
        with pytest.raises(ValueError):
            mqtt.client(Umqtt, "dev1", "broker.lan", 8883, None, None, 60, ssl_context=Context(mode))
    fake = mqtt.client(Plain, "dev1", "broker.lan", 8883, None, None, 60, ssl_context=object())
    assert fake.args[-1] is not None  # no verify_mode (a test fake): taken as it is


def test_pypi_umqtt_wraps_through_our_context_with_the_broker_host(monkeypatch):
    monkeypatch.delitem(sys.modules, "ussl", raising=False)
    ctx = Context()
    c = mqtt.client(Umqtt, "dev1", "broker.lan", 0, "u", "p", 60, ssl_context=ctx, max_payload=1024)
    assert c.ssl is True and c.port == 8883 and (c.user, c.pswd, c.keepalive) == ("u", "p", 60)
    assert (c.client_id, c.server) == ("dev1", "broker.lan")
    assert sys.modules["ussl"] is mqtt.Ussl
    # What 1.3.4's connect() does: ussl.wrap_socket(sock, **self.ssl_params).
    assert sys.modules["ussl"].wrap_socket("sock", **c.ssl_params) == ("tls", "sock")
    assert ctx.wrapped == [("sock", "broker.lan")]
    # Whatever name a caller passes, the name checked is the broker's.
    c.ssl_params["tls"].wrap_socket("sock2", server_hostname="evil.example")
    assert ctx.wrapped[-1] == ("sock2", "broker.lan")


def test_a_tls_port_other_than_8883_is_kept():
    c = mqtt.client(LibUmqtt, "dev1", "broker.lan", 8884, None, None, 60, ssl_context=Context())
    assert c.port == 8884


def test_ussl_refuses_to_wrap_without_our_context():
    with pytest.raises(ValueError):
        mqtt.Ussl.wrap_socket("sock")
    with pytest.raises(ValueError):
        mqtt.Ussl.wrap_socket("sock", cert_reqs=0)  # 1.3.4 made with ssl=True by someone else


def test_micropython_lib_umqtt_gets_the_context_itself(monkeypatch):
    monkeypatch.delitem(sys.modules, "ussl", raising=False)
    ctx = Context()
    c = mqtt.client(LibUmqtt, "dev1", "broker.lan", 8883, None, None, 60, ssl_context=ctx)
    assert c.ssl is ctx and not hasattr(c, "ssl_params") and "ussl" not in sys.modules


def test_plain_mqtt_passes_every_argument_and_no_tls():
    c = mqtt.client(Umqtt, "dev1", "broker.lan", 0, "u", "p", 45)
    assert (c.client_id, c.server, c.port, c.user, c.pswd, c.keepalive) == ("dev1", "broker.lan", 1883, "u", "p", 45)
    assert c.ssl is False


# --- session 21: what the full mutation run left -----------------------------------------------------
@pytest.mark.parametrize("data", [b"", b"\x30\x05", b"\x30\x05\x00"])
def test_a_lost_connection_is_umqtts_own_oserror(data):
    # umqtt.simple 1.3.4's wait_msg raises OSError(-1) when the broker closed the connection
    # (`if res == b"": raise OSError(-1)`): the guard says the same, so the console line
    # ("agent: connection lost: -1") reads alike whichever of the two noticed.
    c, _, _ = _client(data)
    with pytest.raises(OSError) as err:
        c.check_msg()
    assert err.value.args == (-1,)


def test_ussl_says_what_to_use_instead():
    # The only words a developer gets who built a 1.3.4 client with ssl=True by hand.
    with pytest.raises(ValueError) as err:
        mqtt.Ussl.wrap_socket("sock")
    assert str(err.value) == "ota.mqtt: refusing unverified TLS (no context; use ota.mqtt.client)"


def test_an_unverified_context_is_refused_with_the_mode_it_needs():
    # A ValueError, which the message catalogue does not see: its words are pinned here.
    with pytest.raises(ValueError) as err:
        mqtt.client(Umqtt, "dev1", "broker.lan", 8883, None, None, 60, ssl_context=Context(verify_mode=0))
    assert str(err.value) == "ota.mqtt: the SSL context must use CERT_REQUIRED"
