# The agent's logic on CPython with fakes: boot states, dispatch, malformed/unknown/duplicate/busy
# triggers, the update path (plain and TLS MQTT), revert checks, the health gate and rollback report.
# Fakes go into sys.modules before the import (MicroPython's own test style); esp32 is the
# NOR-flash fake of fakes.py, machine.reset() raises Reset.
import json
import sys
import types

import pytest

import fakes
from ota.errors import OtaError


class Reset(BaseException):
    pass


machine = types.ModuleType("machine")
machine.unique_id = lambda: bytes.fromhex("a0b1c2d3e4f5")
machine.reset_cause = lambda: 2  # HARD_RESET: machine.reset()


def _reset():
    raise Reset()


machine.reset = _reset
# In sys.modules only while ota.agent is imported (it keeps its own references): other tests must
# still see "no esp32 module" on CPython.
_saved = {name: sys.modules.get(name) for name in ("machine", "esp32")}
sys.modules["machine"], sys.modules["esp32"] = machine, fakes.make_device()
from ota import agent, config, jobs, selftest, trigger  # noqa: E402

for _name, _module in _saved.items():
    if _module is None:
        del sys.modules[_name]
    else:
        sys.modules[_name] = _module

DEV = "a0b1c2d3e4f5"
STATE_TOPIC = "/switch/state/" + DEV
GOOD_URL = "https://fw.example.com/app-1.1.0.bin"


class FakeSock:
    def close(self):
        pass


class FakeMQTT:
    # umqtt.simple's surface. Class-level knobs: fail_connect (count), instances (all made).
    instances = []
    fail_connect = 0

    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        self.client_id, self.server, self.port, self.ssl, self.keepalive = client_id, server, port, ssl, keepalive
        self.sock = None
        self.published, self.subscribed, self.incoming = [], [], []
        self.will = None
        self.fail_next_io = False
        self.disconnected = False
        FakeMQTT.instances.append(self)

    def set_callback(self, cb):
        self.cb = cb

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, retain, qos)

    def connect(self, clean_session=True):
        if FakeMQTT.fail_connect:
            FakeMQTT.fail_connect -= 1
            raise OSError(111, "ECONNREFUSED")
        self.sock = FakeSock()

    def subscribe(self, topic, qos=0):
        self.subscribed.append((topic, qos))

    def _io(self):
        if self.sock is None or self.disconnected:
            raise OSError(9, "EBADF")
        if self.fail_next_io:
            raise OSError(104, "ECONNRESET")

    def publish(self, topic, msg, retain=False, qos=0):
        self._io()
        self.published.append((topic, json.loads(msg), retain, qos))

    def check_msg(self):
        self._io()
        while self.incoming:
            topic, payload = self.incoming.pop(0)
            self.cb(topic, payload)

    def ping(self):
        self._io()

    def disconnect(self):
        self.disconnected = True

    def states(self):
        return [m[1] for m in self.published]


class WLAN:
    def __init__(self, interface):
        self.up = False

    def active(self, on=None):
        return True

    def isconnected(self):
        return self.up

    def connect(self, ssid, password):
        self.up = True

    def status(self):
        return 1010 if self.up else 1000  # STAT_GOT_IP, STAT_IDLE

    def disconnect(self):
        self.up = False


network = types.SimpleNamespace(WLAN=WLAN, STA_IF=0, STAT_IDLE=1000)


class Updater:
    def __init__(self, result=None, error=None, during=None, total=300000):
        self.calls, self.result, self.error, self.during, self.total = [], result, error, during, total

    def __call__(self, url, sha256=None, size=None, version=None, token=None, config=None, progress=None,
                 running=None, target=None, running_project=None, project=None, feed=None):
        self.calls.append(dict(url=url, sha256=sha256, size=size, version=version, token=token))
        self.feed = feed
        self.slots = getattr(self, "slots", []) + [(running, target)]
        self.configs = getattr(self, "configs", []) + [config]
        for done in range(0, self.total + 1, 65536):
            if self.during:
                self.during(done)
            progress(done, self.total)
        progress(self.total, self.total)
        if self.error:
            raise self.error
        return self.result or {"result": "ok", "version": "1.1.0", "bytes": self.total, "slot": "ota_1"}


@pytest.fixture
def env(tmp_path, monkeypatch):
    esp = fakes.make_device()
    esp.slots["ota_0"].data[:] = b"\xff" * esp.slots["ota_0"].size
    image = fakes.build_image("1.0.0")
    esp.slots["ota_0"].data[:len(image)] = image
    monkeypatch.setitem(sys.modules, "esp32", esp)
    monkeypatch.setattr(agent, "esp32", esp)
    monkeypatch.setitem(sys.modules, "ntptime", types.SimpleNamespace(settime=lambda: None))
    monkeypatch.setattr(agent.time, "sleep", lambda s: None)
    monkeypatch.setattr(selftest, "_MODULES", ("ota.config", "ota.trigger"))
    FakeMQTT.instances = []
    FakeMQTT.fail_connect = 0
    cfg = config.merge({"mqtt": {"host": "127.0.0.1", "port": 1883}})
    ns = types.SimpleNamespace(esp=esp, cfg=cfg, jobs_path=str(tmp_path / "ota_job.json"))

    def make(updater=None, config_problem=None, **cfg_over):
        for section, values in cfg_over.items():
            ns.cfg[section].update(values)
        return agent.Agent(ns.cfg, mqtt_class=FakeMQTT, network_module=network, updater=updater,
                           jobs_path=ns.jobs_path, config_problem=config_problem)

    ns.make = make
    return ns


def connected(a):
    a.link.wifi()
    a.link.open()
    return a.link.client


def deliver(a, payload, topic=b"/switch/cmd/root"):
    if not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    a.link.client.incoming.append((topic, payload))
    a.link.client.check_msg()


def test_boot_publishes_retained_idle_with_version(env):
    a = env.make()
    client = connected(a)
    assert client.client_id == DEV and client.server == "127.0.0.1"
    assert client.subscribed == [(b"/switch/cmd/root", 1), (b"/switch/cmd/" + DEV.encode(), 1)]
    topic, will, retain, qos = client.will
    assert topic == STATE_TOPIC.encode() and retain and json.loads(will)["state"] == "offline"
    topic, msg, retain, qos = client.published[-1]
    assert topic == STATE_TOPIC.encode() and retain
    assert (msg["state"], msg["version"], msg["slot"], msg["id"]) == ("idle", "1.0.0", "ota_0", DEV)


@pytest.mark.parametrize("payload,reason", [
    (b"ON", "bad_json"), (b"[1,2]", "not_object"), ({"type": "ota_trigger"}, "missing_url"),
    ({"type": "ota_trigger", "url": "ftp://x/fw.bin"}, "bad_url"), (b"x" * 10240, "too_long"),
    ({"type": "ota_trigger", "url": GOOD_URL, "size": True}, "bad_size"),
])
def test_malformed_trigger_reports_reason_and_keeps_running(env, payload, reason):
    a = env.make()
    connected(a)
    deliver(a, payload)
    msg = a.link.client.states()[-1]
    assert (msg["state"], msg["reason"]) == ("failed", reason)
    assert a.pending is None
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "id": "j1"})  # still listening
    assert a.pending["id"] == "j1"


def test_memory_error_costs_the_message_not_the_connection(env, monkeypatch):
    a = env.make()
    client = connected(a)
    real_parse = trigger.parse
    calls = []

    def parse(payload):
        calls.append(payload)
        if len(calls) == 1:
            raise MemoryError("memory allocation failed, allocating 8192 bytes")
        return real_parse(payload)

    monkeypatch.setattr(trigger, "parse", parse)
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "id": "j0"})
    msg = a.link.client.states()[-1]
    assert (msg["state"], msg["reason"]) == ("failed", "low_memory")
    assert a.link.client is client and a.pending is None
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "id": "j1"})  # same connection, still listening
    assert a.link.client is client and a.pending["id"] == "j1"


def test_unsigned_trigger_expires_at_the_same_second_as_a_signed_one(env, monkeypatch):
    # Good strictly before `expires`, for unsigned triggers as for signed ones (signature.has_expired).
    from ota import state as device_state

    monkeypatch.setattr(device_state, "unix_time", lambda: 1_800_000_000)
    up = Updater(result={"result": "same_version", "version": "1.0.0", "bytes": 0, "slot": "ota_1"})
    a = env.make(up)
    connected(a)
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "id": "j-at", "expires": 1_800_000_000})
    a.run_pending()
    msg = a.link.client.states()[-1]
    assert (msg["state"], msg["reason"]) == ("failed", "expired") and up.calls == []
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "id": "j-before", "expires": 1_800_000_001})
    a.run_pending()
    assert len(up.calls) == 1


def test_mqtt_tls_context_takes_der_or_pem_and_says_oserror_for_a_bad_file(env, tmp_path):
    # The same builder as the firmware download's (https.context); a CA the agent cannot load is an
    # OSError, which its loop retries, not an exception that ends it.
    import ssl

    from devkit.tls import make_pki

    pki = make_pki(str(tmp_path / "pki"))
    a = env.make()
    for path in (pki.ca_der, pki.ca_pem):
        assert a.link.tls_context({"ca_path": path}).verify_mode == ssl.CERT_REQUIRED
    bad = tmp_path / "bad.der"
    bad.write_bytes(b"not a certificate")
    with pytest.raises(OSError):  # CPython's ssl says so itself (SSLError), MicroPython's via OtaError
        a.link.tls_context({"ca_path": str(bad)})
    with pytest.raises(OSError) as e:
        a.link.tls_context({"ca_path": str(tmp_path / "missing.der")})
    assert "tls_failed" in str(e.value)


def test_unknown_type_and_other_target_ignored(env):
    a = env.make()
    connected(a)
    n = len(a.link.client.published)
    deliver(a, {"type": "switch_set", "state": "on"})
    deliver(a, {"state": "on"})
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "target": "ffffffffffff"})
    assert len(a.link.client.published) == n and a.pending is None


def test_update_plain_mqtt_progress_then_reboot(env):
    up = Updater(total=1000000)
    a = env.make(up)
    connected(a)
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "sha256": "AB" * 32, "size": 1000000,
                "version": "1.1.0", "id": "job-1"})
    client = a.link.client
    with pytest.raises(Reset):
        a.run_pending()
    assert up.calls == [dict(url=GOOD_URL, sha256="ab" * 32, size=1000000, version="1.1.0", token=None)]
    # The running version and the target slot the agent took at start-up: no second get_next_update()
    # (4 KiB) on a heap that has had time to fragment.
    assert up.slots == [("1.0.0", a.slots.other)] and a.slots.other.info()[4] == "ota_1"
    states = [m["state"] for m in client.states()]
    assert states[1] == "downloading" and states[-2:] == ["verifying", "rebooting"]
    progress = [m["progress"] for m in client.states() if m["state"] == "downloading"]
    assert progress[0] == 0 and progress == sorted(progress)
    assert client.disconnected  # clean DISCONNECT: no "offline" will over "rebooting"
    record = jobs.Jobs(env.jobs_path)
    assert record.current["state"] == "rebooting" and record.current["to_slot"] == "ota_1"
    assert record.current["from_slot"] == "ota_0" and record.seen == ["job-1"]


def test_update_over_tls_disconnects_during_download(env, monkeypatch):
    monkeypatch.setattr(agent.Link, "tls_context", lambda self, mqtt: "CTX")
    seen = []

    def during(done):  # what the world looks like while the download runs
        seen.append(a.link.client)

    up = Updater(during=during)
    a = env.make(up, mqtt={"tls": True})
    first = connected(a)
    assert first.ssl == "CTX"
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "id": "job-t"})
    with pytest.raises(Reset):
        a.run_pending()
    assert set(seen) == {None} and first.disconnected
    assert [m["state"] for m in first.states()][-1] == "downloading"
    second = FakeMQTT.instances[-1]
    assert second is not first and [m["state"] for m in second.states()][-1] == "rebooting"


def test_busy_while_downloading_and_duplicate(env):
    def during(done):
        if done == 65536:
            a.link.client.incoming.append((b"/switch/cmd/root", json.dumps(
                {"type": "ota_trigger", "url": GOOD_URL + "?2", "id": "job-2"}).encode()))
            a.link.client.incoming.append((b"/switch/cmd/root", json.dumps(
                {"type": "ota_trigger", "url": GOOD_URL, "id": "job-1"}).encode()))  # redelivery

    up = Updater(error=OtaError("http_404", "not found"), during=during)
    a = env.make(up)
    connected(a)
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "id": "job-1"})
    a.run_pending()
    busy = [m for m in a.link.client.states() if m["reason"] == "busy"]
    assert len(busy) == 1 and busy[0]["state"] == "downloading" and busy[0]["job"] == "job-1"
    assert "job-2" in busy[0]["detail"]
    last = a.link.client.states()[-1]
    assert (last["state"], last["reason"], last["job"]) == ("failed", "http_404", "job-1")
    assert len(up.calls) == 1
    # The retained trigger comes again at the next subscribe: not run twice, nothing published.
    n = len(a.link.client.published)
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "id": "job-1"})
    assert a.pending is None and len(a.link.client.published) == n
    # and it survives a reboot (the seen list is on the filesystem)
    b = env.make(up)
    connected(b)
    deliver(b, {"type": "ota_trigger", "url": GOOD_URL, "id": "job-1"})
    assert b.pending is None
    assert b.link.client.states()[-1]["state"] == "failed"  # the last outcome stays visible after boot


def test_trigger_without_id_gets_content_id(env):
    up = Updater(result={"result": "same_version", "version": "1.0.0", "bytes": 0, "slot": "ota_1"})
    a = env.make(up)
    connected(a)
    seed = b'{"type":"ota_trigger","url":"https://your-server.com/firmware.bin"}'
    deliver(a, seed)
    job_id = a.pending["id"]
    assert job_id.startswith("auto-")
    a.run_pending()
    last = a.link.client.states()[-1]
    assert (last["state"], last["reason"], last["job"]) == ("ok", "same_version", job_id)
    deliver(a, seed)
    assert a.pending is None


def test_broker_drop_during_download_does_not_stop_it(env):
    def during(done):
        if done == 131072:
            a.link.client.fail_next_io = True

    up = Updater(during=during)
    a = env.make(up)
    connected(a)
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "id": "job-d"})
    with pytest.raises(Reset):
        a.run_pending()
    assert len(FakeMQTT.instances) == 2  # reconnected once to say "rebooting"
    assert FakeMQTT.instances[-1].states()[-1]["state"] == "rebooting"
    assert jobs.Jobs(env.jobs_path).current["state"] == "rebooting"


def test_policy_require_sha256(env):
    up = Updater()
    a = env.make(up, ota={"require_sha256": True})
    connected(a)
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "id": "p1"})
    a.run_pending()
    last = a.link.client.states()[-1]
    assert (last["state"], last["reason"]) == ("failed", "sha256_required") and up.calls == []


def test_revert_to_valid_other_slot(env):
    image = fakes.build_image("0.9.0")
    env.esp.slots["ota_1"].data[:len(image)] = image
    a = env.make(ota={"allow_downgrade": True})  # the device policy allows going back to 0.9.0
    connected(a)
    deliver(a, {"type": "ota_revert", "id": "r1"})
    client = a.link.client
    with pytest.raises(Reset):
        a.run_pending()
    assert env.esp.boot == "ota_1"
    record = jobs.Jobs(env.jobs_path).current
    assert (record["state"], record["to_slot"], record["to_version"]) == ("rebooting", "ota_1", "0.9.0")
    assert client.states()[-1]["state"] == "rebooting"


def test_unsigned_revert_to_an_older_firmware_is_a_downgrade(env):
    # ota_revert boots the other slot's version: the downgrade rule of an update holds for it too.
    image = fakes.build_image("0.9.0")
    env.esp.slots["ota_1"].data[:len(image)] = image
    up = Updater()
    a = env.make(up, ota={"signing_pubkey": PUB})
    connected(a)
    deliver(a, {"type": "ota_revert", "id": "r-unsigned", "allow_downgrade": True})  # unsigned: ignored
    a.run_pending()
    last = a.link.client.states()[-1]
    assert (last["state"], last["reason"]) == ("failed", "downgrade")
    assert env.esp.boot == "ota_0" and env.esp.slots["ota_1"].set_boot_calls == 0
    # The operator's signed revert with allow_downgrade goes through.
    deliver(a, signing.sign_trigger({"type": "ota_revert", "id": "r-signed"}, KEY, allow_downgrade=True))
    with pytest.raises(Reset):
        a.run_pending()
    assert env.esp.boot == "ota_1"


def refused_revert(env, revert_id, **options):
    # A fresh agent (env.make's options), connected, handed an ota_revert it does not reset for.
    # -> the last state it published
    a = env.make(**options)
    connected(a)
    deliver(a, {"type": "ota_revert", "id": revert_id})
    a.run_pending()
    return a.link.client.states()[-1]


def test_revert_to_another_product_is_refused(env):
    image = fakes.build_image("1.1.0")
    image = image.replace(b"ota-test".ljust(32, b"\0"), b"thermostat".ljust(32, b"\0"), 1)
    env.esp.slots["ota_1"].data[:len(image)] = image
    assert refused_revert(env, "r-product", ota={"allow_downgrade": True})["reason"] == "wrong_product"
    assert env.esp.boot == "ota_0"


def test_revert_refused_without_image(env):
    last = refused_revert(env, "r2")
    assert (last["state"], last["reason"]) == ("failed", "revert_no_image")
    assert env.esp.boot == "ota_0"


def test_revert_refused_when_set_boot_rejects(env):
    image = bytearray(fakes.build_image("1.1.0"))
    image[-1] ^= 0xFF  # header fine, SHA-256 broken: set_boot's full validation refuses it
    env.esp.slots["ota_1"].data[:len(image)] = image
    assert refused_revert(env, "r3")["reason"] == "revert_invalid_image"
    assert jobs.Jobs(env.jobs_path).current["state"] == "failed"


@pytest.mark.parametrize("last", ["ABORTED", "INVALID"])
def test_revert_refused_to_a_slot_whose_last_boot_failed(env, last):
    # The rolled-back release still sits in ota_1, its otadata entry ABORTED: booting it again would
    # only roll back once more. Refused before the job record or otadata changes.
    fakes.add_otadata(env.esp)
    fakes.write_otadata(env.esp, 0, 1, "VALID")
    fakes.write_otadata(env.esp, 1, 2, last)
    image = fakes.build_image("1.1.0")
    env.esp.slots["ota_1"].data[:len(image)] = image
    last_state = refused_revert(env, "r4")
    assert (last_state["state"], last_state["reason"]) == ("failed", "revert_aborted_image")
    assert "ota_1" in last_state["detail"] and last in last_state["detail"]
    assert env.esp.boot == "ota_0" and env.esp.slots["ota_1"].set_boot_calls == 0
    assert jobs.Jobs(env.jobs_path).current["reason"] == "revert_aborted_image"


def test_revert_allowed_to_a_valid_or_never_named_slot(env):
    fakes.add_otadata(env.esp)
    fakes.write_otadata(env.esp, 0, 1, "VALID")
    fakes.write_otadata(env.esp, 1, 2, "VALID")
    fakes.write_otadata(env.esp, 0, 3, "VALID")  # ota_0 again (seq 3): ota_1's VALID entry is older
    image = fakes.build_image("1.1.0")  # newer than the running 1.0.0: no downgrade rule in the way
    env.esp.slots["ota_1"].data[:len(image)] = image
    a = env.make()
    connected(a)
    deliver(a, {"type": "ota_revert", "id": "r5"})
    with pytest.raises(Reset):
        a.run_pending()
    assert env.esp.boot == "ota_1"


def test_update_records_the_target_otadata_state_before_the_job(env):
    fakes.add_otadata(env.esp)
    fakes.write_otadata(env.esp, 0, 1, "VALID")
    fakes.write_otadata(env.esp, 1, 2, "ABORTED")
    seen = []
    up = Updater(during=lambda done: seen.append(jobs.Jobs(env.jobs_path).current.get("to_otadata")))
    a = env.make(up)
    connected(a)
    deliver(a, {"type": "ota_trigger", "url": GOOD_URL, "id": "u1"})
    with pytest.raises(Reset):
        a.run_pending()
    assert seen and set(seen) == {"ABORTED"}


def _double_cut(env, before):
    # Power cut after set_boot (record still "downloading"), then during the new image's first boot:
    # the bootloader turned its PENDING_VERIFY entry into ABORTED and booted ota_0 again.
    fakes.add_otadata(env.esp)
    fakes.write_otadata(env.esp, 0, 1, "VALID")
    fakes.write_otadata(env.esp, 1, 2, "ABORTED")
    j = jobs.Jobs(env.jobs_path)
    j.start({"id": "job-6", "type": "ota_trigger", "url": GOOD_URL}, "downloading", from_slot="ota_0",
            to_slot="ota_1", to_otadata=before)
    a = env.make()
    connected(a)
    return a.link.client.states()[-1]


def test_double_power_cut_reported_rolled_back_boot_failed(env):
    last = _double_cut(env, None)
    assert (last["state"], last["reason"], last["job"], last["slot"]) == \
        ("rolled_back", "boot_failed", "job-6", "ota_0")
    assert jobs.Jobs(env.jobs_path).current["state"] == "rolled_back"


def test_cut_download_after_an_earlier_rollback_stays_interrupted(env):
    # ota_1 was ABORTED by an earlier job: the same entry would be there had this one reached set_boot.
    last = _double_cut(env, "ABORTED")
    assert (last["state"], last["reason"]) == ("failed", "interrupted")


def _update_boot(env):
    # The state after a job rebooted: record "rebooting" from ota_0 to ota_1, ota_1 now running.
    j = jobs.Jobs(env.jobs_path)
    j.start({"id": "job-9", "type": "ota_trigger", "url": GOOD_URL, "version": "1.1.0"}, "rebooting",
            from_slot="ota_0", from_version="1.0.0", to_slot="ota_1")
    image = fakes.build_image("1.1.0")
    env.esp.slots["ota_1"].data[:len(image)] = image
    env.esp.running = "ota_1"


def test_health_gate_confirms(env, monkeypatch):
    _update_boot(env)
    marks = []
    monkeypatch.setattr(env.esp.Partition, "mark_app_valid_cancel_rollback", staticmethod(lambda: marks.append(1)))
    a = env.make()
    assert a.gate is not None
    connected(a)
    assert a.link.client.states()[-1]["state"] == "confirming"
    a._confirm()
    last = a.link.client.states()[-1]
    assert (last["state"], last["version"], last["job"], last["slot"]) == ("ok", "1.1.0", "job-9", "ota_1")
    assert marks == [1] and a.gate is None
    assert jobs.Jobs(env.jobs_path).current["state"] == "ok"


def test_health_gate_selftest_fails_then_old_firmware_reports_rolled_back(env, monkeypatch):
    _update_boot(env)
    monkeypatch.setattr(selftest, "run", lambda cfg: (False, "sensor missing"))
    a = env.make()
    connected(a)
    with pytest.raises(Reset):
        a._confirm()
    assert a.link.client.states()[-1]["reason"] == "selftest_failed"
    record = jobs.Jobs(env.jobs_path).current
    assert (record["state"], record["reason"]) == ("rolling_back", "selftest_failed")
    env.esp.running = "ota_0"  # the bootloader rolled back
    old = env.make()
    connected(old)
    last = old.link.client.states()[-1]
    assert (last["state"], last["job"], last["reason"], last["slot"]) == \
        ("rolled_back", "job-9", "selftest_failed", "ota_0")
    assert jobs.Jobs(env.jobs_path).current["state"] == "rolled_back"


def test_new_image_that_set_the_config_aside_rolls_back_at_once(env, monkeypatch, tmp_path, capsys):
    # The device's config.json, valid for the old firmware, does not validate under the new one. On
    # the defaults the new image has no broker to prove its health on: it rolls back at boot, with
    # the reason, instead of waiting out health_timeout_s, and the old firmware reports it.
    _update_boot(env)
    marks = []
    monkeypatch.setattr(env.esp.Partition, "mark_app_valid_cancel_rollback", staticmethod(lambda: marks.append(1)))
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"mqtt": {"host": "broker", "port": 70000, "password": "s3cret-pw"}}))
    cfg, problem = agent.load_config(str(path))
    assert cfg == config.merge({}) and problem.startswith("bad_config: mqtt.port")
    with pytest.raises(Reset):
        env.make(config_problem=problem)
    record = jobs.Jobs(env.jobs_path).current
    assert (record["state"], record["reason"]) == ("rolling_back", "bad_config")
    assert "mqtt.port" in record["detail"] and marks == []
    env.esp.running = "ota_0"  # the bootloader rolled back
    old = env.make()
    connected(old)
    last = old.link.client.states()[-1]
    assert (last["state"], last["job"], last["reason"], last["slot"]) == ("rolled_back", "job-9", "bad_config", "ota_0")
    assert last["detail"].startswith("the new image set config.json aside: bad_config: mqtt.port")
    assert "s3cret-pw" not in json.dumps(old.link.client.states()) + capsys.readouterr().out


def test_a_config_problem_outside_an_update_boot_keeps_the_device_running(env):
    # A device whose config.json is broken, booting normally: it runs on the defaults (no reset).
    a = env.make(config_problem="bad_config: wifi.password: too short")
    connected(a)
    assert a.link.client.states()[-1]["state"] == "idle"


def test_new_image_that_never_reports_is_boot_failed(env):
    _update_boot(env)
    env.esp.running = "ota_0"  # new image crashed before its health gate; bootloader rolled back
    a = env.make()
    connected(a)
    last = a.link.client.states()[-1]
    assert (last["state"], last["reason"]) == ("rolled_back", "boot_failed")


def test_rollback_unsupported_is_reported_not_fatal(env, monkeypatch):
    _update_boot(env)

    def no_otadata():
        raise OSError(-261, "ESP_ERR_NOT_FOUND")

    monkeypatch.setattr(env.esp.Partition, "mark_app_valid_cancel_rollback", staticmethod(no_otadata))
    a = env.make()
    connected(a)
    a._confirm()
    last = a.link.client.states()[-1]
    assert (last["state"], last["reason"]) == ("ok", "rollback_unsupported")


def test_health_timeout_without_mqtt_rolls_back(env):
    _update_boot(env)
    FakeMQTT.fail_connect = 1000
    a = env.make(ota={"health_timeout_s": 5})
    a.gate.timeout_ms = 0
    with pytest.raises(Reset):
        a.run()
    record = jobs.Jobs(env.jobs_path).current
    assert (record["state"], record["reason"]) == ("rolling_back", "health_timeout")
    assert record["detail"] == "no MQTT: [Errno 111] ECONNREFUSED"  # the last link error, named


def test_reset_during_download_reported_interrupted(env):
    j = jobs.Jobs(env.jobs_path)
    j.start({"id": "job-5", "type": "ota_trigger", "url": GOOD_URL}, "downloading", from_slot="ota_0")
    a = env.make()
    connected(a)
    last = a.link.client.states()[-1]
    assert (last["state"], last["reason"], last["job"]) == ("failed", "interrupted", "job-5")


def test_loop_retries_connect_with_backoff(env, monkeypatch):
    FakeMQTT.fail_connect = 2
    sleeps = []

    class Stop(BaseException):
        pass

    feeds = []

    def sleep(s):
        sleeps.append((len(FakeMQTT.instances), s, len(feeds)))
        if len(FakeMQTT.instances) >= 3 and FakeMQTT.instances[-1].sock is not None:
            raise Stop()

    monkeypatch.setattr(agent.time, "sleep", sleep)
    a = env.make()
    a.feed = lambda: feeds.append(1)
    with pytest.raises(Stop):
        a.run()
    # Backoff 2 s, then 4 s, then connected; slept in 1 s steps with the watchdog fed before each.
    pauses = [(attempt, s) for attempt, s, _ in sleeps if attempt < 3]
    assert pauses == [(1, 1)] * 2 + [(2, 1)] * 4, sleeps
    assert all(fed > i for i, (_, _, fed) in enumerate(sleeps[:6])), sleeps
    assert a.link.client.states()[-1]["state"] == "idle"


def test_the_workspace_context_is_made_once_wifi_is_up_not_at_start_up(env, monkeypatch):
    # An SSLContext seeds its random generator once, when it is made; on the C3 the RNG is only
    # pseudo-random until the radio is on (docs/CHIP.md §8). The buffer is taken at start-up, the
    # context after the first connect.
    from ota import https

    events = []

    class RecordingWLAN(WLAN):
        def active(self, on=None):
            if on:
                events.append("radio on")
            return True

    class Stop(BaseException):
        pass

    def sleep(s):  # the loop's first poll pause: connected by then
        raise Stop()

    monkeypatch.setattr(network, "WLAN", RecordingWLAN)
    monkeypatch.setattr(https, "context", lambda ca_path: events.append("context " + ca_path) or "ctx")
    a = env.make()
    assert len(a.runner.workspace.buf) == 4096 and a.runner.workspace.tls_context is None and events == []
    monkeypatch.setattr(agent.time, "sleep", sleep)
    with pytest.raises(Stop):
        a.run()
    assert events[0] == "radio on" and events.count("context ca.der") == 1
    assert events.index("context ca.der") > events.index("radio on") and a.link.connected
    assert a.runner.workspace.tls_context == "ctx"


def test_bad_config_falls_back_to_defaults(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"wifi": {"ssid": "x", "password": "short"}}))
    cfg, problem = agent.load_config(str(path))
    assert cfg == config.merge({}) and problem.startswith("bad_config: wifi.password")
    out = capsys.readouterr().out
    assert "bad_config" in out and "short" not in out


# --- signed triggers (docs/SIGNING.md): the agent's side of the policy ---------------------------------
from otactl import signing  # noqa: E402

KEY = signing.generate_key()
PUB = signing.public_key_hex(KEY)
OTHER_KEY = signing.generate_key()


def signed(key=KEY, **fields):
    base = {"type": "ota_trigger", "url": GOOD_URL, "sha256": "ab" * 32, "size": 300000, "version": "1.1.0",
            "id": fields.pop("id", "s1")}
    base.update(fields.pop("extra", {}))
    return signing.sign_trigger(base, key, **fields)


def test_signed_trigger_verified_before_download(env):
    up = Updater()
    a = env.make(up, ota={"require_signature": True, "signing_pubkey": PUB})
    connected(a)
    deliver(a, signed())
    with pytest.raises(Reset):
        a.run_pending()
    assert len(up.calls) == 1 and up.configs[0]["allow_downgrade"] is False


@pytest.mark.parametrize("make_trigger,reason", [
    (lambda: {"type": "ota_trigger", "url": GOOD_URL, "id": "u1"}, "unsigned"),
    (lambda: signed(key=OTHER_KEY), "bad_signature"),
    (lambda: dict(signed(), url=GOOD_URL + "?evil"), "bad_signature"),  # a field changed after signing
    (lambda: signed(now=1_000_000_000, expires_in=60), "expired"),
])
def test_signature_refusals_before_any_download(env, make_trigger, reason):
    up = Updater()
    a = env.make(up, ota={"require_signature": True, "signing_pubkey": PUB})
    connected(a)
    deliver(a, make_trigger())
    a.run_pending()
    last = a.link.client.states()[-1]
    assert (last["state"], last["reason"]) == ("failed", reason) and up.calls == []


def test_signed_downgrade_flag_reaches_the_updater_only_when_verified(env):
    up = Updater()
    a = env.make(up, ota={"signing_pubkey": PUB})
    connected(a)
    deliver(a, signed(allow_downgrade=True, id="d1"))
    with pytest.raises(Reset):
        a.run_pending()
    assert up.configs[-1]["allow_downgrade"] is True
    # The same flag on an unsigned trigger changes nothing.
    b = env.make(up)
    connected(b)
    deliver(b, {"type": "ota_trigger", "url": GOOD_URL, "id": "d2", "allow_downgrade": True})
    with pytest.raises(Reset):
        b.run_pending()
    assert up.configs[-1]["allow_downgrade"] is False


def test_target_list_and_wrong_target_on_own_topic(env):
    a = env.make(Updater(), ota={"signing_pubkey": PUB})
    connected(a)
    n = len(a.link.client.published)
    deliver(a, signed(target="ffffffffffff", id="t0"))  # fleet topic, not for us: silence
    assert a.pending is None and len(a.link.client.published) == n
    deliver(a, signed(target="ffffffffffff", id="t1"), topic=b"/switch/cmd/" + DEV.encode())
    assert a.link.client.states()[-1]["reason"] == "wrong_target" and a.pending is None
    deliver(a, signed(target="ffffffffffff," + DEV, id="t2"))  # a list naming us
    assert a.pending["id"] == "t2"


def test_replayed_signed_trigger_is_named_and_not_run(env):
    up = Updater()
    a = env.make(up, ota={"signing_pubkey": PUB})
    connected(a)
    trig = signed(id="r1")
    deliver(a, trig)
    with pytest.raises(Reset):
        a.run_pending()
    b = env.make(up, ota={"signing_pubkey": PUB})  # after the reboot: r1's seq is the highest
    connected(b)
    before = b.link.client.states()[-1]["state"]
    deliver(b, trig)
    b.run_pending()
    last = b.link.client.states()[-1]
    assert (last["state"], last["reason"]) == (before, "replayed")  # the state stays, reason added
    assert len(up.calls) == 1


def test_plain_http_refused_before_downloading_unless_allowed(env):
    up = Updater()
    a = env.make(up)
    connected(a)
    deliver(a, {"type": "ota_trigger", "url": "http://fw.example.com/app.bin", "id": "h1"})
    a.run_pending()
    states = [m["state"] for m in a.link.client.states()]
    assert "downloading" not in states and a.link.client.states()[-1]["reason"] == "http_not_allowed"
    assert up.calls == []
    b = env.make(up, ota={"allow_http": True})
    connected(b)
    deliver(b, {"type": "ota_trigger", "url": "http://fw.example.com/app.bin", "id": "h2"})
    with pytest.raises(Reset):
        b.run_pending()
    assert len(up.calls) == 1


def test_mqtt_port_follows_tls_unless_set(env):
    a = env.make(mqtt={"port": None})  # the default
    connected(a)
    assert a.link.client.port == 0  # umqtt.simple: 0 means 1883, or 8883 with ssl
    b = env.make(mqtt={"port": 1999})
    connected(b)
    assert b.link.client.port == 1999


def test_a_forged_trigger_cannot_burn_the_job_id_of_the_real_one(env):
    up = Updater()
    a = env.make(up, ota={"require_signature": True, "signing_pubkey": PUB})
    connected(a)
    deliver(a, signed(key=OTHER_KEY, id="job-7"))  # forged: same id, wrong key
    a.run_pending()
    assert a.link.client.states()[-1]["reason"] == "bad_signature"
    deliver(a, signed(id="job-7"))  # the operator's real one still runs
    assert a.pending is not None and a.pending["id"] == "job-7"
    with pytest.raises(Reset):
        a.run_pending()
    assert len(up.calls) == 1


@pytest.mark.parametrize("answer", ["short", "zero"])
def test_an_ntp_reply_that_is_short_or_zero_neither_crashes_nor_sets_the_clock(env, monkeypatch, answer):
    # Review: micropython-lib's ntptime unpacks msg[40:44] of whatever datagram came back: a short one
    # raises ValueError, which nothing caught (the agent died; on a new image: rolled back). A
    # transmit time of 0 (an unsynchronised server) becomes 2036-02-07, which fails every TLS check.
    def settime():
        if answer == "short":
            raise ValueError("buffer too small")
        monkeypatch.setattr(link_module.state, "unix_time", lambda: link_module._NTP_ZERO)

    from ota import link as link_module

    monkeypatch.setitem(sys.modules, "ntptime", types.SimpleNamespace(settime=settime))
    a = env.make()
    a.link.set_clock()
    assert a.link.clock_set is False  # asked again at the next connect


def test_a_broker_that_cuts_a_packet_short_is_a_lost_link_not_a_crash(env):
    # Review: umqtt indexes the bytes it read (sock.read(1)[0]); a broker closing mid-packet gives b""
    # and an IndexError, which agent.run did not catch (a reset; during the health gate, a rollback).
    a = env.make()
    connected(a)

    def cut_short():
        raise IndexError("index out of range")

    a.link.client.check_msg = cut_short
    with pytest.raises(OSError):
        a._serve()
