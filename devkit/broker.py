"""A real MQTT broker for tests and demos, plus a paho-mqtt client that watches device states.

    with Broker(workdir) as broker:            # mosquitto on 127.0.0.1:<free port>, anonymous
        watch = Watcher(broker.host, broker.port)
        watch.publish("/switch/cmd/root", {"type": "ota_trigger", "url": "https://..."})
        msg = watch.wait_for(lambda m: m.state == "failed", timeout=10)
        broker.restart()                       # same port: the "broker restarted mid-update" test
        watch.close()

Backends, first found wins: mosquitto (`mosquitto -c <generated conf>`), then the pip `amqtt` broker
(`amqtt -c <yaml>`; not installed by default). find_backend() is None when neither exists; tests
skip then. Options for later tests: a TLS listener (certfile/keyfile from devkit/tls.py), a password
file and an ACL file (mosquitto only). Persistence is off: a restart forgets retained messages,
as a real broker restart without persistence does.

With a password file the config is the fleet's (README "Broker access control", SHIPPED_SETTINGS):
on the device listeners the client id is the user name, so one device account cannot take another
device's client id (and fire its "offline" last will), and a message is at most MESSAGE_SIZE_LIMIT
bytes. operator_password_file= adds the operators' listener (self.operator_port, TLS when the
broker has TLS): only the accounts of that file, free client ids, so several otactl sessions of one
operator account (a rollout and a `status --watch`) do not take each other's place. An anonymous
test broker has none of this: the fault tests push 64 KB payloads through it to the device.
"""
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# mosquitto.conf(5) of mosquitto 2.0 (Debian 12 ships 2.0.11): the largest legitimate message is a
# trigger (at most 1024 bytes, lib/ota/trigger.py) and a state message is about 300; 4 KiB leaves
# room and refuses a 4 MiB retained "state". max_packet_size disconnects a client sending a bigger
# packet (it counts topic and headers too; SUBSCRIBE packets of 200 topics stay under it).
MESSAGE_SIZE_LIMIT = 4096
MAX_PACKET_SIZE = 16384
SHIPPED_SETTINGS = ["message_size_limit %d" % MESSAGE_SIZE_LIMIT, "max_packet_size %d" % MAX_PACKET_SIZE]
SHIPPED_LISTENER_SETTINGS = ["use_username_as_clientid true"]


class Mosquitto:
    name = "mosquitto"

    @staticmethod
    def binary():
        return shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)

    def command(self, broker):
        # log_dest file, not stdout: mosquitto flushes its log file at every line but block-buffers
        # stdout into our file, and tests read the connect/disconnect lines while it runs.
        lines = ["per_listener_settings true", "persistence false", "log_dest file " + broker.log_path,
                 "log_type error", "log_type warning", "log_type notice", "log_type information",
                 "connection_messages true",
                 # Started as root (CI containers) mosquitto would switch to user "mosquitto", which
                 # cannot read our 0700 temp dirs (password file, certificates): stay who we are.
                 "user " + getpass.getuser()]
        if broker.password_file is not None:
            lines += SHIPPED_SETTINGS
        lines += ["listener %d %s" % (broker.port, broker.host)]
        lines += self._auth(broker)
        if broker.tls:
            lines += ["listener %d %s" % (broker.tls_port, broker.host),
                      "certfile " + broker.tls["certfile"], "keyfile " + broker.tls["keyfile"]]
            lines += self._auth(broker)
        if broker.operator_port:
            lines += ["listener %d %s" % (broker.operator_port, broker.host)]
            if broker.tls:
                lines += ["certfile " + broker.tls["certfile"], "keyfile " + broker.tls["keyfile"]]
            lines += ["allow_anonymous false", "password_file " + broker.operator_password_file]
            lines += ["acl_file " + broker.acl_file] if broker.acl_file else []
        conf = os.path.join(broker.workdir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        return [self.binary(), "-c", conf]

    @staticmethod
    def _auth(broker):
        if broker.password_file is None:
            return ["allow_anonymous true"]
        out = ["allow_anonymous false", "password_file " + broker.password_file] + SHIPPED_LISTENER_SETTINGS
        if broker.acl_file:
            out.append("acl_file " + broker.acl_file)
        return out


class Amqtt:
    # Pluggable fallback, plain listener only (amqtt's YAML config). Not for a fleet: it sometimes
    # hands a retained message to a subscription whose filter does not match its topic (seen in the
    # issue 17 runs); otactl ignores every topic but /switch/state/<id> (mqtt.device_of), and the
    # shipped config (client id tied to the user name, size limits) is mosquitto's.
    name = "amqtt"

    @staticmethod
    def binary():
        # pip puts it next to this interpreter (.venv/bin), which need not be on PATH.
        beside = os.path.join(os.path.dirname(sys.executable), "amqtt")
        return beside if os.access(beside, os.X_OK) else shutil.which("amqtt")

    def command(self, broker):
        if broker.tls or broker.password_file:
            raise RuntimeError("amqtt backend: TLS and password files are mosquitto-only here")
        conf = os.path.join(broker.workdir, "amqtt.yaml")
        with open(conf, "w") as f:
            f.write("listeners:\n  default:\n    type: tcp\n    bind: %s:%d\n"
                    "auth:\n  allow-anonymous: true\n" % (broker.host, broker.port))
        return [self.binary(), "-c", conf]


BACKENDS = (Mosquitto, Amqtt)


def find_backend():
    # OTA_BROKER=amqtt (or mosquitto) picks one, e.g. to test the fallback on a machine that has both.
    wanted = os.environ.get("OTA_BROKER")
    for backend in BACKENDS:
        if wanted and backend.name != wanted:
            continue
        if backend.binary():
            return backend()
    return None


class Broker:
    def __init__(self, workdir=None, host="127.0.0.1", port=None, tls=None, password_file=None,
                 acl_file=None, backend=None, operator_password_file=None):
        # tls: {"certfile": pem, "keyfile": pem} adds a TLS listener on self.tls_port.
        self.workdir = workdir or tempfile.mkdtemp(prefix="broker-")
        os.makedirs(self.workdir, exist_ok=True)
        self.host = host
        self.port = port or free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.password_file = password_file
        self.acl_file = acl_file
        self.operator_password_file = operator_password_file
        self.operator_port = free_port() if operator_password_file else None
        self.backend = backend or find_backend()
        if self.backend is None:
            raise RuntimeError("no MQTT broker: install mosquitto (or pip install amqtt)")
        self.log_path = os.path.join(self.workdir, "broker.log")
        self.proc = None
        self.starts = 0

    def start(self, timeout=10):
        cmd = self.backend.command(self)
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        ports = [p for p in (self.port, self.tls_port, self.operator_port) if p]
        while not all(accepts(self.host, p) for p in ports):
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited %s: %s" % (self.backend.name, self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("%s not accepting on %s after %ss" % (self.backend.name, ports, timeout))
            time.sleep(0.05)
        return self

    def stop(self, timeout=5):
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, down_s=0.0):
        # Same host and port; clients must reconnect. down_s: how long the broker stays away.
        self.stop()
        time.sleep(down_s)
        return self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Message:
    def __init__(self, topic, payload, retain, t):
        self.topic, self.payload, self.retain, self.t = topic, payload, retain, t
        try:
            self.json = json.loads(payload)
        except ValueError:
            self.json = None

    @property
    def state(self):
        return self.json.get("state") if isinstance(self.json, dict) else None

    def get(self, key, default=None):
        return self.json.get(key, default) if isinstance(self.json, dict) else default

    def __repr__(self):
        return "Message(%s %s%s)" % (self.topic, self.payload[:200], " retained" if self.retain else "")


class Watcher:
    """paho-mqtt client: collects messages on `topics` with arrival times; publishes triggers."""

    def __init__(self, host, port, topics=("/switch/state/#",), client_id=None, timeout=10,
                 username=None, password=None, tls_ca=None):
        import paho.mqtt.client as mqtt

        self.messages = []
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.topics = topics
        self._pending_subs = set()
        self.client.reconnect_delay_set(0.1, 1)  # follows a broker restart quickly
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=tls_ca)
        self.refused = None
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise TimeoutError("watcher: no CONNACK/SUBACK from %s:%d" % (host, port))
        if self.refused is not None:
            self.close()
            raise ConnectionRefusedError("watcher: broker refused: %s" % self.refused)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.refused = reason_code
            self._connected.set()
            return
        # Ready only once the broker has acknowledged every subscription: a message published by
        # another client right after the constructor returns must not overtake our SUBSCRIBE.
        with self._cond:
            for topic in self.topics:
                result, mid = client.subscribe(topic, qos=1)
                self._pending_subs.add(mid)
            if not self._pending_subs:
                self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._pending_subs.discard(mid)
            if not self._pending_subs:
                self._connected.set()

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append(Message(msg.topic, msg.payload, bool(msg.retain), time.monotonic()))
            self._cond.notify_all()

    def wait_for(self, predicate, timeout=10, start=0):
        # First message (from index `start`) for which predicate(msg) is true; TimeoutError otherwise.
        deadline = time.monotonic() + timeout
        with self._cond:
            index = start
            while True:
                while index < len(self.messages):
                    if predicate(self.messages[index]):
                        return self.messages[index]
                    index += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching message in %ss; got %r" % (timeout, self.messages[-10:]))
                self._cond.wait(left)

    def states(self, device_id=None):
        return [m.state for m in self.messages
                if device_id is None or m.topic.endswith("/" + device_id)]

    def publish(self, topic, payload, qos=1, retain=False, timeout=10):
        if not isinstance(payload, (bytes, str)):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        return info

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
