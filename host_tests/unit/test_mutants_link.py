"""ota.link.Link: the Wi-Fi wait and its bounds, the clock, the MQTT session's arguments, the keepalive
at exactly half, and what each state message carries (pinned after `make mutate`). CPython, the fakes
of test_agent_objects.py."""
import sys
import types

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
import test_agent_objects
from test_agent_objects import DEV, Client, make_link
from ota import config, jobs, link, state
from ota.errors import OtaError

clock = test_agent_objects.clock  # its fixture, registered here


# --- Wi-Fi -----------------------------------------------------------------------------------------
class Station:
    # A station interface that records what it is asked; status: what status() answers.
    def __init__(self, up=False, status=1000, comes_up_after=None):
        self.up, self.st, self.after = up, status, comes_up_after
        self.calls = []

    def active(self, on=None):
        self.calls.append(("active", on))
        return True

    def isconnected(self):
        if self.after is not None:
            self.after -= 1
            if self.after < 0:
                self.up = True
        return self.up

    def status(self):
        return self.st

    def connect(self, ssid, password):
        self.calls.append(("connect", ssid, password))

    def disconnect(self):
        self.calls.append(("disconnect",))


def _link_with(station, cfg_over=None, feed=None):
    lk, _, _ = make_link(cfg_over, feed=feed)
    lk.network = types.SimpleNamespace(WLAN=lambda iface: station, STA_IF=0, STAT_IDLE=1000)
    return lk


def test_an_associated_station_is_used_as_it_is(clock):
    st = Station(up=True)
    _link_with(st).wifi()
    assert st.calls == [("active", True)]


def test_connect_is_asked_only_from_idle_with_the_configured_network(clock):
    st = Station(comes_up_after=3)
    _link_with(st, {"wifi": {"ssid": "home", "password": "secret-pw"}}).wifi()
    assert st.calls == [("active", True), ("connect", "home", "secret-pw")]
    busy = Station(status=1001, comes_up_after=3)  # STAT_CONNECTING: the driver is at it already
    _link_with(busy).wifi()
    assert busy.calls == [("active", True)]


def test_the_wait_is_20_s_at_most_polled_every_100_ms_and_fed(clock):
    feeds = []
    st = Station()
    lk = _link_with(st, feed=lambda: feeds.append(clock["ms"]))
    start = clock["ms"]
    with pytest.raises(OSError) as e:
        lk.wifi()
    assert e.value.args[0] == 110 and st.calls[-1] == ("disconnect",)
    waited = clock["ms"] - start
    assert 20000 < waited <= 20100  # the first poll past 20 s gives up
    assert len(feeds) == waited // 100 + 1 and feeds[1] - feeds[0] == 100


def test_a_limit_above_20_s_does_not_lengthen_the_wait(clock):
    st = Station()
    lk = _link_with(st)
    start = clock["ms"]
    with pytest.raises(OSError):
        lk.wifi(limit_ms=60000)
    assert 20000 < clock["ms"] - start <= 20100


def test_a_station_up_at_the_last_poll_is_taken(clock):
    st = Station(comes_up_after=200)  # up at the poll at 20.0 s: not past the limit yet
    _link_with(st).wifi()
    assert ("disconnect",) not in st.calls


# --- the clock ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("now,set_", [(None, False), (link._NTP_ZERO, False), (link._NTP_ZERO + 60, False),
                                      (link._NTP_ZERO - 60, False), (link._NTP_ZERO + 61, True),
                                      (link._NTP_ZERO - 61, True), (1800000000, True)])
def test_a_time_counts_as_set_only_away_from_ntps_zero(clock, monkeypatch, now, set_):
    monkeypatch.setattr(state, "unix_time", lambda: now)
    lk, _, _ = make_link()
    lk.set_clock()
    assert lk.clock_set is set_


def test_ntp_zero_is_ntptimes_answer_to_a_transmit_time_of_0():
    # micropython-lib's ntptime: 2**32 s after 1900-01-01 (its era rule), in Unix time.
    assert link._NTP_ZERO == 2 ** 32 - 2208988800


def test_a_set_clock_is_not_asked_again_and_a_failure_leaves_it_unset(clock, monkeypatch, capsys):
    asked = []
    monkeypatch.setitem(sys.modules, "ntptime", types.SimpleNamespace(settime=lambda: asked.append(1)))
    monkeypatch.setattr(state, "unix_time", lambda: 1800000000)
    lk, _, _ = make_link()
    lk.set_clock()
    lk.set_clock()
    assert asked == [1] and lk.clock_set

    def fail():
        raise IndexError("short reply")

    monkeypatch.setitem(sys.modules, "ntptime", types.SimpleNamespace(settime=fail))
    lk2, _, _ = make_link()
    lk2.set_clock()
    assert not lk2.clock_set and "ntptime failed" in capsys.readouterr().out


# --- the session -------------------------------------------------------------------------------------
class Recorder(Client):
    made = []

    def __init__(self, *args, **kw):
        Client.__init__(self, *args, **{k: v for k, v in kw.items() if k != "ssl"})
        self.args, self.kw = args, kw
        Recorder.made.append(self)


def _open(cfg_over, **link_kw):
    cfg = config.merge(cfg_over)
    reporter = state.Reporter(DEV, "1.0.0", "ota_0")
    reporter.message("idle")
    lk = link.Link(cfg, DEV, reporter, lambda t, p: None, lambda t, n: None, mqtt_class=Recorder, **link_kw)
    lk.open()
    return lk


def test_the_session_gets_the_configured_broker_and_keepalive(clock):
    lk = _open({"mqtt": {"host": "broker.lan", "port": 1884, "user": "dev", "password": "pw-123456",
                         "keepalive_s": 45}})
    c = lk.client
    assert c.args[:2] == (DEV, "broker.lan") and c.kw["port"] == 1884 and c.kw["user"] == "dev"
    assert c.kw["password"] == "pw-123456" and c.kw["keepalive"] == 45 and lk.tls is False
    default = _open({"mqtt": {"host": "broker.lan"}})
    assert default.client.kw["port"] == 0  # umqtt picks 1883 (8883 over TLS)


def test_a_refused_session_is_an_oserror_and_leaves_the_link_down(clock, monkeypatch):
    class Refused(Client):
        def connect(self):
            self.sock = types.SimpleNamespace(close=lambda: None)
            raise AssertionError("garbled CONNACK")  # umqtt asserts on the reply

    lk, _, _ = make_link()
    lk.mqtt_class = Refused
    with pytest.raises(OSError) as e:
        lk.open()
    assert e.value.args[0] == 111 and lk.client is None

    class Reset(Client):
        def connect(self):
            raise OSError(104, "ECONNRESET")

    lk.mqtt_class = Reset
    with pytest.raises(OSError) as e:
        lk.open()
    assert e.value.args[0] == 104 and lk.client is None

    class SubscribeFails(Client):
        def subscribe(self, topic, qos=0):
            raise OSError(32, "EPIPE")

    lk.mqtt_class = SubscribeFails
    with pytest.raises(OSError):
        lk.open()
    assert lk.client is None


def test_over_tls_the_session_gets_the_verified_context(clock, monkeypatch):
    from ota import https

    made = []
    monkeypatch.setattr(https, "context", lambda path: made.append(path) or "ctx")
    lk = _open({"mqtt": {"host": "broker.lan", "tls": True, "ca_path": "ca.der"}})
    assert lk.tls is True and made == ["ca.der"] and lk.client.kw["ssl"] == "ctx"

    def bad(path):
        raise OtaError("bad_ca", "ca.der: not a certificate")

    monkeypatch.setattr(https, "context", bad)
    with pytest.raises(OSError) as e:
        _open({"mqtt": {"host": "broker.lan", "tls": True, "ca_path": "ca.der"}})
    assert "bad_ca" in str(e.value)


def test_over_tls_every_session_of_a_boot_shares_one_context(clock, monkeypatch):
    # Made at the first connect and kept: a reconnect does not read and parse the CA again. A first
    # attempt that failed is made again at the next connect, not kept as "no context".
    from ota import https

    made = []

    def flaky(path):
        made.append(path)
        if len(made) == 1:
            raise OtaError("tls_failed", "ca.der: out of memory")
        return "ctx-%d" % len(made)

    monkeypatch.setattr(https, "context", flaky)
    cfg = config.merge({"mqtt": {"host": "broker.lan", "tls": True, "ca_path": "ca.der"}})
    reporter = state.Reporter(DEV, "1.0.0", "ota_0")
    reporter.message("idle")
    lk = link.Link(cfg, DEV, reporter, lambda t, p: None, lambda t, n: None, mqtt_class=Recorder)
    with pytest.raises(OSError):
        lk.open()
    assert lk.client is None and lk.context is None
    lk.open()
    first = lk.client
    lk.drop()
    lk.open()
    assert made == ["ca.der", "ca.der"]
    assert first.kw["ssl"] == lk.client.kw["ssl"] == "ctx-2" and lk.client is not first


def test_home_assistant_gets_its_release_topic_and_retained_discovery(clock):
    from ota import ha

    cfg = config.merge({"ha": {"discovery": True}})
    entity = ha.HomeAssistant(cfg["ha"], DEV, "1.0.0", "/switch/cmd/" + DEV, "/switch/state/" + DEV)
    lk = _open({"ha": {"discovery": True}}, ha=entity)
    c = lk.client
    assert c.subscribed[-1] == (b"/switch/release", 1)
    topics = [t for t, _, _ in c.published]
    assert topics[0] == entity.config_topic.encode() and c.published[0][2] is True
    assert topics[1:] == [b"/switch/state/" + DEV.encode(), entity.state_topic.encode()]  # state, then entity
    assert all(retain for _, _, retain in c.published)


def test_a_packet_cut_short_is_a_lost_link_for_both_of_umqtts_errors(clock):
    lk, _, _ = make_link()
    lk.connect()
    for error in (IndexError("index out of range"), TypeError("'NoneType' object is not subscriptable")):
        lk.client.fail = error
        with pytest.raises(OSError) as e:
            lk.check()
        assert e.value.args[0] == 104


def test_the_keepalive_pings_past_exactly_half(clock):
    lk, _, _ = make_link()
    lk.connect()
    clock["ms"] += 30000  # exactly half of 60 s
    lk.keepalive()
    assert lk.client.pings == 0
    clock["ms"] += 1
    lk.keepalive()
    assert lk.client.pings == 1


def test_a_publish_counts_as_a_send_for_the_keepalive(clock):
    lk, _, _ = make_link()
    lk.connect()
    clock["ms"] += 25000
    lk.publish("idle")
    clock["ms"] += 25000  # 50 s since connect, 25 s since the publish
    lk.keepalive()
    assert lk.client.pings == 0


def test_keepalive_0_never_pings(clock):
    lk, _, _ = make_link({"mqtt": {"host": "broker.lan", "keepalive_s": 0}})
    lk.connect()
    clock["ms"] += 10 ** 7
    lk.keepalive()
    assert lk.client.pings == 0


def test_drop_and_disconnect_survive_a_socket_that_is_gone(clock):
    lk, _, _ = make_link()
    lk.connect()

    def boom():
        raise OSError(9, "EBADF")

    lk.client.sock.close = boom
    lk.drop()  # no raise
    assert lk.client is None
    lk.connect()
    lk.client.sock = None
    lk.drop()
    lk.connect()
    lk.client.disconnect = boom
    lk.disconnect()
    assert lk.client is None
    lk.drop()
    lk.disconnect()  # nothing connected: no-ops


# --- what a state message carries --------------------------------------------------------------------
def test_a_final_state_carries_its_jobs_cost_once(clock, tmp_path):
    store = jobs.Jobs(str(tmp_path / "ota_job.json"))
    store.start({"id": "j1", "type": "ota_trigger"}, "failed", t_to="1.1.0", t_conn_ms=7)
    lk, _, _ = make_link()
    lk.jobs = store
    lk.connect()
    lk.publish("failed", job="j1", reason="bad_sha256")
    msg = lk.client.states()[-1]
    assert msg["t"]["to"] == "1.1.0" and msg["t"]["conn_ms"] == 7
    lk.publish("failed", job="j2", reason="busy")  # another job's outcome: not its cost
    assert "t" not in lk.client.states()[-1] or lk.client.states()[-1]["t"] is None
    lk.publish("downloading", job="j1", progress=5)  # not final
    assert lk.client.states()[-1].get("t") is None
    lk.publish("failed", job=None, reason="bad_json")
    assert lk.client.states()[-1].get("t") is None
    lk.publish("ok", job="j1", t={"to": "given"})  # a "t" already given stays
    assert lk.client.states()[-1]["t"] == {"to": "given"}
    store.start({"id": "j3", "type": "ota_trigger"}, "failed")  # a record without cost
    lk.publish("failed", job="j3")
    assert lk.client.states()[-1].get("t") is None


def test_without_a_job_store_no_cost_is_looked_up(clock):
    lk, _, _ = make_link()
    lk.connect()
    lk.publish("ok", job="j1")
    assert lk.client.states()[-1].get("t") is None


def test_state_messages_are_retained_on_the_state_topic(clock):
    lk, _, _ = make_link()
    lk.connect()
    lk.publish("idle")
    topic, msg, retain = lk.client.published[-1]
    assert topic == b"/switch/state/" + DEV.encode() and retain is True and msg["state"] == "idle"


def test_refuse_adds_the_reason_to_a_copy_of_the_last_state(clock):
    lk, _, _ = make_link()
    lk.connect()
    lk.publish("downloading", job="j1", progress=40)
    lk.refuse("busy", "refused j2", keep_state=True)
    lk.refuse("busy", "refused j3", keep_state=True)
    last = lk.client.states()[-1]
    assert (last["state"], last["detail"], last["progress"]) == ("downloading", "refused j3", 40)


def test_topics_fill_in_the_device_id():
    cfg = config.merge({"topics": {"cmd_root": "/a/all", "cmd_device": "/a/{id}/cmd", "state": "/a/{id}/st"}})
    assert link.topics(cfg, "d1") == (("/a/all", "/a/d1/cmd"), "/a/d1/st")


def test_the_session_drains_payloads_above_a_triggers_limit(clock):
    # With umqtt's own class (it has _recv_len), ota.mqtt's guard is on: above trigger.MAX_PAYLOAD a
    # payload goes to on_oversize, drained, never held.
    from ota import mqtt, trigger

    class UmqttLike(Client):
        def _recv_len(self):
            return 0

    oversize = []
    cfg = config.merge({"mqtt": {"host": "broker.lan"}})
    reporter = state.Reporter(DEV, "1.0.0", "ota_0")
    reporter.message("idle")
    lk = link.Link(cfg, DEV, reporter, lambda t, p: None, lambda t, n: oversize.append(n), mqtt_class=UmqttLike)
    lk.open()
    assert isinstance(lk.client, mqtt._guard(UmqttLike)) and lk.client.max_payload == trigger.MAX_PAYLOAD == 1024
    lk.client.on_oversize("t", 2000)
    assert oversize == [2000]


def test_connect_bounds_the_wifi_wait_by_its_limit(clock):
    st = Station()
    lk = _link_with(st)
    start = clock["ms"]
    with pytest.raises(OSError):
        lk.connect(limit_ms=1500)  # the health gate's time left
    assert 1500 < clock["ms"] - start <= 1600 and lk.client is None
