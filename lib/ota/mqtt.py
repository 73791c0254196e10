# The MQTT client, built the same way for both umqtt.simple flavours, and never with unverified TLS.
#
#   c = mqtt.client(MQTTClient, "a0b1c2d3e4f5", "broker.lan", 8883, "dev", "secret", 60,
#                   ssl_context=ctx)        # ctx: ssl.SSLContext, CERT_REQUIRED, the CA loaded
#   c.connect()
#
# Two umqtt.simple exist (docs/CHIP.md §10):
# - micropython-lib's (frozen in the official firmware and in ours on a board):
#   MQTTClient(..., ssl=<SSLContext>); connect() calls ctx.wrap_socket(sock, server_hostname=server),
#   so SNI and the name check come with it.
# - PyPI's micropython-umqtt.simple 1.3.4 (what the simulator freezes from .mpy_packages/):
#   MQTTClient(..., ssl=True, ssl_params={}); connect() does `import ussl` and
#   `ussl.wrap_socket(sock, **ssl_params)`. MicroPython 1.29 has no `ussl`, and the old ussl's
#   wrap_socket defaults to CERT_NONE: TLS without any certificate check.
# Telling them apart: 1.3.4's __init__ always sets `ssl_params`; micropython-lib's has no such
# attribute (checked against micropython-lib's micropython/umqtt.simple/umqtt/simple.py). Both accept
# ssl=<object> in the constructor, so the client is made the same way and then, for 1.3.4, pointed at
# the `ussl` stand-in below, whose wrap_socket only wraps with the context we give it: whatever a
# caller puts in ssl_params (cert_reqs=CERT_NONE, ...), the device never does unverified MQTT TLS.
import sys

_CERT_REQUIRED = 2  # ssl.CERT_REQUIRED on MicroPython and CPython


class Tls:
    # What 1.3.4 calls, through the ussl stand-in, to wrap the connected socket: the name checked is
    # ours, the broker host, whatever its caller says. (micropython-lib's umqtt gets the context
    # itself and passes its server, the same host, as server_hostname.)
    def __init__(self, context, server_hostname):
        self.context = context
        self.server_hostname = server_hostname

    def wrap_socket(self, sock, server_hostname=None):
        # Raises ValueError (certificate refused) or OSError (handshake, ENOMEM), as SSLContext does.
        return self.context.wrap_socket(sock, server_hostname=self.server_hostname)


class Ussl:
    # Registered as sys.modules["ussl"] for umqtt.simple 1.3.4's `import ussl`. Refuses to wrap
    # without our Tls (a caller that made a 1.3.4 client itself with ssl=True gets an error, not an
    # unverified session).
    @staticmethod
    def wrap_socket(sock, tls=None, **ignored):
        if tls is None:
            raise ValueError("ota.mqtt: refusing unverified TLS (no context; use ota.mqtt.client)")
        return tls.wrap_socket(sock)


_DISCARD = bytearray(256)  # an oversized payload is drained through this, never held whole
_guarded = {}  # MQTTClient class -> its guarded subclass


def _guard(MQTTClient):
    # A subclass whose wait_msg never holds more than max_payload bytes of a PUBLISH: umqtt reads the
    # whole payload into the heap (sock.read(size)), so one 64 KB message on a command topic is a
    # MemoryError and a dropped broker connection (host_tests/faults/test_faults_fuzz.py found it). Larger
    # payloads are drained in 256-byte reads, acknowledged as usual, and handed to on_oversize(topic,
    # size) instead of the callback. The packet parsing is MQTT 3.1.1's PUBLISH (QoS 0 and 1: all we
    # subscribe with); everything else goes back to umqtt as before.
    if MQTTClient in _guarded:
        return _guarded[MQTTClient]

    class Guarded(MQTTClient):
        max_payload = 1024
        on_oversize = None

        def wait_msg(self):
            sock = self.sock
            first = sock.read(1)
            sock.setblocking(True)
            if first is None:
                return None
            if first == b"":
                raise OSError(-1)
            kind = first[0]
            if kind == 0xD0:  # PINGRESP: one more byte, its length (0)
                sock.read(1)
                return None
            if kind & 0xF0 != 0x30:  # not a PUBLISH: SUBACK, PUBACK... for umqtt's own loops
                return kind
            size = self._recv_len()
            head = sock.read(2)
            if not head or len(head) < 2:  # the broker closed the connection mid-packet
                raise OSError(-1)
            topic = sock.read(head[0] << 8 | head[1])
            size -= len(topic) + 2
            packet_id = None
            if kind & 6:
                head = sock.read(2)
                packet_id = head[0] << 8 | head[1]
                size -= 2
            if size > self.max_payload:
                left = size
                while left:
                    left -= sock.readinto(_DISCARD, min(left, len(_DISCARD))) or 0
                if self.on_oversize is not None:
                    self.on_oversize(topic, size)
            else:
                self.cb(topic, sock.read(size))
            if kind & 6 == 2:  # QoS 1: PUBACK
                sock.write(bytes((0x40, 2, packet_id >> 8, packet_id & 0xFF)))
            return kind

    _guarded[MQTTClient] = Guarded
    return Guarded


# Returns the MQTTClient instance, not connected. Raises ValueError when ssl_context does not require
# a verified certificate (an object without verify_mode, such as a unit-test fake, is taken as it is).
# max_payload: PUBLISH payloads above it are drained, not held (see _guard); a class that is not
# umqtt's (no _recv_len, e.g. a unit-test fake) is used as it is.
def client(MQTTClient, client_id, host, port, user, password, keepalive, ssl_context=None,
           max_payload=None, on_oversize=None):
    if max_payload is not None and hasattr(MQTTClient, "_recv_len"):
        MQTTClient = _guard(MQTTClient)
    c = _make(MQTTClient, client_id, host, port, user, password, keepalive, ssl_context)
    if max_payload is not None and hasattr(MQTTClient, "_recv_len"):
        c.max_payload = max_payload
        c.on_oversize = on_oversize
    return c


def _make(MQTTClient, client_id, host, port, user, password, keepalive, ssl_context):
    if ssl_context is None:
        return MQTTClient(client_id, host, port=port, user=user, password=password,
                          keepalive=keepalive)
    if getattr(ssl_context, "verify_mode", _CERT_REQUIRED) != _CERT_REQUIRED:
        raise ValueError("ota.mqtt: the SSL context must use CERT_REQUIRED")
    # micropython-lib's umqtt passes its own server (the broker host) as server_hostname: it takes
    # the context itself.
    c = MQTTClient(client_id, host, port=port, user=user, password=password, keepalive=keepalive,
                   ssl=ssl_context)
    if hasattr(c, "ssl_params"):  # PyPI's 1.3.4: ssl=True + ssl_params + `import ussl`
        c.ssl = True
        c.ssl_params = {"tls": Tls(ssl_context, host)}
        sys.modules["ussl"] = Ussl
    return c
