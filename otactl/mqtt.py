"""The CLI's one MQTT connection (paho-mqtt 2.x), and the fleet's topics.

    add_arguments(parser)                  # --broker HOST[:PORT] --port --tls --ca --user --password
    with connect(args) as conn:            # settings from flags, else OTACTL_* environment
        conn.on_message = callback         # callback(topic, payload_bytes, retained), paho's thread
        conn.subscribe(STATE_FILTER)
        conn.sync()                        # returns once every retained message has been delivered
        conn.publish(cmd_topic(id), payload)   # QoS 1, not retained, waits for the PUBACK

Environment: OTACTL_BROKER (host or host:port), OTACTL_PORT, OTACTL_CA (enables TLS),
OTACTL_USER, OTACTL_PASSWORD. A broker that cannot be reached raises one
OtaError("broker_unreachable", ...); one that refuses us raises OtaError("broker_refused", ...).
"""
import os
import socket
import ssl
import threading
import time
import uuid

from ota.errors import OtaError

CMD_ROOT = "/switch/cmd/root"
CMD_DEVICE = "/switch/cmd/%s"
STATE_PREFIX = "/switch/state/"
STATE_FILTER = STATE_PREFIX + "+"
_SYNC_PREFIX = "/otactl/sync/"  # a topic only this client uses; see sync()


def cmd_topic(device_id=None):
    """The command topic of one device (None: the whole fleet's). Raises OtaError bad_device_id for
    an id no device may have: "root" would address every device at once, "+", "#" and "/" other
    topics (the device refuses the same ids in config.json: lib/ota/config.py)."""
    if device_id is None:
        return CMD_ROOT
    from .devstate import check_id

    return CMD_DEVICE % check_id(device_id)


def device_of(topic):
    """'/switch/state/abc' -> 'abc'; None for any other topic."""
    if topic.startswith(STATE_PREFIX) and "/" not in topic[len(STATE_PREFIX):]:
        return topic[len(STATE_PREFIX):]
    return None


def add_arguments(parser):
    group = parser.add_argument_group("broker (defaults from OTACTL_BROKER, OTACTL_PORT, OTACTL_CA, "
                                      "OTACTL_USER, OTACTL_PASSWORD)")
    group.add_argument("--broker", metavar="HOST[:PORT]", help="MQTT broker (default localhost)")
    group.add_argument("--port", type=int, help="broker port (default 1883, 8883 with TLS)")
    group.add_argument("--tls", action="store_true", help="connect over TLS (implied by --ca)")
    group.add_argument("--ca", metavar="PEM", help="CA certificate that signed the broker's")
    group.add_argument("--user", help="MQTT user name")
    group.add_argument("--password", help="MQTT password (prefer OTACTL_PASSWORD: argv is visible)")
    group.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")


def settings(args=None, env=None):
    """Flags first, then the environment. Returns a dict for connect()."""
    env = os.environ if env is None else env

    def pick(name, env_name):
        value = getattr(args, name, None) if args is not None else None
        return value if value is not None else env.get(env_name) or None

    broker = pick("broker", "OTACTL_BROKER") or "localhost"
    host, port = broker, pick("port", "OTACTL_PORT")
    if broker.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
        host, _, port_text = broker.partition(":")
        port = port or port_text
    ca = pick("ca", "OTACTL_CA")
    tls = bool(getattr(args, "tls", False) or ca)
    try:
        port = int(port) if port else (8883 if tls else 1883)
    except ValueError:
        raise OtaError("bad_broker", "port %r is not a number" % port)
    return {"host": host, "port": port, "tls": tls, "ca": ca, "user": pick("user", "OTACTL_USER"),
            "password": pick("password", "OTACTL_PASSWORD"),
            "timeout": getattr(args, "connect_timeout", None) or 10.0}


class Connection:
    """A connected paho client with its network loop in a thread."""

    def __init__(self, host="localhost", port=1883, tls=False, ca=None, user=None, password=None,
                 timeout=10.0, client_id=None):
        import paho.mqtt.client as paho

        self.where = "%s:%d" % (host, port)
        self.client_id = client_id or "otactl-" + uuid.uuid4().hex[:12]
        self.on_message = None
        self._connected = threading.Event()
        self._refused = None
        self._sync_lock = threading.Lock()
        self._sync_waiters = {}
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(100)
        if user is not None:
            client.username_pw_set(user, password)
        if tls:
            try:
                client.tls_set(ca_certs=ca)
            except (OSError, ssl.SSLError) as e:
                raise OtaError("bad_ca", "cannot load the CA %s: %s" % (ca, e))
        self.client = client
        self._subscriptions = []
        try:
            client.connect(host, port, keepalive=30)
        except (OSError, ssl.SSLError) as e:  # refused, DNS, TLS verification failures
            raise OtaError("broker_unreachable", "cannot connect to the MQTT broker at %s: %s"
                           % (self.where, getattr(e, "strerror", None) or e))
        client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise OtaError("broker_unreachable", "no answer from the MQTT broker at %s in %ss"
                           % (self.where, timeout))
        if self._refused is not None:
            self.close()
            raise OtaError("broker_refused", "the MQTT broker at %s refused the connection: %s"
                           % (self.where, self._refused))

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._refused = str(reason_code)
        else:
            for topic, qos in self._subscriptions:  # after a reconnect too
                client.subscribe(topic, qos)
        self._connected.set()

    def _on_message(self, client, userdata, msg):
        if msg.topic.startswith(_SYNC_PREFIX):
            with self._sync_lock:
                event = self._sync_waiters.pop(msg.payload, None)
            if event is not None:
                event.set()
            return
        if self.on_message is not None:
            self.on_message(msg.topic, msg.payload, bool(msg.retain))

    def subscribe(self, topic, qos=1):
        self._subscriptions.append((topic, qos))
        self.client.subscribe(topic, qos)

    def sync(self, timeout=5.0, quiet=0.5):
        """Return once the broker has delivered everything queued for us before this call (the
        retained states after a subscribe): a broker handles one client's packets in order, so a
        marker published to our own topic comes back after them. Where an ACL drops the marker,
        falls back to waiting `quiet` seconds. Returns True when the marker came back."""
        marker = uuid.uuid4().hex.encode()
        topic = _SYNC_PREFIX + self.client_id
        event = threading.Event()
        with self._sync_lock:
            self._sync_waiters[marker] = event
        if (topic, 1) not in self._subscriptions:
            self.subscribe(topic, 1)
        self.client.publish(topic, marker, qos=1)
        if event.wait(timeout):
            return True
        time.sleep(quiet)
        return False

    def reread(self, topics, timeout=5.0):
        """Have the broker send the retained messages of `topics` again, to on_message, and return
        once they are in; the extra subscriptions are dropped again. A new subscription gets the
        topic's retained message (MQTT 3.1.1, 3.3.1.3): the way back to a message the broker dropped
        on its way to us (mosquitto drops outgoing messages beyond max_queued_messages, 1000 by
        default, when a subscriber falls behind)."""
        topics = list(topics)
        for at in range(0, len(topics), 100):  # one SUBSCRIBE per 100 topics
            self.client.subscribe([(topic, 1) for topic in topics[at:at + 100]])
        self.sync(timeout)
        for at in range(0, len(topics), 100):
            self.client.unsubscribe(topics[at:at + 100])

    def publish(self, topic, payload, qos=1, retain=False, timeout=10.0):
        if isinstance(payload, str):
            payload = payload.encode()
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as e:  # paho: not connected / queue full
            raise OtaError("broker_unreachable", "publish to %s failed: %s" % (self.where, e))
        if qos and not info.is_published():
            raise OtaError("broker_unreachable", "no PUBACK from %s in %ss for %s"
                           % (self.where, timeout, topic))
        return info

    def publish_nowait(self, topic, payload, qos=1):
        """Queue a publish (paho delivers it in order); wait_published() checks them all later."""
        return self.client.publish(topic, payload.encode() if isinstance(payload, str) else payload,
                                   qos=qos)

    def close(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(args=None, **overrides):
    """A Connection from the command's flags (and the environment). Raises OtaError."""
    options = settings(args)
    options.update(overrides)
    from .values import seconds

    seconds("--connect-timeout", options["timeout"])
    try:
        return Connection(**options)
    except socket.gaierror as e:
        raise OtaError("broker_unreachable", "cannot resolve %s: %s" % (options["host"], e))
