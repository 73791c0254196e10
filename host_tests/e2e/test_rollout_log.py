# The rollout log across a power cut of the operator's machine (otactl/decisionlog.py), resume
# checked against its manifest, and the CLI's number checks. Light devices on a real mosquitto.
import json

import pytest

from fleet_helpers import MANIFEST, broker_args, needs_broker, read_log, run_cli
from otactl import mqtt, rollout, tracking
from otactl.tracking import Log  # the decision log (otactl/decisionlog.py)
from ota.errors import OtaError
from sim.lightdevice import Behavior

FAST = dict(download_s=0.03, reboot_s=0.01, confirm_s=0.01)


class PowerCut(BaseException):
    """The operator's machine loses power: nothing after it runs, no "interrupted" record."""


def connect(broker):
    return mqtt.connect(None, host=broker.host, port=broker.port)


def test_torn_last_line_is_left_out_and_cut_before_appending(tmp_path):
    path = str(tmp_path / "r.jsonl")
    log = Log(path, rollout="job-1")
    log.write("start", durable=True, job="job-1")
    log.write("trigger", device="dev-00")
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"event":"trigger","device":"dev-0')  # the power went mid-write
    assert [r["event"] for r in Log.read(path)] == ["start", "trigger"]
    log = Log(path, rollout="job-1")
    log.write("outcome", device="dev-00", outcome="ok")
    log.close()
    records = read_log(path)  # every line is JSON again: the torn one was cut, not appended to
    assert [r["event"] for r in records] == ["start", "trigger", "outcome"]
    assert all(r["rollout"] == "job-1" for r in records)
    with open(path, "ab") as f:
        f.write(b'{"event":"outcome","device":"dev-00","outcome":"ok"}')  # complete, but no newline
    assert len(Log.read(path)) == 3


@needs_broker
def test_power_cut_after_sending_never_triggers_a_device_twice(fleet, broker, tmp_path, monkeypatch):
    light = fleet([("dev-%02d" % i, "1.0.0", None) for i in range(9)])
    log = str(tmp_path / "r.jsonl")
    real_send = tracking.Tracker.send
    sends = []

    def send_then_cut(self, devices, payload_for):
        real_send(self, devices, payload_for)
        sends.append(list(devices))
        if len(sends) == 2:
            raise PowerCut()

    monkeypatch.setattr(tracking.Tracker, "send", send_then_cut)
    conn = connect(broker)
    opts = rollout.Options((1.0,), max_concurrent=3, device_timeout=10)
    with pytest.raises(PowerCut):
        rollout.Rollout(conn, MANIFEST, opts, log, job="cut-1").run()
    conn.close()
    with open(log, "ab") as f:  # and the record being written when the power went is torn
        f.write(b'{"event":"outcome","device":"dev-0')
    monkeypatch.setattr(tracking.Tracker, "send", real_send)
    conn = connect(broker)
    try:
        summary = rollout.Rollout.resume(conn, log, MANIFEST).run()
    finally:
        conn.close()
    assert summary["result"] == "completed" and summary["outcomes"] == {"ok": 9}
    for device_id, device in light.devices.items():  # sent once, before and after the cut
        assert len(device.commands) == 1, (device_id, len(device.commands))
    records = Log.read(log)  # the log reads whole again: later resumes and revert --log work
    assert [r["event"] for r in records].count("done") == 1
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(connect(broker), log, MANIFEST)
    assert e.value.reason == "rollout_finished"


@needs_broker
def test_duplicate_and_foreign_outcome_lines_are_counted_once(fleet, broker, tmp_path):
    light = fleet([("dev-%02d" % i, "1.0.0", None) for i in range(10)])
    log = str(tmp_path / "r.jsonl")
    seen = []

    def interrupt(record):
        if record["event"] == "outcome":
            seen.append(record)
            if len(seen) == 3:
                raise KeyboardInterrupt

    opts = rollout.Options((0.5, 1.0), max_concurrent=2, device_timeout=10, abort_failure_rate=0.3)
    conn = connect(broker)
    with pytest.raises(KeyboardInterrupt):
        rollout.Rollout(conn, MANIFEST, opts, log, job="mine", on_event=interrupt).run()
    conn.close()
    records = read_log(log)
    done = [r for r in records if r["event"] == "outcome"]
    with open(log, "a") as f:  # the first outcome again as failures, and another rollout's lines
        bad = dict(done[0], outcome="failed", reason="bad_sha256")
        for _ in range(3):
            f.write(json.dumps(bad) + "\n")
        for device in light.devices:
            f.write(json.dumps(dict(bad, device=device, rollout="someone-else")) + "\n")
    conn = connect(broker)
    try:
        summary = rollout.Rollout.resume(conn, log, MANIFEST).run()
    finally:
        conn.close()
    assert summary["result"] == "completed" and summary["outcomes"] == {"ok": 10}, summary


@needs_broker
def test_resume_checks_the_log_against_its_manifest(fleet, broker, tmp_path, capsys):
    fleet([("dev-%02d" % i, "1.0.0", None) for i in range(4)])
    log = str(tmp_path / "r.jsonl")
    conn = connect(broker)
    opts = rollout.Options((1.0,), max_concurrent=1, device_timeout=10)

    def interrupt(record):
        if record["event"] == "outcome":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rollout.Rollout(conn, MANIFEST, opts, log, job="checked", on_event=interrupt).run()
    conn.close()
    records = read_log(log)
    records[0]["manifest"]["url"] = "https://evil.example/firmware-v1.0.1.bin"  # edited log
    with open(log, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
    for manifest in (MANIFEST, dict(MANIFEST, url="https://evil.example/firmware-v1.0.1.bin", sha256="cd" * 32)):
        with pytest.raises(OtaError) as e:
            rollout.Rollout.resume(connect(broker), log, manifest)
        assert e.value.reason == "manifest_mismatch"
    # and with --resume alone, the CLI asks for the manifest instead of trusting the file
    assert run_cli(["rollout", "--resume", "--log", log] + broker_args(broker)) == 1
    assert capsys.readouterr().err.startswith("otactl: bad_arguments: --manifest is required")
    records[0]["manifest"]["url"] = MANIFEST["url"]
    records[0]["targets"].append("root")  # a target no device may be
    with open(log, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(OtaError) as e:
        rollout.Rollout.resume(connect(broker), log, MANIFEST)
    # otactl wrote that record from checked ids: one it would refuse means the file was damaged
    assert e.value.reason == "bad_log" and "bad_device_id" in e.value.detail


@needs_broker
def test_same_version_from_a_device_below_the_target_is_no_success(fleet, broker, tmp_path):
    fleet([("dev-00", "1.0.0", None), ("dev-liar", "1.0.0", Behavior("lie_same", **FAST)),
           ("dev-lie-ok", "1.0.0", Behavior("lie_ok", **FAST))])
    conn = connect(broker)
    try:
        summary = rollout.Rollout(conn, MANIFEST, rollout.Options((1.0,), 3, 10, success_threshold=0),
                                  str(tmp_path / "r.jsonl")).run()
    finally:
        conn.close()
    assert summary["outcomes"] == {"ok": 1, "wrong_version": 2}, summary


@pytest.mark.parametrize("argv", [
    ["rollout", "--manifest", "M", "--device-timeout", "nan"],
    ["rollout", "--manifest", "M", "--device-timeout", "inf"],
    ["rollout", "--manifest", "M", "--device-timeout", "-1"],
    ["rollout", "--manifest", "M", "--max-concurrent", "0"],
    ["rollout", "--manifest", "M", "--success-threshold", "nan"],
    ["rollout", "--manifest", "M", "--abort-failure-rate", "1.5"],
    ["revert", "--device", "dev-00", "--max-concurrent", "-1"],
    ["revert", "--device", "dev-00", "--max-concurrent", "0"],
    ["revert", "--device", "dev-00", "--timeout", "nan"],
    ["status", "--timeout", "nan"],
    ["status", "--connect-timeout", "-5"],
])
def test_cli_numbers_are_checked_before_connecting(argv, manifest_file, capsys):
    argv = [manifest_file if a == "M" else a for a in argv]
    assert run_cli(argv + ["--broker", "127.0.0.1:1"]) == 1  # nothing listens there: checked first
    assert capsys.readouterr().err.startswith("otactl: bad_arguments: ")
