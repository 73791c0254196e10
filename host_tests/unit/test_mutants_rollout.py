# The rollout engine (otactl/rollout.py) under CPython with a fake broker and fleet
# (host_tests/fake_mqtt.py), no mosquitto: what the operator relies on, at each bound. Written for
# mutation testing (issue 15, docs/MUTATION.md): the e2e tests need a broker and light devices, which
# is too slow for thousands of mutants and skips where no mosquitto is installed.
import hashlib
import json
import os
import threading

import pytest

import fake_mqtt
from fake_mqtt import Device, FakeConn
from otactl import decisionlog, mqtt, rollout
from ota.errors import OtaError

MANIFEST = {"version": "1.0.1", "url": "https://fw.example/releases/firmware-v1.0.1.bin",
            "sha256": "ab" * 32, "size": 1462272, "project": "ota-switch"}
JOB = "job-t"


def devices(n, answer=None, version="1.0.0", prefix="d"):
    return [Device("%s%02d" % (prefix, i), version, answer=answer or fake_mqtt.ok("1.0.1")) for i in range(n)]


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def events(records, name):
    return [r for r in records if r["event"] == name]


def position(job, fleet, n):
    """The device at position n of the rollout's order (a hash of job and id)."""
    return rollout._order(job, [d.id for d in fleet])[n]


def run(tmp_path, fleet, options, job=JOB, manifest=MANIFEST, **kw):
    conn = FakeConn(fleet)
    log = str(tmp_path / "rollout.jsonl")
    seen = []
    engine = rollout.Rollout(conn, manifest, options, log, job=job, on_event=seen.append,
                             snapshot_timeout=0.25, **kw)
    summary = engine.run()
    records = read_log(log)
    assert json.loads(json.dumps(seen)) == records  # every record written is shown, in order
    return engine, summary, conn, records


def timeless(summary):
    summary = dict(summary)
    assert summary.pop("duration_s") >= 0
    return summary


# --- Options ----------------------------------------------------------------------------------------
def test_options_defaults_are_the_documented_ones():
    o = rollout.Options()
    assert o.as_dict() == {"stages": [0.1, 0.5, 1.0], "max_concurrent": 10, "device_timeout": 600.0,
                           "success_threshold": 0.9, "abort_failure_rate": 0.2, "only_below": None}
    assert rollout.Options.from_dict(o.as_dict()).as_dict() == o.as_dict()


def test_options_convert_their_values():
    o = rollout.Options(stages=("0.5", 1), max_concurrent=3, device_timeout=2, success_threshold=1,
                        abort_failure_rate=0, only_below="1.0.0")
    assert o.stages == (0.5, 1.0)
    assert (o.max_concurrent, o.device_timeout, o.success_threshold, o.abort_failure_rate) == (3, 2.0, 1.0, 0.0)
    assert all(type(v) is float for v in (o.device_timeout, o.success_threshold, o.abort_failure_rate))
    assert o.only_below == "1.0.0"


@pytest.mark.parametrize("stages", [None, ("x",), (), (0,), (0, 1), (-0.5, 1), (1.01,), (0.5, 0.5, 1),
                                    (0.5, 0.1, 1), tuple((i + 1) / 101 for i in range(101))])
def test_bad_stages_are_refused(stages):
    with pytest.raises(OtaError) as e:
        rollout.Options(stages=stages)
    assert e.value.reason == "bad_stages"


def test_bad_stages_detail_shows_what_was_given():
    with pytest.raises(OtaError) as e:
        rollout.Options(stages=(0.5, 0.1))
    assert "got 0.5,0.1" in e.value.detail and "(0, 1]" in e.value.detail
    with pytest.raises(OtaError) as e:
        rollout.Options(stages=("x",))
    assert e.value.detail == "stages are fractions like 0.1,0.5,1"


@pytest.mark.parametrize("stages", [(1,), (0.001, 1), tuple((i + 1) / 100 for i in range(100))])
def test_stages_at_their_bounds_are_taken(stages):
    assert rollout.Options(stages=stages).stages == tuple(float(s) for s in stages)


@pytest.mark.parametrize("field,value,flag", [
    ("max_concurrent", 0, "--max-concurrent"), ("device_timeout", 0, "--device-timeout"),
    ("success_threshold", 1.5, "--success-threshold"), ("abort_failure_rate", -0.1, "--abort-failure-rate")])
def test_bad_options_name_their_flag(field, value, flag):
    with pytest.raises(OtaError) as e:
        rollout.Options(**{field: value})
    assert e.value.reason == "bad_arguments" and e.value.detail.startswith(flag + " ")


# --- stages and order -----------------------------------------------------------------------------
def test_stage_bounds():
    assert rollout.stage_bounds(10, (0.3, 1.0)) == [(0, 3), (3, 10)]  # 0.3 * 10 is 3.0000000000000004
    assert rollout.stage_bounds(10, (0.7, 1.0)) == [(0, 7), (7, 10)]  # 0.7 * 10 is 7.000000000000001
    assert rollout.stage_bounds(20, (0.1, 0.5, 1.0)) == [(0, 2), (2, 10), (10, 20)]
    assert rollout.stage_bounds(3, (0.1, 0.5, 1.0)) == [(0, 1), (1, 2), (2, 3)]
    assert rollout.stage_bounds(1, (0.1, 0.5, 1.0)) == [(0, 1)]  # empty stages dropped
    assert rollout.stage_bounds(4, (0.5, 0.6, 1.0)) == [(0, 2), (2, 3), (3, 4)]
    assert rollout.stage_bounds(0, (1.0,)) == []


def test_order_is_the_hash_of_job_and_id():
    ids = ["d%02d" % i for i in range(20)]
    order = rollout._order("job-a", ids)
    assert order == sorted(ids, key=lambda d: hashlib.sha256(("job-a|" + d).encode()).digest())
    assert rollout._order("job-a", list(reversed(ids))) == order
    assert rollout._order("job-b", ids) != order


# --- a whole rollout ----------------------------------------------------------------------------------
def test_rollout_in_three_stages(tmp_path, monkeypatch):
    synced = []  # the events in the log file at each fsync
    real_fsync = os.fsync

    def fsync(fd):
        path = str(tmp_path / "rollout.jsonl")
        synced.append(read_log(path) if os.path.exists(path) else [])
        real_fsync(fd)

    monkeypatch.setattr(decisionlog.os, "fsync", fsync)
    fleet = devices(10) + [Device("new", "1.0.1"), Device("ahead", "2.0.0"), Device("off", "1.0.0", state="offline")]
    in_flight_at_send = []

    engine, summary, conn, records = None, None, None, None
    conn = FakeConn(fleet)

    def on_send(device):
        # the trigger was logged and fsynced before it left
        assert device in [r.get("device") for r in synced[-1] if r["event"] == "trigger"]
        in_flight_at_send.append(len(engine.tracker.in_flight))

    conn.on_send = on_send
    log = str(tmp_path / "rollout.jsonl")
    engine = rollout.Rollout(conn, MANIFEST, rollout.Options((0.1, 0.5, 1.0), max_concurrent=2), log,
                             job=JOB, snapshot_timeout=0.25)
    summary = engine.run()
    records = read_log(log)
    order = rollout._order(JOB, ["d%02d" % i for i in range(10)])
    assert timeless(summary) == {
        "job": JOB, "version": "1.0.1", "result": "completed", "abort_reason": None, "targets": 10,
        "skipped": 3, "outcomes": {"ok": 10}, "reasons": {}, "not_started": 0, "stages_done": 3,
        "stages_advanced": 3, "stages": 3, "suspects": {}, "since_first_start_s": None}
    assert (mqtt.STATE_FILTER, 1) in conn.subscribed and conn.synced[0] == 0.25
    assert conn.triggered() == order  # each once, in the rollout's order
    assert {qos for _, _, qos in conn.sent} == {1}
    assert conn.sent[0][1] == {"type": "ota_trigger", "url": MANIFEST["url"], "sha256": MANIFEST["sha256"],
                               "size": MANIFEST["size"], "version": "1.0.1", "id": JOB}
    assert max(in_flight_at_send) == 2  # max_concurrent, used to the full
    start = records[0]
    assert start["event"] == "start" and start["rollout"] == JOB and start["job"] == JOB
    assert start["targets"] == order and start["stages"] == [[0, 1], [1, 5], [5, 10]]
    assert start["skipped"] == {"new": "up_to_date", "ahead": "up_to_date", "off": "offline"}
    assert start["manifest"] == MANIFEST and start["options"] == engine.options.as_dict()
    assert start["trigger"] == conn.sent[0][1]
    triggers = events(records, "trigger")
    assert [(t["device"], t["stage"], t["artifact"]) for t in triggers] == [
        (d, 0 if i < 1 else 1 if i < 5 else 2, "full") for i, d in enumerate(order)]
    outcomes = events(records, "outcome")
    assert [(o["device"], o["stage"], o["outcome"], o["reason"], o["detail"], o["version"]) for o in outcomes] == [
        (d, 0 if i < 1 else 1 if i < 5 else 2, "ok", None, None, "1.0.1") for i, d in enumerate(order)]
    stages = events(records, "stage")
    assert [(s["stage"], s["decision"], s["devices"], s["success_rate"], s["counts"]) for s in stages] == [
        (0, "advance", 1, 1.0, {"ok": 1, "failed": 0, "pending": 0}),
        (1, "advance", 4, 1.0, {"ok": 4, "failed": 0, "pending": 0}),
        (2, "advance", 5, 1.0, {"ok": 5, "failed": 0, "pending": 0})]
    # a stage's devices are all done before the next stage's first trigger
    sequence = [(r["event"], r.get("stage")) for r in records if r["event"] in ("trigger", "stage")]
    assert sequence.index(("stage", 0)) < sequence.index(("trigger", 1))
    assert sequence.index(("stage", 1)) < sequence.index(("trigger", 2))
    assert records[-1]["event"] == "done" and records[-1]["result"] == "completed"
    assert records[-1]["summary"]["outcomes"] == {"ok": 10}
    # durable: start, every batch of triggers, each stage decision, done
    synced = [[r["event"] for r in s] for s in synced if s]
    assert synced[0] == ["start"] and synced[-1][-1] == "done"
    for number in range(3):
        assert any(s[-1] == "stage" and s.count("stage") == number + 1 for s in synced)


def test_default_job_id_names_the_version(tmp_path):
    engine = rollout.Rollout(FakeConn(), MANIFEST, log_path=str(tmp_path / "r.jsonl"))
    assert engine.job.startswith("v1.0.1-")
    assert engine.options.as_dict() == rollout.Options().as_dict()
    assert not os.path.exists(str(tmp_path / "r.jsonl"))  # nothing written before run()


def test_an_existing_log_is_never_overwritten(tmp_path):
    log = tmp_path / "r.jsonl"
    log.write_text("")
    rollout.Rollout(FakeConn(), MANIFEST, log_path=str(log))  # an empty file is no rollout
    log.write_text("x\n")
    with pytest.raises(OtaError) as e:
        rollout.Rollout(FakeConn(), MANIFEST, log_path=str(log))
    assert e.value.reason == "log_exists" and str(log) in e.value.detail


def test_no_targets(tmp_path):
    fleet = [Device("a", "1.0.1"), Device("b", "2.0.0"), Device("c", "0.5.0", state="offline")]
    log = tmp_path / "r.jsonl"
    with pytest.raises(OtaError) as e:
        rollout.Rollout(FakeConn(fleet), MANIFEST, log_path=str(log), job=JOB).run()
    assert e.value.reason == "no_targets"
    assert e.value.detail == "no online device is below 1.0.1 (3 devices seen: 1 offline, 2 up_to_date)"
    assert not log.exists()
    with pytest.raises(OtaError) as e:
        rollout.Rollout(FakeConn([Device("a", "1.0.0")]), MANIFEST, rollout.Options(only_below="0.9"),
                        job=JOB).run()
    assert e.value.detail == "no online device is below 1.0.1 and below 0.9 (1 devices seen: 1 not_below_0.9)"
    with pytest.raises(OtaError) as e:
        rollout.Rollout(FakeConn(), MANIFEST, job=JOB).run()
    assert e.value.detail == "no online device is below 1.0.1 (0 devices seen: none)"


def test_only_below_picks_the_targets(tmp_path):
    fleet = devices(2, version="0.8.0", prefix="old") + devices(2, version="0.9.5", prefix="mid")
    engine, summary, conn, records = run(tmp_path, fleet, rollout.Options((1.0,), only_below="0.9"))
    assert sorted(conn.triggered()) == ["old00", "old01"]
    assert records[0]["skipped"] == {"mid00": "not_below_0.9", "mid01": "not_below_0.9"}


def fsynced(monkeypatch, tmp_path):
    """The event of the log's last record at each fsync of the log (a durable record is the last one
    when it is fsynced)."""
    out = []
    real = os.fsync
    path = str(tmp_path / "rollout.jsonl")

    def fsync(fd):
        if os.path.exists(path):
            records = read_log(path)
            if records:
                out.append(records[-1]["event"])
        real(fd)

    monkeypatch.setattr(decisionlog.os, "fsync", fsync)
    return out


# --- thresholds -------------------------------------------------------------------------------------
def one_failing(n, at, reason="bad_sha256", job=JOB):
    fleet = devices(n)
    bad = position(job, fleet, at)
    for d in fleet:
        if d.id == bad:
            d.answer = fake_mqtt.fail(reason)
    return fleet, bad


@pytest.mark.parametrize("abort_rate,threshold,result,reason", [
    (0.2, 0.8, "completed", None),  # 1 of 5 failed == 0.2: no abort; 4 of 5 ok == 0.8: advance
    (0.19, 0.8, "aborted", "failure_rate"),
    (1.0, 0.81, "aborted", "below_success_threshold"),
])
def test_thresholds_exactly_at_the_bound(tmp_path, monkeypatch, abort_rate, threshold, result, reason):
    durable = fsynced(monkeypatch, tmp_path)
    fleet, bad = one_failing(5, 2)
    opts = rollout.Options((1.0,), max_concurrent=5, success_threshold=threshold, abort_failure_rate=abort_rate)
    engine, summary, conn, records = run(tmp_path, fleet, opts)
    assert (summary["result"], summary["abort_reason"]) == (result, reason)
    assert summary["outcomes"] == {"ok": 4, "failed": 1} and summary["reasons"] == {"bad_sha256": 1}
    [stage] = events(records, "stage")
    assert stage["counts"] == {"ok": 4, "failed": 1, "pending": 0} and stage["success_rate"] == 0.8
    if result == "completed":
        assert stage["decision"] == "advance" and not events(records, "abort")
        assert summary["stages_advanced"] == 1
        return
    assert stage["decision"] == "abort" and stage["failure_rate"] == 0.2 and stage["devices"] == 5
    assert stage["stage"] == 0
    assert {"stage", "abort", "done"} <= set(durable)  # each fsynced as it was written
    assert "outcome" not in durable  # outcomes are only flushed (read back from the devices on resume)
    [abort] = events(records, "abort")
    assert abort["stage"] == 0 and abort["reason"] == reason
    assert abort["detail"] == ("failure rate 1/5 > 0.19" if reason == "failure_rate" else "success rate 4/5 < 0.81")
    assert summary["stages_done"] == 1 and summary["stages_advanced"] == 0
    assert records[-1]["event"] == "done" and records[-1]["result"] == "aborted"


def test_abort_sends_no_new_trigger_and_follows_the_ones_in_flight(tmp_path):
    # max_concurrent 3, abort at the first failure: the first three are in flight; the first fails,
    # one of the others never answers (a timeout), nothing more is sent, the later stage never starts
    fleet = devices(10)
    first, second = position(JOB, fleet, 0), position(JOB, fleet, 1)
    for d in fleet:
        if d.id == first:
            d.answer = fake_mqtt.fail("http_404")
        elif d.id == second:
            d.answer = fake_mqtt.silent
    opts = rollout.Options((0.5, 1.0), max_concurrent=3, device_timeout=0.2, abort_failure_rate=0.0)
    engine, summary, conn, records = run(tmp_path, fleet, opts)
    assert len(conn.sent) == 3
    assert summary["result"] == "aborted" and summary["abort_reason"] == "failure_rate"
    assert summary["outcomes"] == {"failed": 1, "ok": 1, "timeout": 1}
    assert summary["reasons"] == {"http_404": 1, "timeout": 1}
    assert summary["not_started"] == 7 and summary["stages_done"] == 1 and summary["stages"] == 2
    [abort] = events(records, "abort")
    assert abort["detail"] == "failure rate 1/5 > 0"
    timeout = [r for r in events(records, "outcome") if r["device"] == second]
    assert timeout[0]["outcome"] == "timeout" and timeout[0]["stage"] == 0


def test_same_version_counts_as_success_with_its_reason(tmp_path):
    def same(device, message):
        return [dict(state="ok", job=message["id"], version="1.0.1", reason="same_version")]

    fleet = devices(2, answer=same)
    engine, summary, conn, records = run(tmp_path, fleet, rollout.Options((1.0,), success_threshold=1.0))
    assert summary["result"] == "completed" and summary["outcomes"] == {"same_version": 2}
    assert summary["reasons"] == {"same_version": 2}


def test_a_device_lying_in_flight_is_a_suspect(tmp_path):
    def garbage(device, message):
        return [dict(state="exploded", job=message["id"])]

    fleet = devices(2)
    fleet[0].answer = garbage
    engine, summary, conn, records = run(tmp_path, fleet, rollout.Options((1.0,), device_timeout=0.2,
                                                                         success_threshold=0.5))
    assert summary["suspects"] == {"d00": "bad_state"}
    assert summary["outcomes"] == {"ok": 1, "timeout": 1}


def test_each_device_gets_the_smallest_artifact_it_can_use(tmp_path):
    manifest = dict(MANIFEST, deltas=[{"from": "1.0.0", "url": "https://fw.example/d.bin", "size": 1000,
                                       "base_sha256": "cd" * 32}])
    fleet = devices(1) + devices(1, version="0.9.0", prefix="old")
    engine, summary, conn, records = run(tmp_path, fleet, rollout.Options((1.0,)), manifest=manifest)
    sent = {d: m for d, m, _ in conn.sent}
    assert sent["d00"]["url"] == "https://fw.example/d.bin" and sent["d00"]["encoding"] == "delta"
    assert sent["old00"]["url"] == MANIFEST["url"] and "encoding" not in sent["old00"]
    assert {t["device"]: t["artifact"] for t in events(records, "trigger")} == {"d00": "delta", "old00": "full"}


# --- interrupted, then resumed ---------------------------------------------------------------------
class Stop(Exception):
    pass


def interrupted(tmp_path, fleet, opts, at):
    """Runs until the trigger number `at` (1-based) has left, then a Ctrl-C."""
    conn = FakeConn(fleet)

    def on_send(device):
        if len(conn.sent) == at:
            raise KeyboardInterrupt

    conn.on_send = on_send
    log = str(tmp_path / "rollout.jsonl")
    with pytest.raises(KeyboardInterrupt):
        rollout.Rollout(conn, MANIFEST, opts, log, job=JOB, snapshot_timeout=0.25).run()
    return log, conn


def test_interrupt_then_resume_triggers_each_device_once(tmp_path):
    fleet = devices(6)
    order = rollout._order(JOB, [d.id for d in fleet])
    opts = rollout.Options((0.5, 1.0), max_concurrent=1)
    log, first = interrupted(tmp_path, fleet, opts, at=3)
    records = read_log(log)
    [stop] = events(records, "interrupted")
    assert stop["in_flight"] == [order[2]] and stop["done"] == 2
    assert first.triggered() == order[:3]
    # order[2] got its trigger but the power went before its answer: its retained state says downloading
    conn = FakeConn(fleet)
    conn.retained[mqtt.STATE_PREFIX + order[2]] = FakeConn._payload(
        order[2], dict(state="downloading", job=JOB, version="1.0.0", progress=10))

    seen = []
    engine = rollout.Rollout.resume(conn, log, MANIFEST, on_event=seen.append, snapshot_timeout=0.25)
    assert engine.job == JOB and engine.targets == order and engine.triggered == set(order[:3])
    assert sorted(engine.outcomes) == sorted(order[:2])
    # order[2] finishes on its own, from another thread (paho's, in real life), while the engine
    # watches it; its stage waits for it however long that takes
    later = threading.Timer(0.2, lambda: conn.say(order[2], state="ok", job=JOB, version="1.0.1"))
    later.start()
    try:
        summary = engine.run()
    finally:
        later.cancel()
    assert conn.triggered() == order[3:]  # never order[2] again
    assert summary["outcomes"] == {"ok": 6} and summary["result"] == "completed"
    assert summary["since_first_start_s"] >= 0 and summary["stages_done"] == 2
    records = read_log(log)
    [resume] = events(records, "resume")
    assert resume["in_flight"] == [order[2]] and resume["done"] == 2
    assert seen[0]["event"] == "resume"
    assert [r["device"] for r in events(records, "outcome")] == order  # each once
    assert [r["stage"] for r in events(records, "outcome")] == [0, 0, 0, 1, 1, 1]


def test_resume_settles_a_device_whose_final_state_is_retained(tmp_path):
    fleet = devices(4)
    order = rollout._order(JOB, [d.id for d in fleet])
    opts = rollout.Options((1.0,), max_concurrent=1, success_threshold=0.5, abort_failure_rate=0.5)
    log, _ = interrupted(tmp_path, fleet, opts, at=2)
    conn = FakeConn(fleet)
    conn.retained[mqtt.STATE_PREFIX + order[1]] = FakeConn._payload(
        order[1], dict(state="failed", job=JOB, version="1.0.0", reason="bad_sha256"))
    engine = rollout.Rollout.resume(conn, log, MANIFEST, snapshot_timeout=0.25)
    summary = engine.run()
    assert conn.triggered() == order[2:]
    outcome = [r for r in events(read_log(log), "outcome") if r["device"] == order[1]]
    assert [(r["outcome"], r["reason"], r["stage"]) for r in outcome] == [("failed", "bad_sha256", 0)]
    assert summary["outcomes"] == {"ok": 3, "failed": 1}


def test_resume_skips_decided_stages_and_counts_an_outcome_once(tmp_path):
    fleet = devices(4)
    order = rollout._order(JOB, [d.id for d in fleet])
    opts = rollout.Options((0.5, 1.0), max_concurrent=1)
    log, _ = interrupted(tmp_path, fleet, opts, at=4)
    records = read_log(log)
    assert [s["stage"] for s in events(records, "stage")] == [0]
    with open(log, "a") as f:  # a second outcome of order[0] (a duplicate), and noise resume must skip
        for extra in ({"event": "outcome", "rollout": JOB, "device": order[0], "outcome": "failed"},
                      {"event": "outcome", "rollout": JOB, "device": "stranger", "outcome": "ok"},
                      {"event": "outcome", "rollout": JOB, "device": order[3], "outcome": "pending"},
                      {"event": "stage", "rollout": JOB, "stage": 7, "decision": "advance"},
                      {"event": "abort", "rollout": "another-job", "stage": 0},
                      {"event": "trigger", "rollout": JOB, "device": "stranger"}):
            f.write(json.dumps(extra) + "\n")
    engine = rollout.Rollout.resume(FakeConn(fleet), log, MANIFEST, snapshot_timeout=0.25)
    assert engine.decided_stages == {0} and engine.advanced_stages == {0}
    assert engine.stage_counts == {0: {"ok": 2, "failed": 0}, 1: {"ok": 1, "failed": 0}}
    assert engine.outcomes[order[0]]["outcome"] == "ok" and "stranger" not in engine.triggered
    assert order[3] not in engine.outcomes and order[3] in engine.triggered
    assert engine.skipped == {}


def test_resume_takes_a_stage_aborted_in_the_log_as_decided(tmp_path):
    fleet = devices(4)
    log, _ = interrupted(tmp_path, fleet, rollout.Options((0.5, 1.0), max_concurrent=1), at=3)
    with open(log, "a") as f:
        f.write(json.dumps({"event": "stage", "rollout": JOB, "stage": 1, "decision": "abort"}) + "\n")
    engine = rollout.Rollout.resume(FakeConn(fleet), log, MANIFEST)
    assert engine.decided_stages == {0, 1} and engine.advanced_stages == {0}


def finished_log(tmp_path, **opts):
    fleet = devices(2)
    run(tmp_path, fleet, rollout.Options((1.0,), **opts))
    return str(tmp_path / "rollout.jsonl")


def start_only_log(tmp_path, fleet=None, **change):
    # a log whose rollout started and stopped at once (no trigger): its start record, changed
    fleet = fleet or devices(2)
    log = str(tmp_path / "rollout.jsonl")
    interrupted_log, _ = interrupted(tmp_path, fleet, rollout.Options((1.0,), max_concurrent=1), at=1)
    records = read_log(interrupted_log)
    start = dict(records[0], **change)
    for key, value in change.items():
        if value is None:
            del start[key]
    with open(log, "w") as f:
        f.write(json.dumps(start) + "\n")
    return log


def test_resume_needs_the_manifest(tmp_path):
    log = start_only_log(tmp_path)
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(FakeConn(), log, None)
    assert e.value.reason == "bad_arguments" and log in e.value.detail


@pytest.mark.parametrize("key", ["url", "sha256", "size", "version"])
def test_resume_refuses_another_release(tmp_path, key):
    log = start_only_log(tmp_path)
    other = dict(MANIFEST, **{key: MANIFEST[key] * 2})
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(FakeConn(), log, other)
    assert e.value.reason == "manifest_mismatch" and "(%s differ" % key in e.value.detail


def test_resume_refuses_a_start_record_without_manifest(tmp_path):
    log = start_only_log(tmp_path, manifest="not a dict")
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(FakeConn(), log, MANIFEST)
    assert e.value.reason == "manifest_mismatch" and "url, sha256, size, version differ" in e.value.detail


def test_resume_refuses_an_aborted_rollout(tmp_path):
    fleet, bad = one_failing(2, 0)
    log = str(tmp_path / "rollout.jsonl")
    run(tmp_path, fleet, rollout.Options((1.0,), max_concurrent=1, abort_failure_rate=0.0))
    lines = open(log).read().splitlines()
    open(log, "w").write("\n".join(lines[:-1]) + "\n")  # the done record lost: the abort decides
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(FakeConn(), log, MANIFEST)
    assert e.value.reason == "rollout_aborted" and "(failure_rate)" in e.value.detail


def test_resume_refuses_a_finished_rollout(tmp_path):
    log = finished_log(tmp_path)
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(FakeConn(), log, MANIFEST)
    assert e.value.reason == "rollout_finished"


def test_resume_counts_records_without_a_rollout_id_as_its_own(tmp_path):
    log = start_only_log(tmp_path)
    with open(log, "a") as f:
        f.write(json.dumps({"event": "done"}) + "\n")
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(FakeConn(), log, MANIFEST)
    assert e.value.reason == "rollout_finished"


def test_resume_ignores_another_rollouts_records(tmp_path):
    log = start_only_log(tmp_path)
    with open(log, "a") as f:
        f.write(json.dumps({"event": "done", "rollout": "another"}) + "\n")
        f.write(json.dumps({"event": "abort", "rollout": "another", "reason": "failure_rate"}) + "\n")
    assert rollout.Rollout.resume(FakeConn(), log, MANIFEST).job == JOB


@pytest.mark.parametrize("change,reason", [
    ({"options": None}, "bad_log"), ({"targets": None}, "bad_log"), ({"stages": None}, "bad_log"),
    ({"options": {"bogus": 1}}, "bad_log"), ({"stages": [["a", 1]]}, "bad_log"), ({"stages": [[0]]}, "bad_log"),
    ({"options": {"stages": "x"}}, "bad_log"), ({"targets": ["root"]}, "bad_log")])
def test_resume_refuses_a_malformed_start_record(tmp_path, change, reason):
    log = start_only_log(tmp_path, **change)
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(FakeConn(), log, MANIFEST)
    assert e.value.reason == reason
    if reason == "bad_log":
        assert e.value.detail.startswith(log + ": the start record is malformed (")


@pytest.mark.parametrize("change,inner", [
    ({"options": {"stages": "x"}}, "bad_stages: stages are fractions"),
    ({"options": {"stages": [0.5, 0.2]}}, "bad_stages: stages are increasing"),
    ({"options": {"max_concurrent": 0}}, "bad_arguments: --max-concurrent"),
    ({"targets": ["d00", "root"]}, "bad_device_id: root")])
def test_a_start_record_the_cli_would_refuse_is_a_damaged_log(tmp_path, change, inner):
    # otactl wrote the start record from checked values: stages, settings or ids it would refuse mean
    # the file was damaged or edited. The answer says so (bad_log), and names what is wrong in it.
    log = start_only_log(tmp_path, **change)
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(FakeConn(), log, MANIFEST)
    assert e.value.reason == "bad_log"
    assert e.value.detail.startswith(log + ": the start record is malformed (" + inner)
    assert e.value.detail.endswith(")")


@pytest.mark.parametrize("change", [{"targets": ["d00", "d00"]}, {"stages": [[0, 1]]}, {"stages": [[0, 2], [2, 2]]}])
def test_resume_refuses_targets_and_stages_that_do_not_add_up(tmp_path, change):
    log = start_only_log(tmp_path, **change)
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(FakeConn(), log, MANIFEST)
    assert e.value.reason == "bad_log" and "do not add up" in e.value.detail


def test_resume_keeps_the_skipped_devices(tmp_path):
    fleet = devices(2) + [Device("new", "1.0.1")]
    log = start_only_log(tmp_path, fleet=fleet)
    engine = rollout.Rollout.resume(FakeConn(fleet), log, MANIFEST)
    assert engine.skipped == {"new": "up_to_date"}
    assert engine.summary()["skipped"] == 1


def test_count_text_and_check_version():
    assert rollout._count_text(["b", "a", "b"]) == "1 a, 2 b"
    assert rollout._count_text([]) == ""
    assert rollout.check_version("1.2.3") == "1.2.3"
    with pytest.raises(OtaError) as e:
        rollout.check_version("1.x.3")
    assert e.value.reason == "bad_version"


def test_signed_triggers_name_their_device(tmp_path):
    from otactl import signing

    key = signing.generate_key()
    fleet = devices(2)
    engine, summary, conn, records = run(tmp_path, fleet, rollout.Options((1.0,)), sign_key=key)
    assert summary["outcomes"] == {"ok": 2}
    for device, message, _ in conn.sent:
        assert message["target"] == device and message["id"] == JOB and message["url"] == MANIFEST["url"]
        assert signing.verify_trigger(message, key.public_key())


def test_since_first_start_counts_from_the_first_run(tmp_path, monkeypatch):
    fleet = devices(2)
    log, _ = interrupted(tmp_path, fleet, rollout.Options((1.0,), max_concurrent=1), at=1)
    first_start = read_log(log)[0]["t"]

    calls = []

    class Clock:  # the engine's clock: 1,000.12366 s after the first run's start; its own run 12.345678 s
        @staticmethod
        def monotonic():
            calls.append(1)
            return 100.0 if len(calls) == 1 else 112.345678

        @staticmethod
        def time():
            return first_start + 1000.12366

    monkeypatch.setattr(rollout, "time", Clock)
    engine = rollout.Rollout.resume(FakeConn(fleet), log, MANIFEST)
    first = rollout._order(JOB, [d.id for d in fleet])[0]
    later = threading.Timer(0.1, lambda: engine.conn.say(first, state="ok", job=JOB, version="1.0.1"))
    later.start()
    try:
        summary = engine.run()
    finally:
        later.cancel()
    assert summary["since_first_start_s"] == 1000.124  # rounded to the millisecond
    assert summary["duration_s"] == 12.346  # since this engine was made
    assert summary["outcomes"] == {"ok": 2}


def test_abort_rates_are_rounded_to_four_places(tmp_path):
    fleet, bad = one_failing(3, 0)
    opts = rollout.Options((1.0,), max_concurrent=3, abort_failure_rate=0.3)
    engine, summary, conn, records = run(tmp_path, fleet, opts)
    [stage] = events(records, "stage")
    assert (stage["success_rate"], stage["failure_rate"]) == (0.6667, 0.3333)
    assert events(records, "abort")[0]["detail"] == "failure rate 1/3 > 0.3"


def test_an_advancing_stage_rate_is_rounded_to_four_places(tmp_path):
    # 2 of 3 ok, above success_threshold 0.6 and under abort_failure_rate 0.5: the stage advances,
    # and its record holds the rate as the abort records do.
    fleet, bad = one_failing(3, 0)
    opts = rollout.Options((1.0,), max_concurrent=3, success_threshold=0.6, abort_failure_rate=0.5)
    engine, summary, conn, records = run(tmp_path, fleet, opts)
    [stage] = events(records, "stage")
    assert stage["decision"] == "advance" and stage["success_rate"] == 0.6667
    assert summary["result"] == "completed"


def test_resume_keeps_the_logged_options_and_the_callers_settings(tmp_path):
    from otactl import signing

    key = signing.generate_key()
    fleet = devices(3)
    opts = rollout.Options((1.0,), max_concurrent=1, device_timeout=42, success_threshold=0.5)
    log, _ = interrupted(tmp_path, fleet, opts, at=1)
    conn = FakeConn(fleet)
    engine = rollout.Rollout.resume(conn, log, MANIFEST, snapshot_timeout=0.25, sign_key=key)
    assert engine.options.as_dict() == opts.as_dict()
    assert engine.snapshot_timeout == 0.25
    # the defaults of a resume are those of a fresh start
    fresh = rollout.Rollout(FakeConn(), MANIFEST)
    assert rollout.Rollout.resume(FakeConn(), log, MANIFEST).snapshot_timeout == fresh.snapshot_timeout
    first = rollout._order(JOB, [d.id for d in fleet])[0]
    later = threading.Timer(0.1, lambda: conn.say(first, state="ok", job=JOB, version="1.0.1"))
    later.start()
    try:
        engine.run()
    finally:
        later.cancel()
    assert conn.synced == [0.25]
    assert len(conn.sent) == 2
    for device, message, _ in conn.sent:  # signed with the key the resume was given (no key is logged)
        assert message["target"] == device and signing.verify_trigger(message, key.public_key())


def test_a_finished_rollout_names_its_log(tmp_path):
    log = finished_log(tmp_path)
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(FakeConn(), log, MANIFEST)
    assert log in e.value.detail


def test_an_ok_with_a_reason_is_no_reason_to_report(tmp_path):
    def ok_with_reason(device, message):
        return [dict(state="ok", job=message["id"], version="1.0.1", reason="applied")]

    engine, summary, conn, records = run(tmp_path, devices(2, answer=ok_with_reason), rollout.Options((1.0,)))
    assert summary["outcomes"] == {"ok": 2} and summary["reasons"] == {}


def test_resume_counts_a_logged_outcome_in_the_stage_of_its_device(tmp_path):
    fleet = devices(4)
    order = rollout._order(JOB, [d.id for d in fleet])
    log, _ = interrupted(tmp_path, fleet, rollout.Options((0.5, 1.0), max_concurrent=1), at=3)
    with open(log, "a") as f:  # order[2]'s outcome, logged with a stage that is not its own
        f.write(json.dumps({"event": "outcome", "rollout": JOB, "device": order[2], "outcome": "ok",
                            "stage": 7}) + "\n")
    engine = rollout.Rollout.resume(FakeConn(fleet), log, MANIFEST)
    assert engine.stage_counts == {0: {"ok": 2, "failed": 0}, 1: {"ok": 1, "failed": 0}}
    assert engine.outcomes[order[2]]["stage"] == 1


def test_a_stage_that_has_heard_nothing_yet_goes_on_waiting(tmp_path):
    # the first rounds of the stage settle nobody: no outcome counted yet is neither a failure nor an
    # abort; the device answers later, from another thread
    fleet = devices(1, answer=fake_mqtt.silent)
    conn = FakeConn(fleet)
    conn.on_send = lambda device: threading.Timer(
        0.3, lambda: conn.say(device, state="ok", job=JOB, version="1.0.1")).start()
    engine = rollout.Rollout(conn, MANIFEST, rollout.Options((1.0,), abort_failure_rate=0.0),
                             str(tmp_path / "rollout.jsonl"), job=JOB, snapshot_timeout=0.25)
    summary = engine.run()
    assert summary["result"] == "completed" and summary["outcomes"] == {"ok": 1}


def test_a_target_gone_from_the_fleet_gets_the_full_image(tmp_path):
    # its state was refused (a bad message) after the targets were chosen: no version to pick a delta
    # for, so the full image
    manifest = dict(MANIFEST, deltas=[{"from": "1.0.0", "url": "https://fw.example/d.bin", "size": 1000,
                                       "base_sha256": "cd" * 32}])
    fleet = devices(2)
    order = rollout._order(JOB, [d.id for d in fleet])
    conn = FakeConn(fleet)
    conn.on_send = lambda device: conn.say(order[1], state="exploded") if device == order[0] else None
    engine = rollout.Rollout(conn, manifest, rollout.Options((1.0,), max_concurrent=1),
                             str(tmp_path / "rollout.jsonl"), job=JOB, snapshot_timeout=0.25)
    summary = engine.run()
    sent = {d: m for d, m, _ in conn.sent}
    assert sent[order[0]]["encoding"] == "delta"
    assert sent[order[1]]["url"] == MANIFEST["url"] and "encoding" not in sent[order[1]]
    assert summary["outcomes"] == {"ok": 2}


def test_an_outcome_keeps_the_devices_reason_and_detail(tmp_path):
    fleet, bad = one_failing(2, 0, reason="http_404")
    engine, summary, conn, records = run(tmp_path, fleet, rollout.Options((1.0,), abort_failure_rate=1.0,
                                                                         success_threshold=0.5))
    [outcome] = [r for r in events(records, "outcome") if r["device"] == bad]
    assert (outcome["outcome"], outcome["reason"], outcome["detail"], outcome["version"]) == (
        "failed", "http_404", "it broke", "1.0.0")


def test_an_ok_at_another_version_is_a_wrong_version(tmp_path):
    fleet = devices(2)
    fleet[0].answer = fake_mqtt.ok("1.0.0")  # says ok, still runs the old image
    engine, summary, conn, records = run(tmp_path, fleet, rollout.Options((1.0,), abort_failure_rate=1.0,
                                                                         success_threshold=0.5))
    assert summary["outcomes"] == {"ok": 1, "wrong_version": 1}
    assert summary["reasons"] == {"wrong_version": 1}


def test_resume_after_a_decided_stage_runs_the_stages_after_it(tmp_path, monkeypatch):
    # Interrupted when stage 1's first trigger left: stage 0 is decided (advance) in the log. The
    # resume skips stage 0 and goes on with stage 1 (all of it, not stopping at the decided stage),
    # and its resume record is fsynced as it is written.
    fleet = devices(6)
    order = rollout._order(JOB, [d.id for d in fleet])
    opts = rollout.Options((0.5, 1.0), max_concurrent=1)
    log, first = interrupted(tmp_path, fleet, opts, at=4)
    assert [(s["stage"], s["decision"]) for s in events(read_log(log), "stage")] == [(0, "advance")]
    assert first.triggered() == order[:4]
    conn = FakeConn(fleet)
    conn.retained[mqtt.STATE_PREFIX + order[3]] = FakeConn._payload(
        order[3], dict(state="ok", job=JOB, version="1.0.1"))
    durable = fsynced(monkeypatch, tmp_path)
    summary = rollout.Rollout.resume(conn, log, MANIFEST, snapshot_timeout=0.25).run()
    assert conn.triggered() == order[4:]
    assert summary["result"] == "completed" and summary["outcomes"] == {"ok": 6} and summary["stages_done"] == 2
    assert durable[0] == "resume"  # the first fsync of the resumed run: its resume record, alone
    assert [(s["stage"], s["decision"]) for s in events(read_log(log), "stage")] == [(0, "advance"), (1, "advance")]


@pytest.mark.parametrize("count,fraction,end", [(700000, 0.55, 385000), (3000000, 0.34, 1020000),
                                                (30, 0.1, 3), (7, 0.5, 4)])
def test_stage_size_is_the_decimal_fraction_rounded_up_not_the_float_error(count, fraction, end):
    # 0.55 * 700000 is 385000.00000000006 in floating point: the stage is 385,000 devices, not one
    # more (the product is rounded to 9 places before ceil); a real half of 7 is still rounded up.
    assert rollout.stage_bounds(count, (fraction, 1.0))[0] == (0, end)


@pytest.mark.parametrize("state,outcome", [(dict(state="failed", reason="bad_sha256", version="1.0.0"), "failed"),
                                           (dict(state="ok", version="1.0.1"), "ok"),
                                           (dict(state="ok", version="1.0.2"), "wrong_version")])
def test_resume_settles_the_in_flight_device_from_the_states_it_read(tmp_path, state, outcome):
    # Its final state was retained when the resume subscribed: judged there and then (against the
    # release's version), not watched until it goes quiet and its state is read again.
    fleet = devices(4)
    order = rollout._order(JOB, [d.id for d in fleet])
    opts = rollout.Options((1.0,), max_concurrent=1, success_threshold=0.5, abort_failure_rate=0.5)
    log, _ = interrupted(tmp_path, fleet, opts, at=2)
    conn = FakeConn(fleet)
    conn.retained[mqtt.STATE_PREFIX + order[1]] = FakeConn._payload(order[1], dict(state, job=JOB))
    engine = rollout.Rollout.resume(conn, log, MANIFEST, snapshot_timeout=0.25)
    engine.run()
    assert conn.rereads == [] and engine.tracker.recovered == 0
    records = read_log(log)
    resumed = records[[r["event"] for r in records].index("resume"):]
    assert (resumed[1]["event"], resumed[1]["device"], resumed[1]["outcome"]) == ("outcome", order[1], outcome)


def test_resume_keeps_the_in_flight_devices_last_state_for_its_timeout(tmp_path):
    # At the resume the in-flight device's retained state says downloading 10 %; then it goes offline
    # (its last will replaces the retained state) and times out: the outcome names the last state
    # of this job the resume read, not only "device offline".
    fleet = devices(2)
    order = rollout._order(JOB, [d.id for d in fleet])
    opts = rollout.Options((1.0,), max_concurrent=1, success_threshold=0.5, abort_failure_rate=0.5,
                           device_timeout=0.3)  # logged: the resume's too
    log, _ = interrupted(tmp_path, fleet, opts, at=2)
    topic = mqtt.STATE_PREFIX + order[1]

    class GoesOffline(FakeConn):
        def reread(self, topics, timeout=5.0):
            self.retained[topic] = FakeConn._payload(order[1], dict(state="offline", version="1.0.0"))
            super().reread(topics, timeout)

    conn = GoesOffline(fleet)
    conn.retained[topic] = FakeConn._payload(order[1], dict(state="downloading", job=JOB, version="1.0.0",
                                                            progress=10))
    rollout.Rollout.resume(conn, log, MANIFEST, snapshot_timeout=0.25).run()
    [outcome] = [r for r in events(read_log(log), "outcome") if r["device"] == order[1]]
    assert outcome["outcome"] == "timeout" and "last state downloading 10%" in outcome["detail"]


@pytest.mark.parametrize("version,prefix", [("1.0.1", "v1.0.1-"), ("v1.0.1", "v1.0.1-"), ("V1.0.1", "v1.0.1-"),
                                            ("X1.0.1", "vX1.0.1-")])
def test_a_new_job_id_names_the_version_once_with_one_v(version, prefix):
    engine = rollout.Rollout(FakeConn(), dict(MANIFEST, version=version))
    assert engine.job.startswith(prefix) and len(engine.job) == len(prefix) + 8


def test_stages_out_of_order_are_shown_as_given():
    with pytest.raises(OtaError) as e:
        rollout.Options(stages=(0.00001, 0.5, 0.4))
    assert e.value.reason == "bad_stages" and e.value.detail.endswith("got 1e-05,0.5,0.4")
