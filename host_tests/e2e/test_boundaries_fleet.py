# The rollout engine at its bounds (issue 15), with light devices on a real mosquitto: a failure rate
# equal to abort_failure_rate does not abort, a success rate equal to success_threshold advances, and
# a resumed rollout never triggers a device twice, whichever way its in-flight device finished. Each
# case is made deterministic: which device fails, and which one is in flight at the interruption,
# follow from the job id (the rollout's order is a hash of job and device id).
import time

import pytest

from fleet_helpers import FAST, MANIFEST, ids, needs_broker, read_log
from otactl import rollout, tracking
from sim.lightdevice import Behavior

pytestmark = needs_broker


def wait_for(predicate, what, timeout=30.0):
    # An event wait: polls until it happened; the deadline only turns a hang into a failure.
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "never happened: " + what
        time.sleep(0.01)


def one_failing(fleet, job, position, behavior):
    devices = ids(5, prefix="b")
    order = rollout._order(job, devices)
    return fleet([(d, "1.0.0", behavior if d == order[position] else None) for d in devices]), order


@pytest.mark.parametrize("abort_rate,threshold,result,reason", [
    (0.2, 0.8, "completed", None),  # 1 of 5 failed == 0.2: no abort; 4 of 5 ok == 0.8: advance
    (0.19, 0.8, "aborted", "failure_rate"),  # one step past the failure bound
    (1.0, 0.81, "aborted", "below_success_threshold"),  # one step past the success bound
])
def test_thresholds_exactly_at_the_bound(fleet, conn, tmp_path, abort_rate, threshold, result, reason):
    job = "job-bound"
    one_failing(fleet, job, 2, Behavior("fail", "bad_sha256", **FAST))
    log = str(tmp_path / "rollout.jsonl")
    opts = rollout.Options((1.0,), max_concurrent=5, device_timeout=30, success_threshold=threshold,
                           abort_failure_rate=abort_rate)
    summary = rollout.Rollout(conn(), MANIFEST, opts, log, job=job).run()
    assert (summary["result"], summary["abort_reason"]) == (result, reason), summary
    assert summary["outcomes"] == {"ok": 4, "failed": 1}  # the devices in flight are followed to the end
    stage = [r for r in read_log(log) if r["event"] == "stage"]
    assert [s["decision"] for s in stage] == ["advance" if result == "completed" else "abort"]


def interrupted_at_third_trigger(conn, log, job, opts):
    # max_concurrent=1: each outcome comes before the next trigger, so at the third trigger exactly
    # order[0] and order[1] are done and order[2] is in flight, every run.
    # A trigger's record is written (and fsynced) before it is sent, so the interrupt comes at the
    # first wait after the third trigger left, with that device in flight.
    triggers = []

    def count(record):
        if record["event"] == "trigger":
            triggers.append(record["device"])

    settled = tracking.Tracker.settled

    def interrupt(self, *args, **kwargs):
        if len(triggers) == 3 and self.in_flight:
            raise KeyboardInterrupt
        return settled(self, *args, **kwargs)

    tracking.Tracker.settled = interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            rollout.Rollout(conn(), MANIFEST, opts, log, job=job, on_event=count).run()
    finally:
        tracking.Tracker.settled = settled
    return read_log(log)[-1]


def assert_each_device_once(light, log, devices):
    records = read_log(log)
    assert sorted(r["device"] for r in records if r["event"] == "trigger") == sorted(devices)
    assert sorted(r["device"] for r in records if r["event"] == "outcome") == sorted(devices)
    for device_id in devices:
        assert len(light.devices[device_id].commands) == 1, device_id


def test_resume_after_the_in_flight_device_finished_alone(fleet, conn, tmp_path):
    # The in-flight device reports ok while nobody listens: the resume reads it from the retained
    # state and never sends the job again.
    job, devices = "job-resume-done", ids(4, prefix="r")
    light = fleet([(d, "1.0.0", None) for d in devices])
    order = rollout._order(job, devices)
    log = str(tmp_path / "rollout.jsonl")
    opts = rollout.Options((1.0,), max_concurrent=1, device_timeout=30)
    last = interrupted_at_third_trigger(conn, log, job, opts)
    assert (last["event"], last["in_flight"], last["done"]) == ("interrupted", [order[2]], 2)
    wait_for(lambda: light.devices[order[2]].last_state[0] == "ok", "the in-flight device finished")
    engine = rollout.Rollout.resume(conn(), log, manifest=MANIFEST)
    summary = engine.run()
    assert summary["result"] == "completed" and summary["outcomes"] == {"ok": 4}
    assert engine.tracker.recovered == 0  # settled from the states read at the resume, not read back later
    resume = [r for r in read_log(log) if r["event"] == "resume"][0]
    assert resume["in_flight"] == [order[2]] and resume["done"] == 2
    assert_each_device_once(light, log, devices)


def test_resume_while_the_in_flight_device_is_still_working(fleet, conn, tmp_path):
    # The in-flight device is stalled at the resume: it is watched, not triggered again, and ends as
    # a timeout at its deadline.
    job, devices = "job-resume-busy", ids(4, prefix="s")
    order = rollout._order(job, devices)
    light = fleet([(d, "1.0.0", Behavior("stall", **FAST) if d == order[2] else None) for d in devices])
    log = str(tmp_path / "rollout.jsonl")
    opts = rollout.Options((1.0,), max_concurrent=1, device_timeout=2, success_threshold=0.5,
                           abort_failure_rate=0.5)
    last = interrupted_at_third_trigger(conn, log, job, opts)
    assert last["in_flight"] == [order[2]]
    wait_for(lambda: light.devices[order[2]].last_state[0] == "downloading", "the stalled device started")
    summary = rollout.Rollout.resume(conn(), log, manifest=MANIFEST).run()
    assert summary["result"] == "completed" and summary["outcomes"] == {"ok": 3, "timeout": 1}
    outcome = [r for r in read_log(log) if r["event"] == "outcome" and r["device"] == order[2]]
    assert [r["outcome"] for r in outcome] == ["timeout"]
    assert_each_device_once(light, log, devices)
