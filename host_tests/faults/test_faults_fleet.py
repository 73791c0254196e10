# The adversarial fleet (issue 17): light devices (sim/lightdevice.py) that lie, flood, crash, share
# an id and publish hostile states, among honest ones, through `status`, `rollout` and `revert` on a
# real mosquitto. Properties: the tool never crashes; never more devices in flight than
# --max-concurrent, and no stage's trigger before the previous stage's decision; every device
# triggered and counted exactly once; every honest device's outcome right; every hostile one
# reported as what it is.
# Short form (`make test`): 200 devices. Full form (OTA_FAULTS=full, `make faults`): 1,000. 5 % of
# them hostile, an equal share of each kind.
import json

from fleet_helpers import MANIFEST, broker_args, broker_module, needs_broker, read_log, triggers_and_outcomes, run_cli
from devkit import faultmatrix
from otactl import mqtt, rollout
from sim.lightdevice import Behavior, LightFleet

pytestmark = needs_broker
N = 1000 if faultmatrix.FULL else 200
FAST = dict(download_s=0.05, progress_steps=3, reboot_s=0.01, confirm_s=0.01)
HOSTILE_KINDS = ("lie_ok", "lie_same", "garbage", "flood", "crash", "twin")
# what the rollout must say about each kind: (outcome, suspect or None)
EXPECTED = {"lie_ok": ("wrong_version", None), "lie_same": ("wrong_version", None),
            "garbage": ("failed", "bad_state"),  # its one well-formed message says failed
            "flood": ("ok", "flooding"), "crash": ("timeout", None), "twin": ("ok", "duplicate_id")}
# Honest devices that fail honestly: their outcome must be counted as what it is, too.
HONEST_FAILURES = {"fail": "failed", "rollback": "rolled_back"}
# Retained states of "devices" that are no targets at all: a bad id, junk, escape sequences.
STATIC = {"root": b'{"id": "root", "version": "1.0.0", "state": "idle"}',
          "junk-list": b"[1, 2]", "junk-bytes": b"\xff\xfe\x00",
          "junk-escape": b'{"id": "junk-escape", "version": "\\u001b[2J1.0.0", "state": "idle"}'}


def plan(n):
    """{device id: kind}: 5 % hostile (each kind equally), 2 % failing honestly, the rest ok."""
    kinds = {}
    hostile_every, failing_every = 20, 50
    for i in range(n):
        device_id = "dev-%04d" % i
        if i % hostile_every == 7:
            kinds[device_id] = HOSTILE_KINDS[(i // hostile_every) % len(HOSTILE_KINDS)]
        elif i % failing_every == 13:
            kinds[device_id] = ("fail", "rollback")[(i // failing_every) % 2]
        else:
            kinds[device_id] = "ok"
    return kinds


def build(broker, kinds):
    main = LightFleet(broker.host, broker.port, per_connection=250)
    twins = LightFleet(broker.host, broker.port, per_connection=250)
    for device_id, kind in kinds.items():
        if kind == "ok":
            behavior = Behavior(**FAST)
        elif kind in HONEST_FAILURES:
            behavior = Behavior(kind, **FAST)
        elif kind == "crash":
            behavior = Behavior("offline", **FAST)
        elif kind == "twin":  # the same id, a second device, slower: its download overlaps the first's ok
            behavior = Behavior(**FAST)
            twins.add(device_id, "1.0.0", Behavior(**dict(FAST, download_s=0.6)))
        else:
            behavior = Behavior(kind, flood_per_s=150, **FAST)
        main.add(device_id, "1.0.0", behavior)
    return main, twins


def in_flight_peak(records, start_event, end_event):
    now = peak = 0
    for r in records:
        now += {start_event: 1, end_event: -1}.get(r["event"], 0)
        peak = max(peak, now)
    return peak


def test_faults_adversarial_fleet_status_rollout_revert(broker, tmp_path, capsys):
    kinds = plan(N)
    main, twins = build(broker, kinds)
    main.start(timeout=120)
    twins.start(timeout=120)
    w = broker_module.Watcher(broker.host, broker.port, topics=())
    for device_id, payload in STATIC.items():
        w.publish("/switch/state/" + device_id, payload, retain=True)
    w.close()
    log = str(tmp_path / "rollout.jsonl")
    try:
        # status over the whole hostile fleet: no crash, nothing raw reaches the terminal
        assert run_cli(["status"] + broker_args(broker)) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "refused: " in out
        conn = mqtt.connect(None, host=broker.host, port=broker.port)
        try:
            opts = rollout.Options((0.1, 0.5, 1.0), max_concurrent=50, device_timeout=8.0,
                                   success_threshold=0.7, abort_failure_rate=0.3)
            summary = rollout.Rollout(conn, MANIFEST, opts, log, job="adversarial").run()
        finally:
            conn.close()
        records = read_log(log)
        # revert the devices that took the release, through the same hostile fleet
        assert run_cli(["revert", "--log", log, "--max-concurrent", "40", "--timeout", "10"]
                       + broker_args(broker)) in (0, 1)
        revert_out = capsys.readouterr().out
    finally:
        main.stop()
        twins.stop()
    assert main.scheduler.errors == [] and twins.scheduler.errors == []
    # --- the rollout -------------------------------------------------------------------------
    assert summary["result"] == "completed", summary
    assert set(records[0]["targets"]) == set(kinds)  # the static junk and "root" are no targets
    triggers, outcomes = triggers_and_outcomes(records)
    assert sorted(triggers) == sorted(kinds) and set(outcomes) == set(kinds)  # each exactly once
    assert in_flight_peak(records, "trigger", "outcome") <= 50
    decided = set()
    for r in records:  # a stage's triggers only after the previous stage was decided
        if r["event"] == "trigger":
            assert r["stage"] == 0 or r["stage"] - 1 in decided, r
        elif r["event"] == "stage":
            decided.add(r["stage"])
    wrong = []
    for device_id, kind in kinds.items():
        got = outcomes[device_id]["outcome"]
        if kind == "ok":
            want = "ok"
        elif kind in HONEST_FAILURES:
            want = HONEST_FAILURES[kind]
        else:
            want, suspect = EXPECTED[kind]
            if suspect is not None and summary["suspects"].get(device_id) != suspect:
                wrong.append((device_id, kind, "suspect", summary["suspects"].get(device_id)))
        if got != want:
            wrong.append((device_id, kind, got, want))
        if kind == "ok" and device_id in summary["suspects"]:
            wrong.append((device_id, kind, "suspected", summary["suspects"][device_id]))
    assert not wrong, wrong
    honest_ok = sum(1 for k in kinds.values() if k == "ok")
    print("\nadversarial fleet: %d devices (%d hostile), %d honest ok, outcomes %s, suspects %d, rollout %.1fs"
          % (N, sum(1 for k in kinds.values() if k in HOSTILE_KINDS), honest_ok,
             json.dumps(summary["outcomes"], sort_keys=True), len(summary["suspects"]), summary["duration_s"]))
    # --- the revert --------------------------------------------------------------------------
    records = read_log(log)
    reverted = {r["device"]: r for r in records if r["event"] == "revert_outcome"}
    assert in_flight_peak(records, "revert_trigger", "revert_outcome") <= 40
    assert len([r for r in records if r["event"] == "revert_trigger"]) == len(reverted)
    for device_id, kind in kinds.items():
        if kind == "ok":  # every honest updated device went back, exactly once
            assert reverted[device_id]["outcome"] == "ok", reverted.get(device_id)
            assert reverted[device_id]["version"] == "1.0.0"
        elif kind in ("lie_ok", "lie_same", "crash", "garbage") + tuple(HONEST_FAILURES):
            assert device_id not in reverted  # never took the version: nothing to revert
    assert "\x1b" not in revert_out
