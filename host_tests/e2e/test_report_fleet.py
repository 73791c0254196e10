# `otactl report` over a 1,000-device simulated update (light devices, sim/lightdevice.py, on a real
# mosquitto) with injected failures: the counts by reason code, the rollbacks and the devices not heard
# from equal the injected ones exactly, and the percentiles are those of the devices' own records.
# Plus the report's arithmetic on hand-made states (percentiles, update time, text table).
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet_helpers import broker_args, needs_broker, run_cli
from devkit.broker import Watcher
from otactl import report
from otactl.decisionlog import Log
from sim.lightdevice import Behavior, LightFleet

N = 1000
FAST = dict(download_s=0.05, progress_steps=1, reboot_s=0.01, confirm_s=0.01)
# kind -> (behavior outcome, reason, how many devices)
INJECTED = {"bad_sha256": ("fail", "bad_sha256", 23), "timeout": ("fail", "timeout", 17),
            "http_404": ("fail", "http_404", 11), "low_memory": ("fail", "low_memory", 4),
            "selftest_failed": ("rollback", "selftest_failed", 13), "health_timeout": ("rollback", "health_timeout", 6),
            "offline": ("offline", None, 9)}
SILENT = ["dev-9997", "dev-9998", "dev-9999"]  # expected by the rollout's list, never on the broker


def plan():
    kinds, index = {}, 0
    for kind, (_, _, count) in INJECTED.items():
        for _ in range(count):
            kinds["dev-%04d" % (index * 7 % N)] = kind  # spread over the fleet (7 is prime to 1000)
            index += 1
    return {"dev-%04d" % i: kinds.get("dev-%04d" % i, "ok") for i in range(N)}


@needs_broker
def test_report_over_a_thousand_devices_counts_what_was_injected(broker, tmp_path, capsys):
    kinds = plan()
    fleet = LightFleet(broker.host, broker.port, per_connection=250)
    for device_id, kind in kinds.items():
        outcome, reason, _ = INJECTED.get(kind, ("ok", None, 0))
        fleet.add(device_id, "1.0.0", Behavior(outcome, reason=reason, **FAST))
    watch = Watcher(broker.host, broker.port, topics=("/switch/state/+",))
    fleet.start()
    try:
        watch.publish("/switch/cmd/root", {"type": "ota_trigger", "url": "https://fw.example/firmware-v1.0.1.bin",
                                           "sha256": "ab" * 32, "size": 1462272, "version": "1.0.1",
                                           "id": "report-1"})
        # Each device's own last word: a rollback publishes "failed" from the new image first, then
        # "rolled_back" from the old one, so "failed" is not the end for it.
        last_word = {"ok": "ok", "fail": "failed", "rollback": "rolled_back"}

        def settled(_msg):
            return all(not fleet.devices[d].online if kind == "offline"
                       else fleet.devices[d].last_state[0] == last_word[INJECTED.get(kind, ("ok",))[0]]
                       for d, kind in kinds.items())
        watch.wait_for(settled, 120)
        fleet.flush()
        expect = tmp_path / "expected.txt"
        expect.write_text("\n".join(list(kinds) + SILENT) + "\n")
        capsys.readouterr()
        assert run_cli(["report", "--json", "--expect", str(expect), "--timeout", "10"] + broker_args(broker)) == 0
        got = json.loads(capsys.readouterr().out)
        # The same from a rollout's decision log: every device it triggered is expected.
        log = Log(str(tmp_path / "rollout.jsonl"), rollout="report-1")
        log.write("start", targets=list(kinds) + SILENT)
        for device_id in list(kinds) + SILENT:
            log.write("trigger", device=device_id, stage=0)
        log.close()
        assert run_cli(["report", "--json", "--log", log.path, "--timeout", "10"] + broker_args(broker)) == 0
        from_log = json.loads(capsys.readouterr().out)
        assert run_cli(["report", "--timeout", "10"] + broker_args(broker)) == 0
        table = capsys.readouterr().out
        records = [d.last_state[1].get("t") for d in fleet.devices.values() if d.last_state[0] == "ok"]
    finally:
        watch.close()
        fleet.stop()

    failed = {r: n for r, (o, _, n) in ((k, INJECTED[k]) for k in INJECTED) if o == "fail"}
    rolled = {r: n for r, (o, _, n) in ((k, INJECTED[k]) for k in INJECTED) if o == "rollback"}
    offline = sorted(d for d, k in kinds.items() if k == "offline")
    whole = got["fleet"]
    assert whole["devices"] == N
    assert whole["reasons"] == failed and whole["failed"] == sum(failed.values())
    assert whole["rollback_reasons"] == rolled and whole["rolled_back"] == sum(rolled.values())
    assert whole["offline"] == len(offline) and whole["in_progress"] == 0 and whole["idle"] == 0
    assert whole["ok"] == N - sum(n for _, _, n in INJECTED.values())
    assert got["not_heard_from"] == sorted(offline + SILENT) and got["expected_silent"] == SILENT
    assert from_log == got
    # Per version: every update aimed at 1.0.1; the offline devices never said where they went.
    assert got["versions"]["1.0.1"]["failed"] == whole["failed"] and got["versions"]["1.0.1"]["ok"] == whole["ok"]
    times = [report.update_ms(t) for t in records]
    assert len(times) == whole["ok"] == whole["timed"]
    assert (whole["p50_ms"], whole["p95_ms"]) == (report.percentile(times, 50), report.percentile(times, 95))
    assert whole["p50_kbps"] > 0
    for reason, count in list(failed.items()) + list(rolled.items()):
        assert any(line.split() == [reason, str(count)] for line in table.splitlines()), (reason, table)
    assert "not heard from: %d" % len(offline) in table


def test_percentile_and_update_time():
    assert report.percentile([], 50) is None
    assert report.percentile([5], 95) == 5
    values = list(range(1, 101))
    assert [report.percentile(values, p) for p in (50, 95, 100)] == [50, 95, 100]
    assert report.update_ms({"dl_ms": 4000, "verify_ms": 300, "boot_ms": 900, "reboot_s": None}) == 5200
    assert report.update_ms({"dl_ms": 4000, "verify_ms": 300, "boot_ms": 900, "reboot_s": 2}) == 6300
    assert report.update_ms({"dl_ms": None}) is None and report.update_ms(None) is None


def test_report_groups_by_target_version_and_counts_busy_and_idle():
    t = {"to": "1.2.0", "dl_ms": 1000, "verify_ms": 100, "boot_ms": 500, "reboot_s": None, "fetched": 1048576,
         "resumes": 1, "restarts": 0}
    devices = {"a": {"state": "ok", "version": "1.2.0", "t": t},
               "b": {"state": "failed", "version": "1.1.0", "reason": "timeout", "t": dict(t, boot_ms=None)},
               "c": {"state": "downloading", "version": "1.1.0", "t": None},
               "d": {"state": "idle", "version": "1.1.0", "t": None}}
    got = report.build(devices)
    assert got["versions"]["1.2.0"]["ok"] == 1 and got["versions"]["1.2.0"]["failed"] == 1
    assert got["versions"]["1.1.0"]["in_progress"] == 1 and got["versions"]["1.1.0"]["idle"] == 1
    assert got["fleet"]["p50_ms"] == 1600 and got["fleet"]["p50_kbps"] == 1024.0 and got["fleet"]["resumes"] == 2
    text = report.text(got)
    assert "timeout" in text and text.splitlines()[0].split()[:3] == ["version", "devices", "ok"]
