"""ota.jobrun.Runner: one job to its end, every path pinned by what reaches the broker, the job file and
the reset (pinned after `make mutate`). The rule pinned hardest: once set_boot() pointed otadata at the
new slot, whatever goes wrong while saying so, the board resets. CPython, the NOR fake of fakes.py.
"""
import errno
import json
import sys
import types

import pytest

import fakes
from ota import config, jobs, replay, signature, state, trigger
from ota.errors import OtaError
from ota.slots import Slots

DEV = "a0b1c2d3e4f5"
URL = "https://fw.example.com/app-1.1.0.bin"


class Reset(BaseException):
    pass


class Link:
    # The Link's surface, recording each call with its fields. fail: {"publish": exc, "open": exc, ...}
    # raised by that call while armed (a test arms it when the download is over).
    def __init__(self, tls=False, connected=True):
        self.device_id, self.tls, self.connected = DEV, tls, connected
        self.calls, self.fail, self.armed = [], {}, True

    def _maybe_fail(self, name):
        exc = self.fail.get(name)
        if exc is not None and self.armed:
            raise exc

    def publish(self, state_name, **fields):
        self.calls.append(("publish", state_name, fields))
        self._maybe_fail("publish")

    def refuse(self, reason, detail, keep_state=False):
        self.calls.append(("refuse", reason, detail, keep_state))

    def check(self):
        self.calls.append(("check",))
        self._maybe_fail("check")

    def set_clock(self):
        self.calls.append(("set_clock",))

    def open(self):
        self.calls.append(("open",))
        self._maybe_fail("open")
        self.connected = True

    def drop(self, resync=False):
        self.calls.append(("drop",))
        self.connected = False

    def disconnect(self):
        self.calls.append(("disconnect",))
        self.connected = False
        self._maybe_fail("disconnect")

    def published(self, name=None):
        return [(c[1], c[2]) for c in self.calls if c[0] == "publish" and (name is None or c[1] == name)]


class Updater:
    # update.run's signature; steps: the (done, total) progress calls it makes.
    def __init__(self, result=None, error=None, steps=((0, 300000), (300000, 300000)), after=None):
        self.result, self.error, self.steps, self.calls, self.after = result, error, steps, [], after

    def __call__(self, url, progress=None, **kw):
        self.calls.append(dict(kw, url=url))
        for done, total in self.steps:
            progress(done, total)
        if self.after is not None:
            self.after()
        if self.error is not None:
            raise self.error
        return self.result or {"result": "ok", "version": "1.1.0", "bytes": 300000, "slot": "ota_1"}


@pytest.fixture
def env(tmp_path, monkeypatch):
    esp = fakes.make_device()
    image = fakes.build_image("1.0.0")
    esp.slots["ota_0"].data[:len(image)] = image
    monkeypatch.setitem(sys.modules, "esp32", esp)
    resets = []

    def reset():
        resets.append(1)
        raise Reset()

    machine = types.SimpleNamespace(reset=reset)
    monkeypatch.setitem(sys.modules, "machine", machine)
    from ota import jobrun

    monkeypatch.setattr(jobrun, "machine", machine)
    ns = types.SimpleNamespace(esp=esp, jobrun=jobrun, resets=resets, tmp=tmp_path,
                               store=jobs.Jobs(str(tmp_path / "ota_job.json")),
                               replay=replay.Replay(str(tmp_path / "ota_seq.json")), slots=Slots(esp))

    def make(link=None, updater=None, network_module=None, **ota):
        ns.link = link or Link()
        ns.ota = config.merge({"ota": ota})["ota"]
        return jobrun.Runner(ns.link, ns.store, ns.replay, ns.slots, ns.ota, updater, feed=ns.feed,
                             network_module=network_module)

    ns.feed = lambda: None
    ns.make = make
    return ns


def job(**fields):
    fields = dict({"type": "ota_trigger", "url": URL, "id": "j1"}, **fields)
    if fields["type"] == "ota_revert":
        del fields["url"]
    return trigger.parse(json.dumps(fields).encode())


def reboot(runner, j):
    with pytest.raises(Reset):
        runner.run(j)


# --- the reset after set_boot: always ------------------------------------------------------------
@pytest.mark.parametrize("tls", [True, False])  # over TLS the link is down after the download: open()
@pytest.mark.parametrize("where,error", [("open", OSError(113, "EHOSTUNREACH")), ("open", MemoryError()),
                                         ("publish", OSError(104)), ("publish", MemoryError()),
                                         ("disconnect", OSError(9)), ("disconnect", MemoryError()),
                                         ("publish", KeyError("bug"))])
def test_whatever_fails_while_saying_rebooting_the_board_resets(env, where, error, tls):
    link = Link(tls=tls)
    link.fail, link.armed = {where: error}, False
    runner = env.make(link, Updater(after=lambda: setattr(link, "armed", True)))
    with pytest.raises((Reset, MemoryError, KeyError)):
        runner.run(job())
    assert env.resets == [1]
    assert env.store.current["state"] == "rebooting"  # the new image's first boot knows its job


def test_rebooting_is_said_with_the_size_on_a_fresh_session_then_a_clean_disconnect(env):
    link = Link(tls=True)
    reboot(env.make(link, Updater()), job())
    names = [c[0] if c[0] != "publish" else c[1] for c in link.calls]
    assert names[-3:] == ["open", "rebooting", "disconnect"]
    assert link.published("rebooting") == [("rebooting", {"job": "j1", "done": 300000, "total": 300000,
                                                          "progress": 100})]


def test_a_link_still_up_is_not_opened_again_before_the_reboot(env):
    link = Link()
    reboot(env.make(link, Updater()), job())
    assert ("open",) not in link.calls and link.calls[-1] == ("disconnect",)


def test_an_open_that_fails_still_tries_to_say_rebooting_and_resets(env, capsys):
    link = Link(tls=True)
    link.fail = {"open": OSError(113, "EHOSTUNREACH")}
    reboot(env.make(link, Updater()), job())
    assert "no MQTT before reboot" in capsys.readouterr().out
    assert link.published("rebooting") and env.resets == [1]


# --- run(): the outcome of every failure ----------------------------------------------------------
def test_the_clock_is_asked_first(env):
    link = Link()
    env.make(link, Updater(), require_sha256=True).run(job())
    assert link.calls[0] == ("set_clock",)


@pytest.mark.parametrize("code,reason", [(errno.ETIMEDOUT, "timeout"), (errno.ENOMEM, "low_memory"),
                                         (errno.EIO, "io_error")])
def test_an_oserror_is_failed_with_its_reason_and_the_error_as_detail(env, code, reason):
    link = Link()
    error = OSError(code, "boom")
    env.make(link, Updater(error=error)).run(job())
    final = link.published("failed")
    assert final == [("failed", {"job": "j1", "reason": reason, "detail": str(error)})]
    assert (env.store.current["reason"], env.store.current["detail"]) == (reason, str(error))


def test_a_memory_error_collects_and_says_low_memory(env, monkeypatch):
    import gc

    collects = []
    monkeypatch.setattr(gc, "collect", lambda: collects.append(1))
    link = Link()
    env.make(link, Updater(error=MemoryError())).run(job())
    assert collects and link.published("failed")[-1][1]["detail"] == "MemoryError"


def test_a_bug_is_internal_error_with_its_type_and_the_runner_is_ready_again(env):
    link = Link()
    runner = env.make(link, Updater(error=KeyError("size")))
    runner.run(job())
    assert link.published("failed")[-1][1]["reason"] == "internal_error"
    assert link.published("failed")[-1][1]["detail"] == "KeyError: 'size'"
    assert runner.job is None


def test_a_broker_gone_when_saying_failed_does_not_raise_and_drops_the_link(env, capsys):
    link = Link()
    link.fail, link.fail_states = {"publish": OSError(104, "ECONNRESET")}, ("failed",)
    env.make(link, Updater(error=OtaError("http_404", "not found"))).run(job())  # returns
    assert link.calls[-1] == ("drop",) and "MQTT lost during the job" in capsys.readouterr().out
    assert env.store.current["state"] == "failed"


def test_a_job_that_started_keeps_its_record_and_gains_its_cost(env):
    link = Link()
    env.make(link, Updater(error=OtaError("bad_sha256", "x"))).run(job(version="1.1.0"))
    record = env.store.current
    assert (record["state"], record["reason"], record["from_slot"], record["to_slot"]) == \
        ("failed", "bad_sha256", "ota_0", "ota_1")
    assert record["t_to"] == "1.1.0" and record["t_art"] == "full" and "t_conn_ms" in record


def test_a_job_refused_before_it_started_is_recorded_with_where_it_ran(env):
    env.make(Link(), Updater(), require_sha256=True).run(job())
    record = env.store.current
    assert (record["id"], record["state"], record["reason"]) == ("j1", "failed", "sha256_required")
    assert (record["from_slot"], record["from_version"]) == ("ota_0", "1.0.0") and "t_to" not in record


def test_a_signed_trigger_is_remembered_only_once_its_signature_verified(env, monkeypatch):
    monkeypatch.setattr(signature, "check", lambda *a: True)  # verified
    env.slots.other = None  # then refused: no_ota_slot
    env.make(Link(), Updater()).run(job(id="s1", signature="00" * 64))
    assert env.store.seen == ["s1"] and env.store.current["reason"] == "no_ota_slot"

    def bad(*a):
        raise OtaError("bad_signature", "x")

    monkeypatch.setattr(signature, "check", bad)
    env.make(Link(), Updater()).run(job(id="s2", signature="00" * 64))
    assert env.store.seen == ["s1"] and env.store.current["id"] == "s2"  # recorded, not remembered


# --- the policy, before anything is downloaded -----------------------------------------------------
def test_sha256_required_is_for_updates_only(env):
    up = Updater()
    link = Link()
    env.make(link, up, require_sha256=True).run(job(type="ota_revert"))
    assert link.published("failed")[-1][1]["reason"] == "revert_no_image"  # not sha256_required
    reboot(env.make(link, up, require_sha256=True), job(sha256="ab" * 32, id="j2"))
    assert up.calls and up.calls[0]["sha256"] == "ab" * 32


def test_plain_http_is_refused_in_any_case_unless_allowed(env):
    for url in ("http://fw.example.com/a.bin", "HTTP://fw.example.com/a.bin"):
        up, link = Updater(), Link()
        env.make(link, up).run(job(url=url, id=url[:4]))
        assert up.calls == [] and link.published("failed")[-1][1]["reason"] == "http_not_allowed"
    up = Updater()
    with pytest.raises(Reset):
        env.make(Link(), up, allow_http=True).run(job(url="http://fw.example.com/a.bin", id="ok"))
    assert up.calls[0]["url"] == "http://fw.example.com/a.bin"


@pytest.mark.parametrize("expires,now,refused", [(1800000000, 1800000000, True), (1800000000, 1800000001, True),
                                                 (1800000001, 1800000000, False), (1800000000, None, False)])
def test_an_unsigned_expiry_is_checked_at_the_second_when_the_clock_is_set(env, monkeypatch, expires, now, refused):
    monkeypatch.setattr(state, "unix_time", lambda: now)
    up, link = Updater(), Link()
    try:
        env.make(link, up).run(job(expires=expires))
    except Reset:
        pass
    assert (link.published("failed")[-1][1]["reason"] == "expired" if refused else up.calls != [])
    assert bool(up.calls) is not refused


def test_the_signature_check_gets_the_device_the_time_and_the_replay_store(env, monkeypatch):
    seen = []
    monkeypatch.setattr(state, "unix_time", lambda: 1800000000)
    monkeypatch.setattr(signature, "check", lambda *a: seen.append(a) or False)
    runner = env.make(Link(), Updater(), require_sha256=True)
    runner.run(job(sha256=None))  # refused before the signature: not asked
    assert seen == []
    reboot(runner, job(id="j2", sha256="ab" * 32))
    trig, ota, device, now, store, keys = seen[0]
    assert (trig["id"], ota is env.ota, device, now, store is env.replay, keys) == ("j2", True, DEV, 1800000000, True, [])


# --- the update ----------------------------------------------------------------------------------
def test_the_updater_gets_the_trigger_the_policy_and_what_runs(env):
    up = Updater()
    runner = env.make(Link(), up, token="t0ken")
    reboot(runner, job(sha256="ab" * 32, size=300000, version="1.1.0", project="ota-test"))
    call = up.calls[0]
    assert (call["url"], call["sha256"], call["size"], call["version"], call["token"]) == \
        (URL, "ab" * 32, 300000, "1.1.0", "t0ken")
    assert call["config"] is env.ota and call["running"] == "1.0.0" and call["running_project"] == "ota-test"
    assert call["project"] == "ota-test" and call["target"] is env.slots.other and call["feed"] is env.feed
    assert "artifact" not in call and "https" not in call  # a plain image, an injected updater


def test_the_start_record_says_from_where_to_where_and_when(env, monkeypatch):
    monkeypatch.setattr(state, "unix_time", lambda: 1800000000)
    seen = []
    up = Updater(error=OtaError("http_404", "x"))
    up.steps = ()
    orig = env.store.start
    monkeypatch.setattr(env.store, "start", lambda j, s, **kw: seen.append((s, kw)) or orig(j, s, **kw))
    env.make(Link(), up).run(job())
    state_name, kw = seen[0]
    assert state_name == "downloading" and kw == {"from_version": "1.0.0", "from_slot": "ota_0", "to_slot": "ota_1",
                                                  "to_otadata": None, "started": 1800000000}


def test_downloading_is_said_first_with_size_or_without(env):
    link = Link()
    env.make(link, Updater(error=OtaError("x", "y"), steps=())).run(job(size=4096))
    assert link.published()[0] == ("downloading", {"job": "j1", "progress": 0, "done": 0, "total": 4096})
    link = Link()
    env.make(link, Updater(error=OtaError("x", "y"), steps=())).run(job(id="j2"))
    assert link.published()[0] == ("downloading", {"job": "j2", "progress": None, "done": 0, "total": None})


def test_over_tls_the_link_is_closed_cleanly_before_the_download(env):
    link = Link(tls=True)
    seen = []
    up = Updater(error=OtaError("x", "y"), steps=())
    orig = up.__call__
    env.make(link, lambda url, **kw: seen.append(list(link.calls)) or orig(url, **kw)).run(job())
    assert seen[0][-1] == ("disconnect",) and link.connected is False
    link = Link()
    env.make(link, lambda url, **kw: seen.append(list(link.calls)) or orig(url, **kw)).run(job())
    assert ("disconnect",) not in seen[-1]


def test_only_a_verified_trigger_turns_anti_downgrade_off_and_on_a_copy(env, monkeypatch):
    up = Updater()
    reboot(env.make(Link(), up), job(allow_downgrade=True))  # unsigned: not honoured
    assert up.calls[0]["config"] is env.ota and not env.ota["allow_downgrade"]
    monkeypatch.setattr(signature, "check", lambda *a: True)
    up = Updater()
    reboot(env.make(Link(), up), job(id="s1", allow_downgrade=True, signature="00" * 64))
    assert up.calls[0]["config"]["allow_downgrade"] is True and env.ota["allow_downgrade"] is False
    assert dict(up.calls[0]["config"], allow_downgrade=False) == env.ota


def test_a_compressed_trigger_hands_its_artifact_to_the_updater(env):
    up = Updater()
    fields = dict(encoding="deflate", sha256="ab" * 32, size=300000, file_sha256="cd" * 32, file_size=1000)
    reboot(env.make(Link(), up), job(**fields))
    from ota import artifact

    found = up.calls[0]["artifact"]
    assert found == artifact.of(job(**fields)) and found["encoding"] == "deflate" and found["file_size"] == 1000


def test_same_version_is_ok_and_no_reboot(env):
    link = Link()
    env.make(link, Updater(result={"result": "same_version", "version": "1.1.0"})).run(job())
    assert link.published()[-1] == ("ok", {"job": "j1", "reason": "same_version", "detail": "already running 1.1.0"})
    assert env.resets == [] and env.store.current["state"] == "ok"


def test_the_rebooting_record_names_the_image_version(env):
    reboot(env.make(Link(), Updater(result={"result": "ok", "version": "1.2.0", "bytes": 5, "slot": "ota_1"})),
           job())  # the trigger named no version: the image's own
    record = env.store.current
    assert (record["state"], record["to_slot"], record["to_version"], record["t_to"]) == \
        ("rebooting", "ota_1", "1.2.0", "1.2.0")
    reboot(env.make(Link(), Updater(result={"result": "ok", "bytes": 5, "slot": "ota_1"})), job(id="j2",
                                                                                              version="1.3.0"))
    assert env.store.current["t_to"] == "1.3.0"  # no version in the result: the trigger's stays


def test_without_an_injected_updater_update_run_gets_the_metered_https_and_slot(env, monkeypatch):
    from ota import telemetry, update

    seen = []

    def run(url, **kw):
        seen.append(kw)
        raise OtaError("http_404", "x")

    monkeypatch.setattr(update, "run", run)
    env.make(Link(), None).run(job())
    kw = seen[0]
    assert isinstance(kw["target"], telemetry._Slot) and kw["target"].part is env.slots.other
    assert isinstance(kw["https"], telemetry._Https) and kw["https"].module.__name__ == "ota.https"


# --- progress during the download ----------------------------------------------------------------
@pytest.fixture
def clock(monkeypatch):
    now = {"ms": 0}
    monkeypatch.setattr(state, "ticks_ms", lambda: now["ms"])
    return now


def test_progress_is_rate_limited_by_the_configured_interval(env, clock):
    link = Link()
    runner = env.make(link, Updater(), progress_interval_s=2)
    runner.job, runner.throttle = job(), state.Throttle(2000, 5)
    runner._progress(0, 1000)
    clock["ms"] = 1999
    runner._progress(500, 1000)
    assert [f["progress"] for _, f in link.published("downloading")] == [0]
    clock["ms"] = 2000
    runner._progress(500, 1000)
    assert link.published("downloading")[-1] == ("downloading", {"job": "j1", "progress": 50, "done": 500,
                                                                 "total": 1000})
    assert link.calls.count(("check",)) == 3  # polled at every step, published or not


def test_the_runner_builds_its_throttle_from_the_interval(env, clock):
    link = Link()
    steps = ((0, 1000), (600, 1000))
    clock["ms"] = 10000
    env.make(link, Updater(error=OtaError("x", "y"), steps=steps), progress_interval_s=3).run(job())
    assert [f["progress"] for _, f in link.published("downloading")] == [None, 0]
    link = Link()

    class Later(Updater):
        def __call__(self, url, progress=None, **kw):
            progress(0, 1000)
            clock["ms"] += 2999
            progress(300, 1000)  # 30 % but only 2.999 s later: held back
            clock["ms"] += 1
            progress(40, 1000)  # 3 s after the last one sent, but 4 %: under the 5 % step
            progress(50, 1000)
            raise OtaError("x", "y")

    env.make(link, Later(), progress_interval_s=3).run(job())
    assert [f["progress"] for _, f in link.published("downloading")] == [None, 0, 5]


def test_the_last_byte_says_verifying_and_an_unknown_total_never_does(env, clock):
    link = Link()
    runner = env.make(link, Updater())
    runner.job, runner.throttle = job(), state.Throttle(0, 5)
    runner._progress(999, 1000)
    assert link.published("verifying") == []
    runner._progress(1000, 1000)
    assert link.published("verifying") == [("verifying", {"job": "j1", "progress": 100, "done": 1000,
                                                          "total": 1000})]
    runner._progress(5000, None)
    runner._progress(0, 0)
    assert len(link.published("verifying")) == 1


def test_progress_without_a_link_only_samples_and_a_lost_link_is_dropped(env, clock, capsys):
    link = Link(connected=False)
    runner = env.make(link, Updater())
    runner.job, runner.throttle = job(), state.Throttle(0, 5)
    samples = []
    runner.meter = types.SimpleNamespace(sample=lambda: samples.append(1))
    runner._progress(10, 100)
    assert link.calls == [] and samples == [1]
    link.connected, link.fail = True, {"check": OSError(104, "ECONNRESET")}
    runner._progress(20, 100)  # does not raise: the download matters more
    assert link.calls[-1] == ("drop",) and "MQTT lost during the download" in capsys.readouterr().out
    runner.meter = None
    runner._progress(30, 100)  # no meter (a revert): nothing sampled, nothing raised
    assert samples == [1, 1]


# --- the telemetry meter the runner builds ---------------------------------------------------------
def test_the_meter_reads_rssi_from_the_station_interface(env, monkeypatch):
    made = []

    class WLAN:
        def __init__(self, interface):
            made.append(interface)

        def status(self, what):
            return -42

    net = types.SimpleNamespace(WLAN=WLAN, STA_IF=7)
    meter = env.jobrun._meter({"version": "1.1.0", "encoding": "delta"}, net)
    assert made == [7] and meter.rssi0 == -42 and meter.to == "1.1.0" and meter.art == "delta"
    assert meter.esp32 is env.esp  # the IDF heap is sampled on a board
    assert env.jobrun._meter({}, types.SimpleNamespace()).wlan is None  # no station interface

    def broken(interface):
        raise OSError(5)

    assert env.jobrun._meter({}, types.SimpleNamespace(WLAN=broken, STA_IF=0)).wlan is None
    monkeypatch.delitem(sys.modules, "esp32")
    monkeypatch.setitem(sys.modules, "network", None)  # `import network` fails: CPython, Unix port
    bare = env.jobrun._meter({}, None)
    assert bare.esp32 is None and bare.wlan is None and bare.art == "full"


# --- ota_revert ----------------------------------------------------------------------------------
def _other_image(env, version="1.1.0", project=None, monkeypatch=None):
    # A valid image in ota_1 (its hash right: set_boot validates it), of another project if asked.
    if project is not None:
        descriptor = fakes.app_descriptor
        monkeypatch.setattr(fakes, "app_descriptor", lambda v, magic: descriptor(v, project=project, magic=magic))
    image = fakes.build_image(version)
    env.esp.slots["ota_1"].data[:len(image)] = image


def test_a_revert_records_where_it_goes_and_says_rebooting_without_progress(env, monkeypatch):
    _other_image(env)
    monkeypatch.setattr(state, "unix_time", lambda: 1800000000)
    link = Link()
    reboot(env.make(link), job(type="ota_revert", id="r1"))
    record = env.store.current
    assert {k: record.get(k) for k in ("id", "state", "from_version", "from_slot", "to_slot", "to_version",
                                        "started")} == \
        {"id": "r1", "state": "rebooting", "from_version": "1.0.0", "from_slot": "ota_0", "to_slot": "ota_1",
         "to_version": "1.1.0", "started": 1800000000}
    assert link.published() == [("rebooting", {"job": "r1"})] and env.esp.boot == "ota_1"


def test_a_revert_to_another_product_needs_the_trigger_to_name_it(env, monkeypatch):
    _other_image(env, project="thermostat", monkeypatch=monkeypatch)
    link = Link()
    env.make(link).run(job(type="ota_revert", id="r1"))
    assert link.published()[-1][1]["reason"] == "wrong_product" and env.esp.slots["ota_1"].set_boot_calls == 0
    reboot(env.make(Link()), job(type="ota_revert", id="r2", project="thermostat"))
    assert env.esp.boot == "ota_1"


def test_a_revert_to_an_older_version_follows_the_device_policy(env):
    _other_image(env, version="0.9.0")
    link = Link()
    env.make(link).run(job(type="ota_revert", id="r1"))
    assert link.published()[-1][1]["reason"] == "downgrade"
    reboot(env.make(Link(), allow_downgrade=True), job(type="ota_revert", id="r2"))
    assert env.esp.boot == "ota_1"


def test_a_revert_that_set_boot_refuses_fails_its_own_record(env):
    _other_image(env)
    env.esp.slots["ota_1"].data[10000] ^= 0xFF  # the header reads, the image hash does not match
    link = Link()
    env.make(link).run(job(type="ota_revert", id="r1"))
    record = env.store.current
    assert (record["state"], record["reason"], record["to_slot"], record["to_version"]) == \
        ("failed", "revert_invalid_image", "ota_1", "1.1.0")
    assert record["detail"].startswith("ota_1: ") and env.resets == []


def test_a_revert_without_an_image_names_the_slot(env):
    env.esp.slots["ota_1"].data[:4096] = b"\xff" * 4096
    link = Link()
    env.make(link).run(job(type="ota_revert", id="r1"))
    final = link.published()[-1][1]
    assert final["reason"] == "revert_no_image" and final["detail"].startswith("ota_1: ")
    assert env.esp.slots["ota_1"].set_boot_calls == 0


def test_a_revert_to_a_header_that_cannot_fit_the_slot_is_no_image(env):
    # Segment 0 claims more than the slot holds: refused from the header, before set_boot.
    _other_image(env)
    size = env.esp.slots["ota_1"].size
    env.esp.slots["ota_1"].data[28:32] = (size + 4096).to_bytes(4, "little")
    link = Link()
    env.make(link).run(job(type="ota_revert", id="r1"))
    final = link.published()[-1][1]
    assert final["reason"] == "revert_no_image" and "too_large" in final["detail"]
    assert env.esp.slots["ota_1"].set_boot_calls == 0


def test_the_jobs_cost_has_the_rssi_of_the_links_network(env):
    class WLAN:
        def __init__(self, interface):
            pass

        def status(self, what):
            return -48

    net = types.SimpleNamespace(WLAN=WLAN, STA_IF=0)
    env.make(Link(), Updater(error=OtaError("http_404", "x")), network_module=net).run(job())
    assert env.store.current["t_rssi0"] == -48
