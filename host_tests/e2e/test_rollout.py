# The rollout engine (otactl/rollout.py) and `otactl rollout`/`revert` against light devices
# (sim/lightdevice.py) on a real mosquitto: stages, concurrency, thresholds, the decision log,
# resume after an interruption, revert after an abort.
import os

import pytest

from fleet_helpers import (FAST, MANIFEST, broker_args, ids, lose_live_ok, max_in_flight, needs_broker,
                           read_log, run_cli)
from otactl import rollout
from ota.errors import OtaError
from sim.lightdevice import Behavior

pytestmark = needs_broker


def test_stage_bounds():
    assert rollout.stage_bounds(20, (0.1, 0.5, 1.0)) == [(0, 2), (2, 10), (10, 20)]
    assert rollout.stage_bounds(3, (0.1, 0.5, 1.0)) == [(0, 1), (1, 2), (2, 3)]
    assert rollout.stage_bounds(1, (0.1, 0.5, 1.0)) == [(0, 1)]
    with pytest.raises(OtaError) as e:
        rollout.Options(stages=(0.5, 0.1))
    assert e.value.reason == "bad_stages"


def test_success_20_devices_3_stages(fleet, conn, tmp_path):
    light = fleet([(d, "1.0.0", None) for d in ids(20)] + [("dev-new", "1.0.1", None),
                                                          ("dev-ahead", "2.0.0", None)])
    log = str(tmp_path / "rollout.jsonl")
    engine = rollout.Rollout(conn(), MANIFEST, rollout.Options((0.1, 0.5, 1.0), max_concurrent=3,
                                                               device_timeout=10), log)
    summary = engine.run()
    assert summary["result"] == "completed" and summary["outcomes"] == {"ok": 20}
    assert summary["targets"] == 20 and summary["skipped"] == 2 and summary["not_started"] == 0
    records = read_log(log)
    assert [r["event"] for r in records][0] == "start" and records[-1]["event"] == "done"
    assert records[0]["skipped"] == {"dev-new": "up_to_date", "dev-ahead": "up_to_date"}
    assert records[0]["trigger"] == {"type": "ota_trigger", "url": MANIFEST["url"], "sha256": MANIFEST["sha256"],
                                     "size": MANIFEST["size"], "version": "1.0.1", "id": engine.job}
    stages = [r for r in records if r["event"] == "stage"]
    assert [(s["stage"], s["decision"], s["devices"]) for s in stages] == [(0, "advance", 2), (1, "advance", 8),
                                                                         (2, "advance", 10)]
    assert max_in_flight(records) <= 3
    # every stage's devices finished before the next stage's first trigger
    order = [(r["event"], r.get("stage")) for r in records if r["event"] in ("trigger", "stage")]
    assert order.index(("stage", 0)) < order.index(("trigger", 1))
    for device_id in ids(20):
        d = light.devices[device_id]
        assert d.version == "1.0.1" and d.other_version == "1.0.0" and len(d.commands) == 1
        assert [h[0] for h in d.history] == ["idle", "downloading", "downloading", "downloading", "verifying",
                                             "rebooting", "confirming", "ok"]
    assert light.devices["dev-new"].commands == [] and light.devices["dev-ahead"].commands == []


def behaviors_by_position(job, devices, plan):
    """plan: position in the rollout's order -> Behavior (the order is a hash of job and id)."""
    order = rollout._order(job, devices)
    return {order[i]: b for i, b in plan.items()}, order


def test_failures_abort_at_threshold_then_revert(fleet, conn, tmp_path, capsys):
    job = "job-abort"
    devices = ids(20)
    # stage 1 = positions 0..3 (ok), stage 2 = 4..11: two failures there exceed 0.2 of 8 -> abort
    plan = {5: Behavior("fail", "bad_sha256", **FAST), 7: Behavior("rollback", "selftest_failed", **FAST),
            9: Behavior("fail", "http_404", **FAST)}
    special, order = behaviors_by_position(job, devices, plan)
    light = fleet([(d, "1.0.0", special.get(d)) for d in devices])
    log = str(tmp_path / "rollout.jsonl")
    opts = rollout.Options((0.2, 0.6, 1.0), max_concurrent=2, device_timeout=10, success_threshold=0.9,
                           abort_failure_rate=0.2)
    summary = rollout.Rollout(conn(), MANIFEST, opts, log, job=job).run()
    assert summary["result"] == "aborted" and summary["abort_reason"] == "failure_rate"
    records = read_log(log)
    abort = [r for r in records if r["event"] == "abort"]
    assert len(abort) == 1 and abort[0]["stage"] == 1
    outcomes = {r["device"]: r for r in records if r["event"] == "outcome"}
    assert outcomes[order[5]]["outcome"] == "failed" and outcomes[order[5]]["reason"] == "bad_sha256"
    assert outcomes[order[7]]["outcome"] == "rolled_back" and outcomes[order[7]]["reason"] == "selftest_failed"
    assert outcomes[order[7]]["version"] == "1.0.0"  # reported by the old image after the rollback
    # the third stage never started; nobody beyond the abort point got a trigger
    for device_id in order[12:]:
        assert light.devices[device_id].commands == [] and device_id not in outcomes
    triggered = [r["device"] for r in records if r["event"] == "trigger"]
    assert len(triggered) == len(set(triggered)) == len(outcomes)  # in-flight ones drained
    assert summary["not_started"] == 20 - len(outcomes)
    assert summary["reasons"]["bad_sha256"] == 1 and summary["reasons"]["selftest_failed"] == 1
    # resume refuses an aborted rollout
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(conn(), log, MANIFEST)
    assert e.value.reason == "rollout_aborted"

    # revert: exactly the devices that took 1.0.1 get ota_revert and come back to 1.0.0
    updated = sorted(d for d, r in outcomes.items() if r["outcome"] == "ok")
    assert len(updated) >= 4
    assert run_cli(["revert", "--log", log, "--timeout", "10"] + broker_args(light)) == 0
    for device_id in devices:
        d = light.devices[device_id]
        reverts = [c for c in d.commands if c["type"] == "ota_revert"]
        assert len(reverts) == (1 if device_id in updated else 0), device_id
        assert d.version == "1.0.0"
    records = read_log(log)
    done = [r for r in records if r["event"] == "revert_outcome"]
    assert sorted(r["device"] for r in done) == updated
    assert all(r["outcome"] == "ok" and r["version"] == "1.0.0" and r["version_before"] == "1.0.1" for r in done)
    assert "reverted %d of %d devices" % (len(updated), len(updated)) in capsys.readouterr().out


def test_timeout_stall_and_offline(fleet, conn, tmp_path):
    light = fleet([(d, "1.0.0", None) for d in ids(6)] + [
        ("dev-stall", "1.0.0", Behavior("stall", **FAST)), ("dev-gone", "1.0.0", Behavior("offline", **FAST)),
        ("dev-off", "1.0.0", None)])
    light.devices["dev-off"].go_offline()
    light.flush()
    log = str(tmp_path / "r.jsonl")
    # 2 s: the healthy devices answer in about 0.2 s, with room for a loaded CI machine.
    opts = rollout.Options((1.0,), max_concurrent=8, device_timeout=2.0, success_threshold=0.7,
                           abort_failure_rate=0.5)
    summary = rollout.Rollout(conn(), MANIFEST, opts, log).run()
    assert summary["result"] == "completed"
    assert summary["outcomes"] == {"ok": 6, "timeout": 2} and summary["skipped"] == 1
    outcomes = {r["device"]: r for r in read_log(log) if r["event"] == "outcome"}
    assert "last state downloading" in outcomes["dev-stall"]["detail"]
    assert outcomes["dev-gone"]["reason"] == "timeout"
    assert read_log(log)[0]["skipped"] == {"dev-off": "offline"}


def test_a_final_state_lost_on_the_way_is_read_back_not_a_timeout(fleet, conn, tmp_path, monkeypatch):
    # A broker drops messages to a subscriber that falls behind (mosquitto's max_queued_messages;
    # fleet_bench's 10,000 devices answering at once lost hundreds). Here the engine loses the live
    # final state of three devices; their retained state still says ok, and that is what counts.

    fleet([(d, "1.0.0", None) for d in ids(6)])
    lose = {"dev-01", "dev-03", "dev-05"}
    lost = lose_live_ok(monkeypatch, lose)
    log = str(tmp_path / "r.jsonl")
    opts = rollout.Options((1.0,), max_concurrent=6, device_timeout=2.0)
    summary = rollout.Rollout(conn(), MANIFEST, opts, log).run()
    assert sorted(lost) == sorted(lose)  # the live messages really were lost
    assert summary["outcomes"] == {"ok": 6} and summary["result"] == "completed"
    outcomes = {r["device"]: r for r in read_log(log) if r["event"] == "outcome"}
    assert all(outcomes[d]["outcome"] == "ok" for d in lose)


def test_a_lost_final_state_costs_a_quiet_spell_not_the_device_timeout(fleet, conn, tmp_path, monkeypatch):
    # The same loss with a 60 s per-device timeout: once no state message has come for QUIET_S, the
    # retained states of the devices still in flight are read again.
    from otactl import tracking

    monkeypatch.setattr(tracking, "QUIET_S", 0.5)
    fleet([(d, "1.0.0", None) for d in ids(4)])
    lost = lose_live_ok(monkeypatch, {"dev-02"})
    late = []
    real_expired = tracking.Tracker.expired

    def expired(self, now):
        found = real_expired(self, now)
        late.extend(found)
        return found

    monkeypatch.setattr(tracking.Tracker, "expired", expired)
    opts = rollout.Options((1.0,), max_concurrent=4, device_timeout=60.0)
    engine = rollout.Rollout(conn(), MANIFEST, opts, str(tmp_path / "r.jsonl"))
    summary = engine.run()
    assert lost and summary["outcomes"] == {"ok": 4}
    # read back after QUIET_S without a message, not at the deadline: no device ever ran out of time
    assert late == [] and engine.tracker.recovered == 1


def test_resume_after_interruption_does_not_retrigger(fleet, conn, tmp_path):
    devices = ids(20)
    light = fleet([(d, "1.0.0", None) for d in devices])
    log = str(tmp_path / "rollout.jsonl")
    seen = []

    def interrupt(record):
        if record["event"] == "outcome":
            seen.append(record["device"])
            if len(seen) == 7:
                raise KeyboardInterrupt

    opts = rollout.Options((0.25, 0.5, 1.0), max_concurrent=3, device_timeout=10)
    with pytest.raises(KeyboardInterrupt):
        rollout.Rollout(conn(), MANIFEST, opts, log, on_event=interrupt).run()
    records = read_log(log)
    assert records[-1]["event"] == "interrupted"
    done_before = {r["device"] for r in records if r["event"] == "outcome"}
    in_flight = set(records[-1]["in_flight"])
    assert len(done_before) == 7 and in_flight
    # a new rollout on the same log is refused; --resume continues it
    with pytest.raises(OtaError) as e:
        rollout.Rollout(conn(), MANIFEST, opts, log)
    assert e.value.reason == "log_exists"
    summary = rollout.Rollout.resume(conn(), log, manifest=MANIFEST).run()
    assert summary["result"] == "completed" and summary["outcomes"] == {"ok": 20}
    records = read_log(log)
    outcomes = [r["device"] for r in records if r["event"] == "outcome"]
    assert sorted(outcomes) == sorted(devices)  # every device exactly once
    triggers = [r["device"] for r in records if r["event"] == "trigger"]
    assert sorted(triggers) == sorted(devices)
    for device_id in devices:  # each device received the job once: nothing re-sent
        assert len(light.devices[device_id].commands) == 1, device_id
    resume = [r for r in records if r["event"] == "resume"][0]
    assert set(resume["in_flight"]) == in_flight and resume["done"] == 7
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(conn(), log, MANIFEST)
    assert e.value.reason == "rollout_finished"
    other = dict(MANIFEST, sha256="cd" * 32)
    with pytest.raises(OtaError):
        rollout.Rollout.resume(conn(), log, manifest=other)


def test_same_version_counts_as_success_and_only_below(fleet, conn, tmp_path):
    # a device whose retained state lies about its version answers same_version
    light = fleet([(d, "1.0.0", None) for d in ids(4)] + [("dev-old", "0.9.0", None)])
    light.devices["dev-00"].version = "1.0.1"  # runs 1.0.1, its retained state still says 1.0.0
    light.devices["dev-00"].reporter.version = "1.0.1"  # ... and its next messages say 1.0.1
    log = str(tmp_path / "r.jsonl")
    summary = rollout.Rollout(conn(), MANIFEST, rollout.Options((1.0,), 5, 10, only_below="1.0.0"),
                              log).run()
    assert summary["targets"] == 1 and summary["outcomes"] == {"ok": 1}  # only dev-old
    log2 = str(tmp_path / "r2.jsonl")
    summary = rollout.Rollout(conn(), MANIFEST, rollout.Options((1.0,), 5, 10), log2).run()
    assert summary["outcomes"] == {"ok": 3, "same_version": 1} and summary["result"] == "completed"


def test_rollout_cli(fleet, broker, manifest_file, tmp_path, capsys):
    fleet([(d, "1.0.0", None) for d in ids(6)] + [("dev-bad", "1.0.0", Behavior("fail", "bad_sha256", **FAST))])
    log = str(tmp_path / "cli.jsonl")
    argv = ["rollout", "--manifest", manifest_file, "--stages", "1", "--max-concurrent", "4",
            "--device-timeout", "10", "--success-threshold", "0.8"] + broker_args(broker)
    assert run_cli(argv + ["--log", log]) == 0
    out = capsys.readouterr().out
    assert "7 targets" in out and "ok 6" in out and "failed 1" in out and "bad_sha256 1" in out
    assert run_cli(["rollout", "--manifest", manifest_file, "--log", log] + broker_args(broker)) == 1
    assert capsys.readouterr().err.startswith("otactl: log_exists: ")
    # now everybody but dev-bad is up to date; dev-bad fails again -> aborted, exit 1
    log2 = str(tmp_path / "cli2.jsonl")
    assert run_cli(argv + ["--log", log2]) == 1
    assert capsys.readouterr().err.startswith("otactl: rollout_aborted: failure_rate")
    assert run_cli(["rollout", "--stages", "1"] + broker_args(broker)) == 1
    assert "--manifest is required" in capsys.readouterr().err


def test_no_targets_is_an_error_and_leaves_no_log(fleet, conn, tmp_path):
    fleet([("dev-x", "1.0.1", None)])
    log = str(tmp_path / "none.jsonl")
    with pytest.raises(OtaError) as e:
        rollout.Rollout(conn(), MANIFEST, rollout.Options(), log).run()
    assert e.value.reason == "no_targets" and "1 up_to_date" in e.value.detail
    assert not os.path.exists(log)


def test_revert_device_without_other_image(fleet, conn, tmp_path, broker, capsys):
    light = fleet([("dev-a", "1.0.1", None), ("dev-b", "1.0.1", None)])
    light.devices["dev-b"].other_version = "1.0.0"
    assert run_cli(["revert", "--device", "dev-a", "--device", "dev-b", "--timeout", "5"] + broker_args(broker)) == 1
    err = capsys.readouterr().err
    assert err.startswith("otactl: revert_failed: 1 devices did not revert: dev-a (revert_no_image)")
    assert light.devices["dev-b"].version == "1.0.0" and light.devices["dev-a"].version == "1.0.1"
    assert run_cli(["revert", "--device", "nope"] + broker_args(broker)) == 1
    assert capsys.readouterr().err.startswith("otactl: unknown_device: nope")


def test_signed_rollout_signs_each_trigger_for_its_device(fleet, conn, tmp_path):
    signing = pytest.importorskip("otactl.signing")
    key = signing.generate_key()
    light = fleet([(d, "1.0.0", None) for d in ids(4)])
    summary = rollout.Rollout(conn(), MANIFEST, rollout.Options((1.0,), 4, 10), str(tmp_path / "s.jsonl"),
                              sign_key=key).run()
    assert summary["outcomes"] == {"ok": 4}
    for device_id, d in light.devices.items():
        (command,) = d.commands
        assert command["target"] == device_id and command["expires"] > 0
        signed = {k: command[k] for k in ("type", "url", "sha256", "size", "version", "id", "target",
                                          "expires", "seq", "signature")}
        assert signing.verify_trigger(signed, signing.public_key_hex(key))
