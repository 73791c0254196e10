# The agent's parts built alone, each with fakes and without an Agent: link.Link (Wi-Fi, clock, the
# MQTT session, publishing), intake.Intake (a message -> a job, None, or a refusal) and jobrun.Runner
# (one job to its end). Each gets what it needs through its constructor; these tests prove it by
# building nothing else. The agent that wires them together is test_agent_unit.py's.
import hashlib
import json
import sys
import types

import pytest

import fakes  # puts lib/ on sys.path
from ota import intake, jobs, link, replay, state
from ota.errors import OtaError
from ota.slots import Slots


class Reset(BaseException):
    pass


def _reset():
    raise Reset()


DEV = "a0b1c2d3e4f5"
OWN = "/switch/cmd/" + DEV
URL = "https://fw.example.com/app-1.1.0.bin"


def payload(**fields):
    return json.dumps(dict({"type": "ota_trigger", "url": URL}, **fields)).encode()


# --- fakes --------------------------------------------------------------------------------------------
class Client:
    # umqtt.simple's surface, as far as Link uses it.
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        self.client_id, self.server, self.port, self.keepalive = client_id, server, port, keepalive
        self.sock = types.SimpleNamespace(closed=False)
        self.sock.close = lambda: setattr(self.sock, "closed", True)
        self.published, self.subscribed, self.incoming, self.pings = [], [], [], 0
        self.disconnected = False
        self.fail = None  # an exception the next I/O raises

    def set_callback(self, cb):
        self.cb = cb

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, json.loads(msg), retain, qos)

    def connect(self):
        pass

    def subscribe(self, topic, qos=0):
        self.subscribed.append((topic, qos))

    def publish(self, topic, msg, retain=False, qos=0):
        self.published.append((topic, json.loads(msg), retain))

    def check_msg(self):
        if self.fail is not None:
            raise self.fail
        while self.incoming:
            self.cb(*self.incoming.pop(0))

    def ping(self):
        self.pings += 1

    def disconnect(self):
        self.disconnected = True

    def states(self):
        return [m for _, m, _ in self.published]


class WLAN:
    connects = True  # class knob: False = the access point never answers

    def __init__(self, interface):
        self.up = False
        self.disconnects = 0

    def active(self, on=None):
        return True

    def isconnected(self):
        return self.up

    def status(self):
        return 1000  # STAT_IDLE

    def connect(self, ssid, password):
        self.up = WLAN.connects

    def disconnect(self):
        self.disconnects += 1


def make_link(cfg_over=None, feed=None):
    from ota import config

    cfg = config.merge(cfg_over or {"mqtt": {"host": "broker.lan", "keepalive_s": 60}})
    messages, oversize = [], []
    reporter = state.Reporter(DEV, "1.0.0", "ota_0")
    reporter.message("idle")
    network = types.SimpleNamespace(WLAN=WLAN, STA_IF=0, STAT_IDLE=1000)
    made = link.Link(cfg, DEV, reporter, lambda t, p: messages.append((t, p)),
                     lambda t, n: oversize.append((t, n)), network_module=network, mqtt_class=Client,
                     feed=feed)
    return made, messages, oversize


@pytest.fixture
def clock(monkeypatch):
    now = {"ms": 1000}
    monkeypatch.setattr(state, "ticks_ms", lambda: now["ms"])
    monkeypatch.setattr(link.time, "sleep", lambda s: now.__setitem__("ms", now["ms"] + int(s * 1000)))
    monkeypatch.setitem(sys.modules, "ntptime", types.SimpleNamespace(settime=lambda: None))
    WLAN.connects = True
    return now


# --- Link ---------------------------------------------------------------------------------------------
def test_link_connects_subscribes_and_says_its_last_state(clock):
    lk, _, _ = make_link()
    assert not lk.connected and lk.client is None  # the constructor connects nothing
    lk.connect()
    client = lk.client
    assert lk.connected and lk.clock_set
    assert client.client_id == DEV and client.server == "broker.lan"
    assert client.subscribed == [(b"/switch/cmd/root", 1), (OWN.encode(), 1)]
    topic, will, retain, qos = client.will
    assert (topic, will["state"], retain, qos) == (b"/switch/state/" + DEV.encode(), "offline", True, 1)
    assert client.states()[-1]["state"] == "idle"  # the reporter's last state, sent again


def test_link_check_hands_messages_to_the_callback_and_names_a_cut_packet_a_lost_link(clock):
    lk, messages, _ = make_link()
    lk.connect()
    lk.client.incoming.append((b"/switch/cmd/root", b"{}"))
    lk.check()
    assert messages == [(b"/switch/cmd/root", b"{}")]
    lk.client.fail = IndexError("index out of range")  # umqtt read b"" from a broker that hung up
    with pytest.raises(OSError):
        lk.check()


def test_link_pings_only_after_half_the_keepalive_without_a_send(clock):
    lk, _, _ = make_link()
    lk.connect()
    clock["ms"] += 29000
    lk.keepalive()
    assert lk.client.pings == 0
    clock["ms"] += 2000  # 31 s since the last send: more than half of 60 s
    lk.keepalive()
    assert lk.client.pings == 1
    lk.keepalive()
    assert lk.client.pings == 1  # the ping counts as a send


def test_link_drop_and_disconnect(clock):
    lk, _, _ = make_link()
    lk.connect()
    first = lk.client
    lk.drop()
    assert first.sock.closed and not first.disconnected and lk.client is None and lk.clock_set
    lk.connect()
    lk.drop(resync=True)  # the agent's loop after a failure: ask NTP again at the next connect
    assert not lk.clock_set
    lk.connect()
    second = lk.client
    lk.disconnect()
    assert second.disconnected and lk.client is None


def test_link_publishes_nothing_while_down_but_remembers_the_state(clock):
    lk, _, _ = make_link()
    lk.publish("downloading", job="j1", progress=5)  # no client: built, not sent, no error
    lk.connect()
    last = lk.client.states()[-1]
    assert (last["state"], last["job"], last["progress"]) == ("downloading", "j1", 5)


def test_link_refuse_says_failed_or_keeps_the_state(clock):
    lk, _, _ = make_link()
    lk.connect()
    lk.refuse("bad_json", "x")
    assert [(m["state"], m["reason"]) for m in lk.client.states()][-1] == ("failed", "bad_json")
    lk.publish("downloading", job="j1", progress=40)
    lk.refuse("busy", "refused j2", keep_state=True)
    last = lk.client.states()[-1]
    assert (last["state"], last["job"], last["progress"], last["reason"]) == ("downloading", "j1", 40, "busy")


def test_link_wifi_wait_is_bounded_fed_and_starts_afresh(clock):
    WLAN.connects = False
    feeds = []
    lk, _, _ = make_link(feed=lambda: feeds.append(clock["ms"]))
    start = clock["ms"]
    with pytest.raises(OSError):
        lk.wifi(limit_ms=1500)  # the health gate's time left, under the 20 s default
    assert 1500 <= clock["ms"] - start < 2000 and len(feeds) >= 15
    with pytest.raises(OSError):
        lk.connect()
    assert lk.client is None


# --- Intake ---------------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    return jobs.Jobs(str(tmp_path / "ota_job.json"))


def test_intake_returns_the_job_and_writes_nothing(store, tmp_path):
    taker = intake.Intake(DEV, OWN, store)
    job = taker.take(b"/switch/cmd/root", payload(id="j1", sha256="AB" * 32))
    assert (job["id"], job["url"], job["sha256"]) == ("j1", URL, "ab" * 32)
    assert store.current is None and store.seen == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("message,reason", [(b"ON", "bad_json"), (b"[1]", "not_object"),
                                            (payload(url="ftp://x/fw.bin"), "bad_url")])
def test_intake_refuses_a_bad_trigger_with_its_reason(store, message, reason):
    with pytest.raises(OtaError) as e:
        intake.Intake(DEV, OWN, store).take(b"/switch/cmd/root", message)
    assert e.value.reason == reason


def test_intake_ignores_what_is_not_a_trigger_for_us(store):
    taker = intake.Intake(DEV, OWN, store)
    assert taker.take(b"/switch/cmd/root", b'{"type": "switch_set", "state": "on"}') is None
    assert taker.take(b"/switch/cmd/root", payload(target="ffffffffffff")) is None
    for topic in (OWN, OWN.encode()):  # on our own topic, someone else's trigger is a mistake
        with pytest.raises(OtaError) as e:
            taker.take(topic, payload(target="ffffffffffff"))
        assert e.value.reason == "wrong_target"


def test_intake_drops_duplicates_and_refuses_while_busy(store):
    taker = intake.Intake(DEV, OWN, store)
    store.start({"id": "j-old", "type": "ota_trigger"}, "ok")
    assert taker.take(b"/switch/cmd/root", payload(id="j-old")) is None  # seen before
    queued = taker.take(b"/switch/cmd/root", payload(id="j1"))
    assert taker.take(b"/switch/cmd/root", payload(id="j1"), queued=queued) is None  # a redelivery
    with pytest.raises(OtaError) as e:
        taker.take(b"/switch/cmd/root", payload(id="j2"), running=queued)
    assert (e.value.reason, e.value.detail) == ("busy", "refused j2")
    signed = payload(signature="00" * 64)  # signed, no id: the detail must not assume one
    with pytest.raises(OtaError) as e:
        taker.take(b"/switch/cmd/root", signed, queued=queued)
    assert e.value.detail == "refused a trigger without id"
    running = taker.take(b"/switch/cmd/root", signed)
    assert taker.take(b"/switch/cmd/root", signed, running=running) is None  # the same signed one


def test_intake_gives_a_trigger_without_id_a_stable_content_id(store):
    taker = intake.Intake(DEV, OWN, store)
    first = taker.take(b"/switch/cmd/root", payload())["id"]
    assert first.startswith("auto-") and taker.take(b"/switch/cmd/root", payload())["id"] == first
    assert taker.take(b"/switch/cmd/root", payload(version="1.1.0"))["id"] != first


def test_intake_too_long_is_the_parser_reason():
    error = intake.too_long(70000)
    assert error.reason == "too_long" and "70000" in error.detail


# --- Runner ---------------------------------------------------------------------------------------------
class FakeLink:
    # The Link's public surface, recording what the runner asks of it.
    def __init__(self, tls=False):
        self.device_id, self.tls, self.connected = DEV, tls, True
        self.calls = []
        self.fail_check = False

    def publish(self, state_name, **fields):
        self.calls.append(("publish", state_name, fields.get("reason")))

    def refuse(self, reason, detail, keep_state=False):
        self.calls.append(("refuse", reason, keep_state))

    def check(self):
        self.calls.append(("check",))
        if self.fail_check:
            raise OSError(104, "ECONNRESET")

    def set_clock(self):
        self.calls.append(("set_clock",))

    def open(self):
        self.calls.append(("open",))
        self.connected = True

    def drop(self, resync=False):
        self.calls.append(("drop",))
        self.connected = False

    def disconnect(self):
        self.calls.append(("disconnect",))
        self.connected = False

    def states(self):
        return [(c[1], c[2]) for c in self.calls if c[0] == "publish"]


class Updater:
    def __init__(self, error=None, total=300000):
        self.calls, self.error, self.total = [], error, total

    def __call__(self, url, progress=None, **kw):
        self.calls.append(dict(kw, url=url))
        for done in range(0, self.total + 1, 65536):
            progress(done, self.total)
        progress(self.total, self.total)
        if self.error:
            raise self.error
        return {"result": "ok", "version": "1.1.0", "bytes": self.total, "slot": "ota_1"}


@pytest.fixture
def parts(tmp_path, monkeypatch):
    from ota import config

    esp = fakes.make_device()
    image = fakes.build_image("1.0.0")
    esp.slots["ota_0"].data[:len(image)] = image
    monkeypatch.setitem(sys.modules, "esp32", esp)  # otadata.read() with no module imports it
    # jobrun imports machine (the reset after a job). Imported here, not at collection, so that a
    # module test_agent_unit's agent imports later is not bound to our fake; and patched, because
    # jobrun keeps the machine it was first imported with (maybe test_agent_unit's).
    machine = types.SimpleNamespace(reset=_reset)
    monkeypatch.setitem(sys.modules, "machine", machine)
    from ota import jobrun

    monkeypatch.setattr(jobrun, "machine", machine)
    ns = types.SimpleNamespace(esp=esp, store=jobs.Jobs(str(tmp_path / "ota_job.json")),
                               replay=replay.Replay(str(tmp_path / "ota_seq.json")), slots=Slots(esp))

    def make(link_=None, updater=None, **ota):
        ns.link = link_ or FakeLink()
        cfg = config.merge({"ota": ota})["ota"]
        return jobrun.Runner(ns.link, ns.store, ns.replay, ns.slots, cfg, updater, feed=lambda: None)

    ns.make = make
    return ns


def _job(**fields):
    from ota import trigger

    return trigger.parse(payload(**dict({"id": "j1"}, **fields)))


def test_slots_are_read_once_from_the_running_partition(parts):
    slots = parts.slots
    assert (slots.running, slots.version, slots.project) == ("ota_0", "1.0.0", "ota-test")
    assert slots.other.info()[4] == "ota_1"


def test_runner_runs_an_update_to_the_reboot(parts):
    up = Updater()
    runner = parts.make(updater=up)
    with pytest.raises(Reset):
        runner.run(_job())
    assert up.calls[0]["target"] is parts.slots.other and up.calls[0]["running"] == "1.0.0"
    assert up.calls[0]["running_project"] == "ota-test" and up.calls[0]["feed"] is runner.feed
    states = [s for s, _ in parts.link.states()]
    assert states[0] == "downloading" and states[-2:] == ["verifying", "rebooting"]
    assert ("check",) in parts.link.calls  # the link polled between chunks (plain MQTT)
    assert parts.link.calls[-1] == ("disconnect",)  # clean: no last will over "rebooting"
    record = parts.store.current
    assert (record["state"], record["from_slot"], record["to_slot"]) == ("rebooting", "ota_0", "ota_1")
    assert runner.job is None


def test_the_real_runner_takes_a_workspace_at_start_up_and_lends_it_to_every_update(parts, monkeypatch, tmp_path):
    # updater None: the real update.run (replaced here by the recording Updater after the runner
    # was made) gets the workspace the runner took when it was made, the same one every job.
    from devkit.tls import make_pki
    from ota import update

    pki = make_pki(str(tmp_path / "pki"))
    runner = parts.make(ca_path=pki.ca_der, chunk_size=8192)
    ws = runner.workspace
    assert len(ws.buf) == 8192 and ws.tls_context is None  # the context waits for the radio
    runner.radio_up()
    assert ws.tls_context is not None and ws.problem is None
    up = Updater()
    monkeypatch.setattr(update, "run", up)
    for job_id in ("j1", "j2"):
        with pytest.raises(Reset):
            runner.run(_job(id=job_id))
    assert [c["workspace"] for c in up.calls] == [ws, ws]
    assert parts.make(updater=Updater()).workspace is None  # an injected updater gets none


@pytest.mark.parametrize("radio", [True, False])
def test_the_real_runner_gives_every_connection_of_a_download_one_context(parts, monkeypatch, radio):
    # Through the telemetry wrapper and the real update.run: with the radio up, the workspace's
    # context; without it (no workspace context), the one update.run makes, once, for the first
    # connection and the resume after a drop alike.
    import ota
    from ota import update

    img = fakes.build_image("1.1.0", payload_size=40000)

    class Server(fakes.FakeServer):
        made = []

        def context(self, ca_path):
            self.made.append(ca_path)
            return "ctx#%d" % len(self.made)

    server = Server(img, plans=[{"drop_after": 12000}])
    monkeypatch.setattr(ota, "https", server, raising=False)
    monkeypatch.setattr(update, "_running_identity", lambda part: ("1.0.0", "ota-test"), raising=False)
    runner = parts.make(retry_backoff_ms=0, progress_bytes=8192)
    if radio:
        runner.radio_up()  # makes the workspace's context with this server's context()
    assert server.made == (["ca.der"] if radio else [])
    with pytest.raises(Reset):
        runner.run(_job(sha256=hashlib.sha256(img).hexdigest()))
    assert server.made == ["ca.der"] and [o[1] for o in server.opens] == [0, 12000]
    assert [o[2]["tls_context"] for o in server.opens] == ["ctx#1", "ctx#1"]
    assert parts.store.current["state"] == "rebooting"


def test_runner_over_tls_disconnects_for_the_download_and_reopens_to_say_rebooting(parts):
    runner = parts.make(FakeLink(tls=True), Updater())
    with pytest.raises(Reset):
        runner.run(_job())
    calls = parts.link.calls
    assert ("check",) not in calls  # no MQTT session during the download
    assert calls.index(("disconnect",)) < calls.index(("open",)) < calls.index(("publish", "rebooting", None))


def test_runner_keeps_downloading_when_the_broker_goes(parts):
    parts.make()  # the link first, so the check can fail
    parts.link.fail_check = True
    runner = parts.make(parts.link, Updater())
    with pytest.raises(Reset):
        runner.run(_job())
    assert ("drop",) in parts.link.calls and parts.store.current["state"] == "rebooting"


@pytest.mark.parametrize("error,reason", [(OtaError("http_404", "not found"), "http_404"),
                                          (OSError(28, "ENOSPC"), "io_error"),
                                          (MemoryError(), "low_memory"),
                                          (KeyError("bug"), "internal_error")])
def test_runner_reports_a_failed_job_and_returns(parts, error, reason):
    runner = parts.make(updater=Updater(error=error))
    runner.run(_job())  # never raises for a failed job
    assert parts.link.states()[-1] == ("failed", reason)
    assert (parts.store.current["state"], parts.store.current["reason"]) == ("failed", reason)


def test_runner_policy_refusal_before_any_download(parts):
    up = Updater()
    runner = parts.make(updater=up, require_sha256=True)
    runner.run(_job())
    assert up.calls == [] and parts.link.states() == [("failed", "sha256_required")]
    assert parts.store.seen == ["j1"]  # unsigned: remembered, so a retained trigger is not run again


def test_runner_without_a_second_slot_refuses(parts):
    parts.slots.other = None
    runner = parts.make(updater=Updater())
    runner.run(_job())
    assert parts.link.states()[-1] == ("failed", "no_ota_slot")


def test_runner_keeps_the_state_for_a_replayed_signed_trigger(parts, monkeypatch):
    from ota import signature

    def replayed(*args):
        raise OtaError("replayed", "seq 3 <= 7")

    monkeypatch.setattr(signature, "check", replayed)
    runner = parts.make(updater=Updater())
    runner.run(_job())
    assert parts.link.calls[-1] == ("refuse", "replayed", True) and parts.store.current is None
