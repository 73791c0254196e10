# The locked-down transport, end to end on the simulator: the real micropython binary runs this
# checkout's main.py -> ota.agent with PyPI's umqtt.simple 1.3.4 frozen in (the one that wants
# `import ussl`), against a mosquitto with a TLS listener (server certificate from devkit/tls.py), a
# password file and an ACL, plus nginx and our dev server for the firmware.
#
# - MQTT over verified TLS (lib/ota/mqtt.py): the device connects, reports, is triggered by the
#   operator account, disconnects MQTT for the HTTPS download and confirms; the simulated `ssl`
#   (sim/device/ssl.py, "tls_accounting") counts the open TLS sessions against an IDF heap that holds
#   exactly one: never two at once, none unverified. The same heap makes the classic C3 failure (MQTT
#   TLS held open during the download) reproducible: low_memory / ENOMEM.
# - The ACL: a device's account cannot publish triggers or another device's state, cannot read
#   another device's commands; wrong passwords, anonymous clients and a wrong CA are refused.
# - The bearer token goes only to its configured host (not across a redirect); no token -> http_401.
# - Plain http:// is refused (http_not_allowed) unless ota.allow_http, then works against nginx.
import hashlib
import os
import re
import ssl
import subprocess
import sys
import time

import pytest

from fleet_helpers import ACL
from devkit import simfleet
from devkit.broker import Watcher, find_backend
from devkit.devserver import DevServer
from devkit.nginx import find_nginx

pytestmark = pytest.mark.skipif(
    find_backend() is None or find_backend().name != "mosquitto" or find_nginx() is None,
    reason="needs mosquitto (TLS listener, password file, ACL) and nginx")

OTACTL = os.path.join(os.path.dirname(sys.executable), "otactl")
OPERATOR = ("operator", "op-secret-1")
DEVICES = {  # device id (= MQTT user name) -> password
    "a1a1a1a1a1a1": "dev-pass-a1",
    "b2b2b2b2b2b2": "dev-pass-b2",
    "c3c3c3c3c3c3": "dev-pass-c3",
    "d4d4d4d4d4d4": "dev-pass-d4",
    "e5e5e5e5e5e5": "dev-pass-e5",
    "f6f6f6f6f6f6": "dev-pass-f6",
    "a7a7a7a7a7a7": "dev-pass-a7",
    "b8b8b8b8b8b8": "dev-pass-b8",
}
TOKEN = "tok-9f8e7d6c5b4a"
# One TLS session (43008 bytes) fits the largest free block, two do not (docs/CHIP.md §5).
ONE_SESSION_IDF_HEAP = [[245760, 90000, 60000, 60000]]



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("transport")
    images = {v: simfleet.firmware(v) for v in ("1.0.0", "1.0.1", "1.0.2")}
    # The devices' accounts and the operators' on listeners of their own (devkit/broker.py): on the
    # devices' the client id is the user name, so each account is one connection.
    passwords, operators = root / "passwd", root / "operators"
    for path, users in ((passwords, sorted(DEVICES.items())), (operators, [OPERATOR])):
        for i, (user, password) in enumerate(users):
            subprocess.run(["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) + [str(path), user, password],
                           check=True, capture_output=True)
    acl = root / "acl"
    acl.write_text(ACL)
    with simfleet.lab(root, images, broker_tls=True, password_file=str(passwords),
                      acl_file=str(acl), operator_password_file=str(operators)) as world:
        pki = world["pki"]
        with DevServer(world["www"], pki.server_cert, pki.server_key) as dev:
            yield dict(world, dev=dev)


def operator(world, topics=("/switch/state/#",)):
    # The operator account over the TLS listener, verifying the broker with the test CA.
    broker = world["broker"]
    return Watcher("localhost", broker.operator_port, topics=topics, username=OPERATOR[0], password=OPERATOR[1],
                   tls_ca=world["pki"].ca_pem)


class Rig:
    def __init__(self, world, device_id, ota=None, **sim):
        self.world, self.device_id = world, device_id
        self.state_topic = "/switch/state/" + device_id
        broker = world["broker"]
        mqtt = {"host": "localhost", "port": broker.tls_port, "tls": True, "ca_path": "ca.der",
                "user": device_id, "password": DEVICES[device_id]}
        self.device = simfleet.new_device(os.path.join(world["root"], device_id), world["images"]["1.0.0"],
                                          "localhost", broker.tls_port, ca_der=world["pki"].ca_der,
                                          unique_id=device_id, ota=ota, mqtt=mqtt, tls_accounting=True,
                                          idf_heap=ONE_SESSION_IDF_HEAP, **sim)
        self.watch = operator(world, topics=(self.state_topic,))

    def start(self):
        self.device.start()
        return self.wait_for(lambda m: m.state == "idle")

    def trigger(self, url, version, job):
        mark = len(self.watch.messages)
        self.watch.publish("/switch/cmd/" + self.device_id, {
            "type": "ota_trigger", "url": url, "id": job, "version": version,
            "sha256": hashlib.sha256(self.world["images"][version]).hexdigest()})
        return mark

    def wait_for(self, predicate, timeout=40, start=0):
        try:
            return self.watch.wait_for(lambda m: m.topic == self.state_topic and predicate(m), timeout, start)
        except TimeoutError as e:
            raise TimeoutError("%s\nconsole tail:\n%s" % (e, self.device.console()[-3000:])) from None

    def states(self, start=0):
        return [(m.state, m.get("reason")) for m in self.watch.messages[start:] if m.topic == self.state_topic]

    def sessions(self):
        # The sim-ssl console lines: [(event, open, fields)]
        out = []
        for line in self.device.console().splitlines():
            match = re.match(r"sim-ssl: (\w+) open=(\d+) peak=(\d+) opened=(\d+)(.*)", line)
            if match:
                out.append((match.group(1), int(match.group(2)), dict(re.findall(r"(\w+)=(\S+)", match.group(5)))))
        return out

    def close(self):
        if self.watch is None:
            return
        self.device.stop()
        self.watch.close()
        self.watch = None
        assert "Traceback" not in self.device.console(), self.device.console()[-3000:]
        # every SSLContext the agent made was seeded with the radio on (docs/CHIP.md §12)
        assert "context made before the radio" not in self.device.console()


@pytest.fixture
def rigs(world):
    made = []

    def make(device_id, **options):
        rig = Rig(world, device_id, **options)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def _ok(version, job):
    return lambda m: m.state == "ok" and m.get("version") == version and m.get("job") == job


# --- 1. MQTT over TLS, one TLS session at a time -------------------------------------------------------
def test_update_over_tls_mqtt_one_session_at_a_time(world, rigs):
    rig = rigs("a1a1a1a1a1a1")
    rig.start()
    log_start = len(world["broker"].log())
    # Sent by the operator's CLI over the TLS listener with the operator account (otactl/mqtt.py).
    mark = len(rig.watch.messages)
    env = dict(os.environ, OTACTL_PASSWORD=OPERATOR[1])
    sent = subprocess.run(
        [OTACTL, "trigger", "--url", world["web"].url("firmware-1.0.1.bin"), "--version", "1.0.1",
         "--sha256", hashlib.sha256(world["images"]["1.0.1"]).hexdigest(), "--job", "job-tls",
         "--device", rig.device_id, "--broker", "localhost:%d" % world["broker"].operator_port,
         "--ca", world["pki"].ca_pem, "--user", OPERATOR[0]], capture_output=True, text=True, env=env, timeout=30)
    assert sent.returncode == 0, (sent.stdout, sent.stderr)
    ok = rig.wait_for(_ok("1.0.1", "job-tls"), start=mark)
    assert ok.get("slot") == "ota_1"
    states = [s for s, _ in rig.states(mark)]
    # "downloading" (retained) before the disconnect, "rebooting" after the reconnect, no last will.
    assert states.index("downloading") < states.index("rebooting") < states.index("ok"), states
    assert "offline" not in states, states
    assert [b["version"] for b in rig.device.boots()] == ["1.0.0", "1.0.1"]

    # The broker saw the device leave cleanly for the download and come back: the DISCONNECT before
    # the download, the reconnect to say "rebooting" (then DISCONNECT + reset), the new image's connect.
    log = world["broker"].log()[log_start:]
    events = re.findall(r"(New client connected from \S+ as %s .*u'%s'|Client %s (?:disconnected|closed))"
                        % ((rig.device_id,) * 3), log)
    events = ["connect" if e.startswith("New") else "disconnect" if e.endswith("disconnected") else "closed"
              for e in events]
    assert events[:4] == ["disconnect", "connect", "disconnect", "connect"], log

    # TLS sessions, as the simulated IDF heap counted them: never two at once, every one verified
    # with the name checked; MQTT (broker) and HTTPS (nginx) alternate.
    sessions = rig.sessions()
    opens = [fields for event, _, fields in sessions if event == "open"]
    assert max(count for _, count, _ in sessions) == 1, sessions
    assert not [s for s in sessions if s[0] == "ENOMEM"], sessions
    assert opens and all(f["verify"] == "required" and f["host"] == "localhost" for f in opens), opens
    # boot 1: MQTT, HTTPS download, MQTT ("rebooting"); boot 2: MQTT
    assert len(opens) >= 4, sessions


def test_two_tls_sessions_at_once_is_enomem(world, tmp_path):
    # The classic C3 failure, reproduced: a device program that keeps MQTT over TLS connected while
    # it downloads. Same frozen code (ota.mqtt, ota.update), same one-session IDF heap as above.
    # Also: the ussl stand-in refuses to wrap without our context, and a context that does not
    # require a certificate, or a broker certificate from another CA, are refused.
    broker, web = world["broker"], world["web"]
    device_id = "b2b2b2b2b2b2"
    device = simfleet.new_device(str(tmp_path / "dev"), world["images"]["1.0.0"], "localhost",
                                 broker.tls_port, ca_der=world["pki"].ca_der, unique_id=device_id,
                                 tls_accounting=True, idf_heap=ONE_SESSION_IDF_HEAP)
    device.write_fs("other_ca.der", open(world["pki"].other_ca_der, "rb").read())
    device.write_fs("main.py", MAIN_TWO_SESSIONS % {
        "host": "localhost", "port": broker.tls_port, "user": device_id, "password": DEVICES[device_id],
        "url": web.url("firmware-1.0.1.bin"),
        "sha": hashlib.sha256(world["images"]["1.0.1"]).hexdigest()})
    assert device.run(timeout=60) == "exit", device.console()[-3000:]
    console = device.console()
    results = dict(re.findall(r"^RESULT (\w+) (.*)$", console, re.M))
    assert results["flavour"] == "pypi-1.3.4", console
    assert results["unverified_ussl"].startswith("ValueError"), results
    assert results["cert_none_context"].startswith("ValueError"), results
    assert results["wrong_ca"].startswith("ValueError"), results  # mbedTLS: certificate not trusted
    assert results["mqtt_connected"] == "0", results  # CONNACK: session present 0
    # The open MQTT session is gone from idf_heap_info, so the heap check refuses before connecting
    # (without it the second handshake would run out half-way: OSError(16), docs/CHIP.md).
    assert results["download_with_mqtt_open"].startswith("low_memory: largest idf block"), results
    assert results["download_after_disconnect"] == "ok 1.0.1", results
    assert "sim-ssl: open open=2" not in console


MAIN_TWO_SESSIONS = '''
import ntptime
import ssl
import sys
ntptime.settime()  # the RTC starts at 2000-01-01: no certificate verifies before (docs/CHIP.md)
from umqtt.simple import MQTTClient
from ota import mqtt, update
from ota.errors import OtaError

def result(name, value):
    print("RESULT", name, value)

def context(ca_path, mode=ssl.CERT_REQUIRED):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = mode
    with open(ca_path, "rb") as f:
        ctx.load_verify_locations(cadata=f.read())
    return ctx

def attempt(name, fn):
    try:
        result(name, "returned %%r" %% (fn(),))
    except Exception as e:
        result(name, "%%s %%s" %% (type(e).__name__, e))

args = ("%(user)s", "%(host)s", %(port)d, "%(user)s", "%(password)s", 30)
client = mqtt.client(MQTTClient, *args, ssl_context=context("ca.der"))
result("flavour", "pypi-1.3.4" if hasattr(client, "ssl_params") else "micropython-lib")
import ussl
attempt("unverified_ussl", lambda: ussl.wrap_socket(None, cert_reqs=0))
attempt("cert_none_context", lambda: mqtt.client(MQTTClient, *args, ssl_context=context("ca.der", ssl.CERT_NONE)))
attempt("wrong_ca", lambda: mqtt.client(MQTTClient, *args, ssl_context=context("other_ca.der")).connect())
result("mqtt_connected", client.connect())
from ota import config
cfg = config.merge({})["ota"]
cfg["retries"] = 0
def download():
    try:
        r = update.run("%(url)s", sha256="%(sha)s", config=cfg)
        return "ok %%s" %% r["version"]
    except OtaError as e:
        return str(e)
result("download_with_mqtt_open", download())
client.disconnect()
result("download_after_disconnect", download())
'''


# --- 2. the broker's ACL -----------------------------------------------------------------------------
def _paho(world, user, password, tls=True, ca=None):
    import paho.mqtt.client as paho

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="acl-%s-%d" % (user, time.monotonic_ns()))
    client.username_pw_set(user, password)
    if tls:
        client.tls_set(ca_certs=ca or world["pki"].ca_pem)
    return client


def test_acl_device_account_cannot_trigger_or_impersonate(world):
    broker = world["broker"]
    me, other = "c3c3c3c3c3c3", "d4d4d4d4d4d4"
    spy = operator(world, topics=("#",))  # the operator reads everything
    # another device account listens (one account is one connection: a second login as `me` would
    # take the first one's place)
    listener = Watcher("localhost", broker.tls_port, topics=("/switch/cmd/" + other, "/switch/cmd/root"),
                       username="a7a7a7a7a7a7", password=DEVICES["a7a7a7a7a7a7"], tls_ca=world["pki"].ca_pem)
    try:
        device = _paho(world, me, DEVICES[me])
        device.connect("localhost", broker.tls_port)
        device.loop_start()
        for topic, payload in (("/switch/cmd/root", b'{"type":"ota_trigger","url":"https://evil/x.bin","id":"acl-1"}'),
                               ("/switch/cmd/" + other, b'{"type":"ota_trigger","url":"https://evil/y.bin","id":"acl-2"}'),
                               ("/switch/state/" + other, b'{"state":"ok","version":"9.9.9"}'),
                               ("/switch/state/" + me, b'{"state":"idle","probe":"own-topic"}')):
            device.publish(topic, payload, qos=1).wait_for_publish(5)
        # Positive control: the device's own state topic gets through, so the others had their chance.
        spy.wait_for(lambda m: m.topic == "/switch/state/" + me and m.get("probe") == "own-topic", timeout=5)
        # The operator's trigger to the other device: the spy sees it, our device account does not.
        spy.publish("/switch/cmd/" + other, {"type": "ota_trigger", "url": "https://localhost/z.bin", "id": "op-1"})
        spy.publish("/switch/cmd/root", {"type": "ota_trigger", "url": "https://localhost/r.bin", "id": "op-2"})
        spy.wait_for(lambda m: m.get("id") == "op-1", timeout=5)
        listener.wait_for(lambda m: m.get("id") == "op-2", timeout=5)  # the fleet topic is readable
        time.sleep(0.5)
        device.loop_stop()
        device.disconnect()
    finally:
        spy.close()
        listener.close()
    seen = [(m.topic, m.payload) for m in spy.messages]
    assert not [s for s in seen if b"evil" in s[1] or b"9.9.9" in s[1]], seen
    assert [m.get("id") for m in listener.messages] == ["op-2"], listener.messages


@pytest.mark.parametrize("who", ["wrong password", "anonymous", "unknown user", "plain listener, anonymous"])
def test_broker_refuses(world, who):
    broker = world["broker"]
    port = broker.port if who.startswith("plain") else broker.tls_port
    user, password = {"wrong password": ("c3c3c3c3c3c3", "nope"), "unknown user": ("mallory", "x")}.get(
        who, (None, None))
    with pytest.raises(ConnectionRefusedError):
        Watcher("localhost", port, username=user, password=password,
                tls_ca=None if who.startswith("plain") else world["pki"].ca_pem, timeout=5)


def test_broker_with_a_certificate_from_another_ca_is_refused(world):
    client = _paho(world, *OPERATOR, ca=world["pki"].other_ca_pem)
    with pytest.raises(ssl.SSLError):
        client.connect("localhost", world["broker"].operator_port)


# --- 3. the bearer token ---------------------------------------------------------------------------
def test_token_only_to_its_host(world, rigs):
    dev = world["dev"]
    dev.token, dev.token_hosts = TOKEN, {"localhost"}
    dev.redirects = {"/moved/fw.bin": (302, "{ip_origin}/firmware-1.0.2.bin?t=tok-2")}
    try:
        with_token = rigs("e5e5e5e5e5e5", ota={"token": TOKEN, "token_origin": "https://localhost:%d" % dev.port})
        without = rigs("f6f6f6f6f6f6")
        with_token.start()
        without.start()
        # No token: the server answers 401, nothing is written.
        mark = without.trigger(dev.url("firmware-1.0.1.bin?t=none"), "1.0.1", "job-notoken")
        failed = without.wait_for(lambda m: m.state == "failed" and m.get("job") == "job-notoken", start=mark)
        assert failed.get("reason") == "http_401", failed
        # With the token: the server requires it and the update works.
        mark = with_token.trigger(dev.url("firmware-1.0.1.bin?t=tok-1"), "1.0.1", "job-tok-1")
        with_token.wait_for(_ok("1.0.1", "job-tok-1"), start=mark)
        # A redirect to another host (127.0.0.1) does not carry it.
        mark = with_token.trigger(dev.url("moved/fw.bin?t=tok-2"), "1.0.2", "job-tok-2")
        with_token.wait_for(_ok("1.0.2", "job-tok-2"), start=mark)
        requests = [(r["host"], r["path"], r["headers"].get("authorization")) for r in dev.requests]
    finally:
        dev.token, dev.redirects = None, {}
    assert ("localhost", "/firmware-1.0.1.bin?t=none", None) in requests
    assert ("localhost", "/firmware-1.0.1.bin?t=tok-1", "Bearer " + TOKEN) in requests
    assert ("localhost", "/moved/fw.bin?t=tok-2", "Bearer " + TOKEN) in requests
    assert ("127.0.0.1", "/firmware-1.0.2.bin?t=tok-2", None) in requests
    assert not [r for r in requests if r[0] != "localhost" and r[2]], requests
    assert [b["version"] for b in with_token.device.boots()] == ["1.0.0", "1.0.1", "1.0.2"]
    assert [b["version"] for b in without.device.boots()] == ["1.0.0"]


# --- 4. plain http -----------------------------------------------------------------------------------
def test_plain_http_only_with_allow_http(world, rigs):
    web = world["web"]
    refused = rigs("a7a7a7a7a7a7")
    refused.start()
    mark = refused.trigger(web.http_url("firmware-1.0.1.bin"), "1.0.1", "job-http-1")
    failed = refused.wait_for(lambda m: m.state == "failed" and m.get("job") == "job-http-1", start=mark)
    assert failed.get("reason") == "http_not_allowed", failed
    assert len(refused.device.boots()) == 1
    refused.close()
    allowed = rigs("b8b8b8b8b8b8", ota={"allow_http": True})
    allowed.start()
    mark = allowed.trigger(web.http_url("firmware-1.0.1.bin"), "1.0.1", "job-http-2")
    allowed.wait_for(_ok("1.0.1", "job-http-2"), start=mark)
    # Plain http needs no TLS session for the download: only the MQTT ones were opened.
    assert all(f["host"] == "localhost" for e, _, f in allowed.sessions() if e == "open")
    assert max(c for _, c, _ in allowed.sessions()) == 1


# --- 5. ota.mqtt on CPython: both umqtt.simple constructor shapes ------------------------------------
class _MplClient:
    # micropython-lib's umqtt.simple: ssl=<SSLContext>, connect() calls
    # self.ssl.wrap_socket(sock, server_hostname=self.server)
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        self.server, self.ssl = server, ssl

    def connect(self):
        if self.ssl:
            return self.ssl.wrap_socket("SOCK", server_hostname=self.server)
        return "SOCK"


class _PypiClient:
    # PyPI's micropython-umqtt.simple 1.3.4: ssl=True + ssl_params, connect() does `import ussl`.
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=False,
                 ssl_params={}):
        self.server, self.ssl, self.ssl_params = server, ssl, ssl_params

    def connect(self):
        if self.ssl:
            import ussl
            return ussl.wrap_socket("SOCK", **self.ssl_params)
        return "SOCK"


class _Context:
    verify_mode = ssl.CERT_REQUIRED

    def __init__(self):
        self.wrapped = []

    def wrap_socket(self, sock, server_hostname=None):
        self.wrapped.append((sock, server_hostname))
        return "TLS(%s)" % sock


@pytest.mark.parametrize("flavour", [_MplClient, _PypiClient])
def test_mqtt_client_both_flavours_verify(flavour, monkeypatch):
    from ota import mqtt

    monkeypatch.delitem(sys.modules, "ussl", raising=False)
    ctx = _Context()
    client = mqtt.client(flavour, "dev", "broker.lan", 8883, "dev", "pw", 30, ssl_context=ctx)
    assert client.connect() == "TLS(SOCK)" and ctx.wrapped == [("SOCK", "broker.lan")]
    plain = mqtt.client(flavour, "dev", "broker.lan", 1883, None, None, 30)
    assert plain.ssl in (None, False) and plain.connect() == "SOCK"
    unverified = _Context()
    unverified.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError):
        mqtt.client(flavour, "dev", "broker.lan", 8883, "dev", "pw", 30, ssl_context=unverified)
    if flavour is _PypiClient:  # someone else's 1.3.4 client with ssl=True: refused, never unverified
        rogue = _PypiClient("x", "broker.lan", ssl=True, ssl_params={"cert_reqs": ssl.CERT_NONE})
        with pytest.raises(ValueError):
            rogue.connect()
