"""ota.agent: the boot report, the one retry loop (backoff, the watchdog, the health gate's deadline),
the MQTT callback's answers and main()'s last words before main.py resets the board (pinned after
`make mutate`). The rule pinned hardest: an exception or a hang ends in a reset, never the REPL; on a
new image's first boot the job record says why first. CPython, test_agent_unit's fakes.
"""
import json
import types

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
import test_agent_unit
from test_agent_unit import DEV, FakeMQTT, Reset, Updater, _update_boot, agent, connected, deliver
from ota import config, jobs, replay, selftest, state

env = test_agent_unit.env  # test_agent_unit's fixture, registered here


class Stop(BaseException):
    # Ends an agent loop that would otherwise run for ever.
    pass


def states(a):
    # The device's state messages (Home Assistant's entity goes to another topic).
    return [m for topic, m, _, _ in a.link.client.published if topic == a.link.state_topic.encode()]


# --- load_config -----------------------------------------------------------------------------------
def test_an_unreadable_config_runs_on_the_defaults_and_says_why(tmp_path, capsys):
    cfg, problem = agent.load_config(str(tmp_path))  # a directory: open() raises, not ENOENT
    assert cfg == config.merge({}) and problem.startswith("config unreadable (")
    assert "agent: config unreadable (" in capsys.readouterr().out
    assert agent.load_config(str(tmp_path / "none.json")) == (config.validate(config.merge({})), None)


# --- the constructor -------------------------------------------------------------------------------
def test_without_a_device_id_the_chip_id_names_the_device(env):
    a = env.make()
    assert a.link.state_topic == "/switch/state/" + DEV and a.intake.own_topic == "/switch/cmd/" + DEV
    env.cfg["device_id"] = "kitchen-2"
    b = env.make()
    assert b.link.device_id == "kitchen-2" and b.intake.device_id == "kitchen-2"
    assert b.link.state_topic == "/switch/state/kitchen-2"


def test_the_replay_file_sits_beside_the_job_file(env, tmp_path):
    a = env.make()
    assert a.runner.replay.path == str(tmp_path) + "/" + replay.PATH
    assert a.jobs.path == env.jobs_path and a.runner.jobs is a.jobs and a.intake.jobs is a.jobs


def test_home_assistant_only_when_discovery_is_on(env):
    assert env.make().ha is None and env.make().link.ha is None
    a = env.make(ha={"discovery": True})
    assert a.ha is not None and a.link.ha is a.ha
    assert a.ha.cmd_topic == "/switch/cmd/" + DEV and a.ha.device_state_topic == "/switch/state/" + DEV


def test_the_runner_and_link_get_the_feed_and_the_network(env):
    feed = lambda: None  # noqa: E731
    a = agent.Agent(env.cfg, mqtt_class=FakeMQTT, network_module=test_agent_unit.network, jobs_path=env.jobs_path,
                    feed=feed)
    assert a.feed is feed and a.link.feed is feed and a.runner.feed is feed
    assert a.runner.network is test_agent_unit.network and a.link.network is test_agent_unit.network
    assert a.runner.ota is env.cfg["ota"] and a.runner.slots is a.slots and a.runner.link is a.link
    assert env.make().feed is state.no_watchdog


# --- what the boot says --------------------------------------------------------------------------
def test_the_last_outcome_stays_visible_after_a_reboot(env):
    j = jobs.Jobs(env.jobs_path)
    j.start({"id": "job-3", "type": "ota_trigger"}, "failed", reason="bad_sha256", detail="got 00")
    a = env.make()
    connected(a)
    last = states(a)[-1]
    assert (last["state"], last["job"], last["reason"], last["detail"]) == ("failed", "job-3", "bad_sha256", "got 00")


def test_otadata_is_read_only_for_a_job_cut_during_its_download(env, monkeypatch, capsys):
    reads = []

    def unreadable(esp32=None):
        reads.append(esp32)
        raise OSError(5, "EIO")

    monkeypatch.setattr(agent.otadata, "read", unreadable)
    env.make()  # no record
    assert reads == []
    j = jobs.Jobs(env.jobs_path)
    j.start({"id": "job-5", "type": "ota_trigger"}, "downloading", from_slot="ota_0")
    a = env.make()  # unreadable otadata: classified without it, the agent runs
    assert reads == [env.esp] and "otadata unreadable" in capsys.readouterr().out
    connected(a)
    assert (states(a)[-1]["state"], states(a)[-1]["reason"]) == ("failed", "interrupted")


def test_a_rollback_with_telemetry_records_the_reset_of_the_boot_that_judged_it(env):
    _update_boot(env)
    j = jobs.Jobs(env.jobs_path)
    j.update(t_to="1.1.0", t_reboot_at=None)
    env.esp.running = "ota_0"  # the bootloader rolled back
    a = env.make()
    record = jobs.Jobs(env.jobs_path).current
    assert (record["state"], record["t_reset"]) == ("rolled_back", "HARD_RESET") and a.reset_cause == 2
    connected(a)
    assert states(a)[-1]["t"]["reset"] == "HARD_RESET"


def test_a_rollback_without_telemetry_adds_none(env):
    _update_boot(env)
    env.esp.running = "ota_0"
    env.make()
    assert "t_reset" not in jobs.Jobs(env.jobs_path).current


def test_the_gate_deadline_is_the_configured_timeout(env):
    _update_boot(env)
    a = env.make(ota={"health_timeout_s": 37})
    assert a.gate.timeout_ms == 37000


# --- the health gate --------------------------------------------------------------------------------
def test_a_failed_self_test_rolls_back_even_when_the_broker_is_gone(env, monkeypatch):
    _update_boot(env)
    monkeypatch.setattr(selftest, "run", lambda cfg: (False, "relay stuck"))
    marks = []
    monkeypatch.setattr(env.esp.Partition, "mark_app_valid_cancel_rollback", staticmethod(lambda: marks.append(1)))
    a = env.make()
    connected(a)
    a.link.client.fail_next_io = True  # the "failed" message cannot go out
    with pytest.raises(Reset):
        a._confirm()
    record = jobs.Jobs(env.jobs_path).current
    assert (record["state"], record["reason"], record["detail"]) == ("rolling_back", "selftest_failed", "relay stuck")
    assert marks == []


def test_a_confirmed_update_records_and_says_its_cost(env, monkeypatch):
    _update_boot(env)
    j = jobs.Jobs(env.jobs_path)
    j.update(t_to="1.1.0", t_reboot_at=1800000000, t_conn_ms=5)
    monkeypatch.setattr(state, "unix_time", lambda: 1800000004)
    ms = {"now": 50000}
    monkeypatch.setattr(state, "ticks_ms", lambda: ms["now"])
    a = env.make()
    connected(a)
    ms["now"] = 50000 + 1234
    a._confirm()
    record = jobs.Jobs(env.jobs_path).current
    assert (record["state"], record["t_boot_ms"], record["t_reboot_s"], record["t_reset"]) == \
        ("ok", 1234, 4, "HARD_RESET")
    last = states(a)[-1]
    assert last["state"] == "ok" and last["job"] == "job-9" and last["t"]["boot_ms"] == 1234 and a.gate is None


# --- the loop ----------------------------------------------------------------------------------------
def _loop(env, monkeypatch, a, stop_after):
    # Runs a.run() until stop_after(sleeps) says so; returns the sleeps with the attempt they followed.
    sleeps = []

    def sleep(s):
        sleeps.append((len(FakeMQTT.instances), s))
        if stop_after(sleeps):
            raise Stop()

    monkeypatch.setattr(agent.time, "sleep", sleep)
    with pytest.raises(Stop):
        a.run()
    return sleeps


def _pauses(sleeps):
    # Seconds slept after each failed attempt (1 s steps), the poll's 0.1 s steps left out.
    out = {}
    for attempt, s in sleeps:
        if s == 1:
            out[attempt] = out.get(attempt, 0) + 1
    return [out[k] for k in sorted(out)]


def test_backoff_doubles_to_a_minute_and_starts_again_after_a_connect(env, monkeypatch):
    FakeMQTT.fail_connect = 7
    a = env.make()

    def stop(sleeps):
        client = FakeMQTT.instances[-1]
        if client.sock is not None and not client.fail_next_io and len(FakeMQTT.instances) == 8:
            client.fail_next_io = True  # connected at the 8th attempt: then the link drops once
        return len(FakeMQTT.instances) == 9 and sleeps[-1][1] == 0.1  # reconnected and polling

    sleeps = _loop(env, monkeypatch, a, stop)
    assert _pauses(sleeps) == [2, 4, 8, 16, 32, 60, 60, 2]
    assert 0.1 in [s for _, s in sleeps]  # the poll interval
    assert states(a)[-1]["state"] == "idle"


def test_a_failure_drops_the_link_and_asks_ntp_again(env, monkeypatch):
    FakeMQTT.fail_connect = 1
    a = env.make()
    a.link.clock_set = True
    seen = []

    def stop(sleeps):
        seen.append(a.link.clock_set)
        return True

    _loop(env, monkeypatch, a, stop)
    assert seen == [False] and a.link.client is None


@pytest.mark.parametrize("left_ms,pause", [(500, 1), (999, 1), (1000, 2), (20000, 2)])
def test_during_the_gate_the_pause_ends_with_the_deadline(env, monkeypatch, left_ms, pause):
    # The backoff (2 s at first) is cut to the gate's time left, in whole seconds rounded up.
    _update_boot(env)
    FakeMQTT.fail_connect = 1000
    ms = {"now": 0}
    from ota import health

    monkeypatch.setattr(health, "ticks_ms", lambda: ms["now"])
    a = env.make(ota={"health_timeout_s": 30})
    ms["now"] = 30000 - left_ms

    def stop(sleeps):
        return len(FakeMQTT.instances) >= 2

    sleeps = _loop(env, monkeypatch, a, stop)
    assert [attempt for attempt, s in sleeps] == [1] * pause + [2] and {s for _, s in sleeps} == {1}


def test_the_wifi_wait_is_bounded_by_the_gate(env, monkeypatch):
    b = env.make()  # a normal boot
    _update_boot(env)
    a = env.make(ota={"health_timeout_s": 30})
    limits = []

    def connect(limit_ms=None):
        limits.append(limit_ms)
        raise Stop()

    monkeypatch.setattr(a.link, "connect", connect)
    with pytest.raises(Stop):
        a.run()
    monkeypatch.setattr(b.link, "connect", connect)
    with pytest.raises(Stop):
        b.run()
    assert 0 < limits[0] <= 30000 and limits[1] is None


def test_a_memory_error_while_connecting_is_retried_like_a_lost_link(env, monkeypatch):
    a = env.make()
    calls = []

    def connect(limit_ms=None):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError()
        raise Stop()

    monkeypatch.setattr(a.link, "connect", connect)
    monkeypatch.setattr(agent.time, "sleep", lambda s: None)
    with pytest.raises(Stop):
        a.run()
    assert len(calls) == 2


def test_the_loop_runs_the_queued_job_and_reconnects_after_it(env, monkeypatch):
    # A job that ends without MQTT (over TLS it disconnects for the download): the loop reconnects and
    # says the outcome again on the new session.
    holder = {}
    up = Updater(result={"result": "same_version", "version": "1.0.0"}, during=lambda done: holder["a"].link.drop())
    a = holder["a"] = env.make(up)
    fed = []
    a.feed = lambda: fed.append(1)

    def stop(sleeps):
        if len(sleeps) == 1:
            a.link.client.incoming.append((b"/switch/cmd/root", json.dumps(
                {"type": "ota_trigger", "url": "https://fw.example.com/a.bin", "id": "q1"}).encode()))
        return len(FakeMQTT.instances) == 2 and sleeps[-1][1] == 0.1

    sleeps = _loop(env, monkeypatch, a, stop)
    assert up.calls and a.pending is None and a.busy is None
    assert _pauses(sleeps) == [2]  # the reconnect after the job, as after any lost link
    last = states(a)[-1]
    assert (last["state"], last["job"], last["reason"]) == ("ok", "q1", "same_version")
    assert len(fed) >= len(sleeps)


def test_the_link_is_kept_alive_from_the_loop(env, monkeypatch):
    a = env.make()
    pings = []
    monkeypatch.setattr(a.link, "keepalive", lambda: pings.append(1))
    _loop(env, monkeypatch, a, lambda sleeps: len(sleeps) == 3)
    assert len(pings) == 3


# --- the callback's answers ------------------------------------------------------------------------
def test_a_memory_error_in_the_callback_is_low_memory_and_a_bug_internal_error(env, monkeypatch, capsys):
    a = env.make()
    connected(a)

    def oom(*args):
        raise MemoryError()

    monkeypatch.setattr(a.intake, "take", oom)
    deliver(a, b"{}")
    last = states(a)[-1]
    assert (last["state"], last["reason"], last["detail"]) == \
        ("failed", "low_memory", "MemoryError while taking in the message")

    def bug(*args):
        raise ZeroDivisionError("x")

    monkeypatch.setattr(a.intake, "take", bug)
    deliver(a, b"{}")
    assert (states(a)[-1]["reason"], states(a)[-1]["detail"]) == ("internal_error", "ZeroDivisionError: x")
    assert a.pending is None


def test_a_refusal_while_a_job_runs_keeps_the_jobs_state(env):
    a = env.make()
    connected(a)
    a.busy = {"id": "j0"}
    a.link.publish("downloading", job="j0", progress=30)
    deliver(a, b"{not json")
    last = states(a)[-1]
    assert (last["state"], last["job"], last["progress"], last["reason"]) == ("downloading", "j0", 30, "bad_json")


def test_an_oversized_message_is_too_long_and_keeps_a_running_jobs_state(env):
    a = env.make()
    connected(a)
    a.on_oversize(b"/switch/cmd/root", 5000)
    assert (states(a)[-1]["state"], states(a)[-1]["reason"]) == ("failed", "too_long")
    a.busy = {"id": "j0"}
    a.link.publish("downloading", job="j0", progress=30)
    a.on_oversize(b"/switch/cmd/root", 5000)
    assert (states(a)[-1]["state"], states(a)[-1]["reason"]) == ("downloading", "too_long")


def test_the_queued_job_is_handed_to_the_runner_and_busy_cleared_even_when_it_raises(env, monkeypatch):
    a = env.make()
    seen = []

    def run(job):
        seen.append((job, a.busy, a.pending))
        raise Stop()

    monkeypatch.setattr(a.runner, "run", run)
    a.pending = {"id": "q1"}
    with pytest.raises(Stop):
        a.run_pending()
    assert seen == [({"id": "q1"}, {"id": "q1"}, None)] and a.busy is None and a.pending is None


def test_a_release_announcement_only_refreshes_the_entity(env):
    a = env.make(ha={"discovery": True})
    client = connected(a)
    n = len(client.published)
    release = {"type": "ota_trigger", "url": "https://fw.example.com/b.bin", "version": "1.1.0", "id": "r1"}
    deliver(a, json.dumps(release).encode(), topic=b"/switch/release")
    assert a.pending is None
    new = client.published[n:]
    assert [t for t, _, _, _ in new] == [b"/switch/ha/" + DEV.encode()] and new[0][1]["latest_version"] == "1.1.0"
    deliver(a, b'{"type":"ota_install"}', topic=("/switch/cmd/" + DEV).encode())
    assert a.pending["id"] == "r1"
    deliver(a, b'{"type":"ota_install"}', topic=("/switch/cmd/" + DEV).encode())  # queued: a duplicate
    assert states(a)[-1]["reason"] == "already_run"


# --- main(): the watchdog first, and the last words of a crash ---------------------------------------
@pytest.fixture
def main_env(env, monkeypatch):
    # agent.main() with a fake machine.WDT and config; the Agent it builds is the real one, with the
    # fakes, and its run() is ns.run (the loop itself is tested above).
    ns = types.SimpleNamespace(made=[], built=[], run=None, problem=None)

    class WDT:
        def __init__(self, timeout):
            ns.made.append(timeout)

        def feed(self):
            pass

    monkeypatch.setattr(agent.machine, "WDT", WDT, raising=False)
    cfg = dict(env.cfg, ota=dict(env.cfg["ota"], watchdog_ms=12345))
    monkeypatch.setattr(agent, "load_config", lambda: (cfg, ns.problem))
    ns.problem = None
    real = agent.Agent

    def make(cfg, config_problem=None, feed=None):
        ns.built.append((len(ns.made), config_problem, feed))
        a = real(cfg, mqtt_class=FakeMQTT, network_module=test_agent_unit.network, jobs_path=env.jobs_path,
                 config_problem=config_problem, feed=feed)
        a.run = ns.run
        return a

    monkeypatch.setattr(agent, "Agent", make)
    return ns


def _raise(error):
    def run():
        raise error
    return run


def test_main_arms_the_watchdog_before_building_the_agent(main_env):
    main_env.run = _raise(Stop())
    with pytest.raises(Stop):
        agent.main()
    assert main_env.made == [12345]
    made_before, problem, feed = main_env.built[0]
    assert made_before == 1 and problem is None and feed.__name__ == "feed"


@pytest.mark.parametrize("gate", [True, False])
def test_a_crash_out_of_the_loop_is_raised_to_main_py_and_recorded_on_a_new_image(env, main_env, gate):
    if gate:
        _update_boot(env)
    main_env.run = _raise(RuntimeError("boom"))
    with pytest.raises(RuntimeError):  # main.py prints it and resets the board
        agent.main()
    record = jobs.Jobs(env.jobs_path).current
    if gate:
        assert (record["state"], record["reason"], record["detail"]) == \
            ("rolling_back", "boot_failed", "crashed: RuntimeError: boom")
    else:
        assert record is None


def test_main_hands_the_config_problem_to_the_agent(env, main_env):
    # A new image whose config.json was set aside rolls back at once (bad_config), from main() too.
    _update_boot(env)
    main_env.problem = "bad_config: mqtt.port: out of range"
    main_env.run = _raise(Stop())
    with pytest.raises(Reset):
        agent.main()
    assert main_env.built[0][1] == "bad_config: mqtt.port: out of range"
    record = jobs.Jobs(env.jobs_path).current
    assert (record["state"], record["reason"]) == ("rolling_back", "bad_config")


def test_the_self_test_gets_the_agents_config(env, monkeypatch):
    _update_boot(env)
    seen = []
    monkeypatch.setattr(selftest, "run", lambda cfg: (seen.append(cfg), (True, None))[1])
    a = env.make()
    connected(a)
    a._confirm()
    assert seen == [a.cfg]


def test_a_failed_gate_says_failed_with_the_job_reason_and_detail_before_the_reset(env, monkeypatch):
    _update_boot(env)
    monkeypatch.setattr(selftest, "run", lambda cfg: (False, "relay stuck"))
    a = env.make()
    connected(a)
    with pytest.raises(Reset):
        a._confirm()
    last = states(a)[-1]
    assert (last["state"], last["job"], last["reason"], last["detail"]) == \
        ("failed", "job-9", "selftest_failed", "relay stuck")


def test_a_confirmation_without_rollback_keeps_its_reason_and_detail(env, monkeypatch):
    _update_boot(env)

    def no_otadata():
        raise OSError(-261, "ESP_ERR_NOT_FOUND")

    monkeypatch.setattr(env.esp.Partition, "mark_app_valid_cancel_rollback", staticmethod(no_otadata))
    a = env.make()
    connected(a)
    a._confirm()
    record = jobs.Jobs(env.jobs_path).current
    last = states(a)[-1]
    assert record["reason"] == last["reason"] == "rollback_unsupported"
    assert record["detail"] and record["detail"] == last["detail"]


def test_a_trigger_while_one_waits_or_runs_is_busy_from_either_path(env):
    a = env.make(ha={"discovery": True})
    connected(a)
    waiting = {"type": "ota_trigger", "url": "https://fw.example.com/a.bin", "id": "q1"}
    deliver(a, json.dumps(waiting).encode())
    assert a.pending["id"] == "q1"
    deliver(a, json.dumps(dict(waiting, id="q2")).encode())  # queued, not yet running: busy all the same
    assert a.pending["id"] == "q1" and states(a)[-1]["reason"] == "busy"
    a.busy, a.pending = a.pending, None  # now it runs
    release = {"type": "ota_trigger", "url": "https://fw.example.com/b.bin", "version": "1.1.0", "id": "r1"}
    deliver(a, json.dumps(release).encode(), topic=b"/switch/release")
    deliver(a, b'{"type":"ota_install"}', topic=("/switch/cmd/" + DEV).encode())  # HA's Install meanwhile
    assert a.pending is None and states(a)[-1]["reason"] == "busy"
