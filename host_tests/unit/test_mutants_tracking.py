# The tracker (otactl/tracking.py) under CPython with a fake broker (host_tests/fake_mqtt.py): how a
# state message settles a device, when a device is a suspect, deadlines and re-reads at their bounds.
# Written for mutation testing (issue 15, docs/MUTATION.md). Time is the tracker's time.monotonic,
# replaced by a clock the test sets: no test waits on the wall clock.
import queue

import pytest

from fake_mqtt import Device, FakeConn, Info
from otactl import mqtt, tracking
from ota.errors import OtaError

JOB = "job-t"


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(tracking.time, "monotonic", c)
    return c


def tracker(devices=(), timeout=60.0, job=JOB):
    conn = FakeConn(devices)
    t = tracking.Tracker(conn, job, timeout)
    t.start(0.5)
    return t, conn


def state(**fields):
    return dict({"job": JOB}, **fields)


# --- judge ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields,wanted,verdict", [
    (state(state="ok", version="1.0.1"), "1.0.1", ("ok", None, None)),
    (state(state="ok", version="1.0.1", reason="r", detail="d"), None, ("ok", "r", "d")),
    (state(state="ok", version="1.0.0"), None, ("ok", None, None)),
    (state(state="ok", version="1.0.0"), "1.0.1", ("wrong_version", "wrong_version", "reports 1.0.0, expected 1.0.1")),
    (state(state="ok", version="1.0", reason="same_version", detail="d"), "1.0.0", ("same_version", "same_version", "d")),
    (state(state="ok", version="0.9", reason="same_version"), None, ("same_version", "same_version", None)),
    (state(state="ok", version="0.9", reason="same_version"), "1.0.0",
     ("wrong_version", "wrong_version", "reports same_version at 0.9, expected 1.0.0")),
    (state(state="failed", version="1.0.0", reason="bad_sha256", detail="d"), "1.0.1", ("failed", "bad_sha256", "d")),
    (state(state="failed", version="1.0.1", reason="selftest_failed"), "1.0.1", None),  # the new image's gate
    (state(state="failed", version="1.0.1", reason="x"), None, ("failed", "x", None)),
    (state(state="rolled_back", version="1.0.0", reason="selftest_failed"), "1.0.1",
     ("rolled_back", "selftest_failed", None)),
    (state(state="downloading", version="1.0.0", progress=5), "1.0.1", None),
    (state(state="idle", version="1.0.0"), "1.0.1", None),
    (dict(state="failed", job="other", reason="busy", detail="refused " + JOB), "1.0.1",
     ("failed", "busy", "the device was running another job")),
    (dict(state="failed", job="other", reason="busy", detail="refused other"), "1.0.1", None),
    (dict(state="failed", job="other", reason="bad_sha256", detail="refused " + JOB), "1.0.1", None),
    (dict(state="ok", job="other", version="1.0.1"), "1.0.1", None),
])
def test_judge(fields, wanted, verdict):
    t = tracking.Tracker(FakeConn(), JOB, 60)
    assert t.judge("d", fields, wanted) == verdict
    assert ("d" in t.last) == (fields.get("job") == JOB)


# --- suspects --------------------------------------------------------------------------------------
def test_a_bad_message_from_a_device_in_flight_makes_it_a_suspect(clock):
    t, conn = tracker([Device("a", "1.0.0"), Device("b", "1.0.0")])
    t.watch("a")
    t.on_message(mqtt.STATE_PREFIX + "a", b"not json", False)
    t.on_message(mqtt.STATE_PREFIX + "b", b"not json", False)  # not in flight: only the fleet's business
    t.on_message("/elsewhere/a", b"not json", False)
    assert t.suspects == {"a": "bad_state"}
    assert t.fleet.get("a") is None and t.events.qsize() == 2  # the two retained states of start()


def test_flooding_is_more_than_the_limit_within_one_second(clock):
    t, conn = tracker([Device("a", "1.0.0")])  # start(): one retained message, in second 1000
    for _ in range(tracking.FLOOD_PER_S - 1):
        conn.say("a", state="idle", version="1.0.0")
    assert t.suspects == {}  # FLOOD_PER_S messages in one second is still allowed
    clock.now += 1
    for _ in range(tracking.FLOOD_PER_S):
        conn.say("a", state="idle", version="1.0.0")
    assert t.suspects == {}  # a new second starts a new count
    conn.say("a", state="idle", version="1.0.0")
    assert t.suspects == {"a": "flooding"}


def test_a_job_stepping_back_is_a_duplicate_id(clock):
    t, conn = tracker([Device("a", "1.0.0"), Device("b", "1.0.0")])
    for s in ("downloading", "verifying", "rebooting", "confirming", "ok"):
        conn.say("a", state=s, job=JOB, version="1.0.0")
    conn.say("a", state="ok", job=JOB, version="1.0.1")  # the same rank again: fine
    conn.say("a", state="idle", job="other", version="1.0.1")  # another job: not ranked
    conn.say("a", state="idle", version="1.0.1")
    assert t.suspects == {}
    conn.say("a", state="downloading", job=JOB, version="1.0.0")
    assert t.suspects == {"a": "duplicate_id"}
    conn.say("b", state="failed", job=JOB, version="1.0.0")
    conn.say("b", state="rebooting", job=JOB, version="1.0.0")
    assert t.suspects["b"] == "duplicate_id"


def test_duplicate_id_outranks_flooding(clock):
    t, conn = tracker([Device("a", "1.0.0")])
    for _ in range(tracking.FLOOD_PER_S + 1):
        conn.say("a", state="ok", job=JOB, version="1.0.1")
    assert t.suspects == {"a": "flooding"}
    conn.say("a", state="downloading", job=JOB, version="1.0.1")
    assert t.suspects == {"a": "duplicate_id"}


def test_revert_tracker_without_a_job_ranks_nothing(clock):
    t, conn = tracker([Device("a", "1.0.0")], job=None)
    conn.say("a", state="ok", job=None, version="1.0.1")
    conn.say("a", state="downloading", version="1.0.1")
    assert t.suspects == {}


# --- start, snapshot, send --------------------------------------------------------------------------
def test_start_subscribes_and_waits_for_the_retained_states():
    t, conn = tracker([Device("a", "1.0.0"), Device("b", "2.0.0")])
    assert conn.on_message == t.on_message
    assert conn.subscribed == [(mqtt.STATE_FILTER, 1)] and conn.synced == [0.5]
    assert sorted(d.id for d in t.fleet.sorted()) == ["a", "b"]
    t.drain_snapshot()
    assert t.events.qsize() == 0
    assert t.next_events(0) == []


def test_send_publishes_each_trigger_with_qos_1():
    t, conn = tracker([Device("a", "1.0.0"), Device("b", "1.0.0")])
    t.send(["a", "b"], lambda d: ('{"type": "x", "id": "%s"}' % d).encode())
    assert conn.sent == [("a", {"type": "x", "id": "a"}, 1), ("b", {"type": "x", "id": "b"}, 1)]


@pytest.mark.parametrize("info,words", [(Info(error=RuntimeError("gone")), "trigger for b not sent: gone"),
                                        (Info(error=ValueError("full")), "trigger for b not sent: full"),
                                        (Info(published=False), "no PUBACK for the trigger of b")])
def test_send_reports_an_unsent_trigger(info, words):
    conn = FakeConn(info=lambda d: info if d == "b" else Info())
    t = tracking.Tracker(conn, JOB, 60)
    with pytest.raises(OtaError) as e:
        t.send(["a", "b"], lambda d: b"{}")
    assert e.value.reason == "broker_unreachable" and e.value.detail == words


def test_launch_fills_the_room_left_and_logs_before_it_sends(clock):
    t, conn = tracker()
    order = []
    t.watch("x", stage=0)
    batch, rest = t.launch(["a", "b", "c", "d"], 3, lambda d: b"{}", stage=1,
                           before_send=lambda b: order.append(("logged", list(b), len(conn.sent))))
    assert (batch, rest) == (["a", "b"], ["c", "d"])
    assert order == [("logged", ["a", "b"], 0)]  # before any trigger of the batch left
    assert conn.triggered() == ["a", "b"]
    assert t.in_flight == {"x": (1060.0, 0), "a": (1060.0, 1), "b": (1060.0, 1)}
    assert t.heard == {"x": 1000.0, "a": 1000.0, "b": 1000.0}
    # no room: nothing logged, nothing sent
    assert t.launch(["c"], 3, lambda d: b"{}", before_send=order.append) == ([], ["c"])
    assert t.launch(["c"], 2, lambda d: b"{}", before_send=order.append) == ([], ["c"])
    assert len(order) == 1 and len(conn.sent) == 2
    assert t.launch(["c", "d"], 4, lambda d: b"{}") == (["c"], ["d"])  # no before_send: fine


def test_a_device_is_watched_before_its_trigger_leaves(clock):
    t, conn = tracker()
    conn.on_send = lambda d: seen.append(d in t.in_flight)
    seen = []
    t.launch(["a"], 1, lambda d: b"{}")
    assert seen == [True]


def test_watch_sets_deadline_and_heard(clock):
    t, conn = tracker(timeout=30)
    t.watch("a", 2, now=500.0)
    t.watch("b")
    assert t.in_flight == {"a": (530.0, 2), "b": (1030.0, None)}
    assert t.heard == {"a": 500.0, "b": 1000.0}
    assert t.forget("a") == (530.0, 2) and "a" not in t.heard and "a" not in t.in_flight
    assert t.forget("a") is None


# --- waiting ----------------------------------------------------------------------------------------
def test_expired_at_the_deadline_exactly(clock):
    t, conn = tracker(timeout=10)
    t.watch("a")
    assert t.expired(1009.999) == []
    assert t.expired(1010.0) == ["a"]


def test_wait_time(clock):
    t, conn = tracker(timeout=10)
    assert t.wait_time(1000.0) == 1.0 and t.wait_time(1000.0, cap=3) == 3
    t.watch("a")
    assert t.wait_time(1000.0) == 1.0
    assert t.wait_time(1009.5) == 0.5
    assert t.wait_time(1009.5, cap=0.25) == 0.25
    assert t.wait_time(1020.0) == 0.0
    t.watch("b", now=995.0)
    assert t.wait_time(1004.5) == 0.5  # the earliest deadline


def test_next_events_takes_at_most_the_drain_limit(monkeypatch):
    monkeypatch.setattr(tracking, "_DRAIN_MAX", 3)
    t = tracking.Tracker(FakeConn(), JOB, 60)
    for i in range(5):
        t.events.put(i)
    assert t.next_events(0) == [0, 1, 2]
    assert t.next_events(-1) == [3, 4]  # a negative wait is no wait
    assert t.next_events(0) == []


def test_next_events_waits_for_the_first(monkeypatch):
    t = tracking.Tracker(FakeConn(), JOB, 60)
    waits = []

    class Q(queue.Queue):
        def get(self, block=True, timeout=None):
            waits.append(timeout)
            return super().get(block, timeout)

    t.events = Q()
    t.events.put("x")
    assert t.next_events(0.75) == ["x"] and waits[0] == 0.75


# --- settled ----------------------------------------------------------------------------------------
def test_settled_each_device_once_and_only_in_flight(clock):
    t, conn = tracker([Device("a", "1.0.0"), Device("b", "1.0.0"), Device("c", "1.0.0")])
    t.drain_snapshot()
    t.watch("a")
    t.watch("b")
    conn.say("a", state="ok", job=JOB, version="1.0.1")
    conn.say("a", state="failed", job=JOB, version="1.0.0", reason="late")  # the first final state counts
    conn.say("b", state="downloading", job=JOB, version="1.0.0")
    conn.say("c", state="ok", job=JOB, version="1.0.1")  # not in flight
    clock.now = 1003.0
    assert t.settled("1.0.1", 0) == [("a", ("ok", None, None))]
    assert t.heard["b"] == 1003.0 and t.heard["a"] == 1003.0
    assert conn.rereads == []


def test_quiet_devices_are_reread_after_quiet_s(clock):
    t, conn = tracker([Device("a", "1.0.0"), Device("b", "1.0.0")])
    t.drain_snapshot()
    t.watch("a")
    t.watch("b")
    conn.say("b", retain=False, state="downloading", job=JOB, version="1.0.0")
    clock.now = 1000.0 + tracking.QUIET_S - 0.001
    assert t.settled("1.0.1", 0) == [] and conn.rereads == []
    # a's ok was lost on its way (only the retained copy holds it); b spoke at 1004.999
    conn.say("a", deliver=False, state="ok", job=JOB, version="1.0.1")
    clock.now = 1000.0 + tracking.QUIET_S
    assert t.settled("1.0.1", 0) == [("a", ("ok", None, None))]
    assert conn.rereads == [[mqtt.STATE_PREFIX + "a"]]
    assert t.recovered == 1 and t.heard["a"] == clock.now


def test_a_late_device_is_reread_once_more_then_times_out(clock):
    t, conn = tracker([Device("a", "1.0.0"), Device("b", "1.0.0"), Device("c", "1.0.0")], timeout=3)
    t.drain_snapshot()
    for d in ("a", "b", "c"):
        t.watch(d)
    conn.say("a", deliver=False, state="ok", job=JOB, version="1.0.1")
    conn.say("b", deliver=False, state="downloading", job=JOB, version="1.0.0", progress=40)
    clock.now = 1003.0
    out = t.settled("1.0.1", 0)
    assert conn.rereads == [[mqtt.STATE_PREFIX + d for d in ("a", "b", "c")]]
    assert out == [("a", ("ok", None, None)),
                   ("b", ("timeout", "timeout", "no final state in 3s (last state downloading 40%)")),
                   ("c", ("timeout", "timeout", "no final state in 3s (no state for this job)"))]
    assert t.recovered == 1


def test_timeout_outcome_says_what_was_last_seen(clock):
    t, conn = tracker([Device("off", "1.0.0", state="offline"), Device("idle", "1.0.0")], timeout=2.5)
    assert t.timeout_outcome("off") == ("timeout", "timeout", "no final state in 2.5s (device offline)")
    assert t.timeout_outcome("idle") == ("timeout", "timeout", "no final state in 2.5s (no state for this job)")
    assert t.timeout_outcome("ghost") == ("timeout", "timeout", "no final state in 2.5s (no state for this job)")
    t.last["idle"] = {"state": "verifying", "progress": None}
    assert t.timeout_outcome("idle")[2] == "no final state in 2.5s (last state verifying)"
    t.last["idle"] = {"state": "downloading", "progress": 0}
    assert t.timeout_outcome("idle")[2] == "no final state in 2.5s (last state downloading 0%)"
    # the new image failed its health gate and no rolled_back followed: the failure is the outcome
    t.last["idle"] = {"state": "failed", "reason": "selftest_failed", "detail": "d"}
    assert t.timeout_outcome("idle") == ("failed", "selftest_failed", "d")


def test_settled_judges_against_the_wanted_version(clock):
    t, conn = tracker([Device("a", "1.0.0")])
    t.drain_snapshot()
    t.watch("a")
    conn.say("a", state="ok", job=JOB, version="1.0.0")
    assert t.settled("1.0.1", 0) == [("a", ("wrong_version", "wrong_version", "reports 1.0.0, expected 1.0.1"))]


def test_recovered_counts_only_the_devices_the_reread_settled(clock):
    t, conn = tracker([Device(d, "1.0.0") for d in ("a", "b", "c", "q")])
    t.drain_snapshot()
    for d in ("a", "b", "c", "q"):
        t.watch(d)
    clock.now += tracking.QUIET_S
    conn.say("a", state="ok", job=JOB, version="1.0.1")  # heard live this round
    conn.say("b", deliver=False, state="ok", job=JOB, version="1.0.1")  # lost live, retained
    assert sorted(d for d, _ in t.settled("1.0.1", 0)) == ["a", "b"]
    assert t.recovered == 1
    for d in ("a", "b"):
        t.forget(d)
    # q stays quiet: re-read again only after another QUIET_S, from the time of its last re-read
    assert t.heard["q"] == clock.now
    clock.now += tracking.QUIET_S - 0.5
    conn.say("c", deliver=False, state="ok", job=JOB, version="1.0.1")
    assert t.settled("1.0.1", 0) == []
    clock.now += 0.5
    assert [d for d, _ in t.settled("1.0.1", 0)] == ["c"]
    assert t.recovered == 2
    assert conn.rereads[-1] == [mqtt.STATE_PREFIX + "c", mqtt.STATE_PREFIX + "q"]


def test_the_reread_states_are_taken_without_waiting(clock):
    # reread() returns once the broker sent them: the tracker takes what is queued, never waits again
    t, conn = tracker([Device("a", "1.0.0")])
    t.drain_snapshot()
    t.watch("a")
    waits = []

    class Q(queue.Queue):
        def get(self, block=True, timeout=None):
            if block:
                waits.append(timeout)
            return super().get(block, timeout)

    t.events = Q()
    clock.now += tracking.QUIET_S
    del conn.retained[mqtt.STATE_PREFIX + "a"]  # nothing comes back
    assert t.settled("1.0.1", 0.25) == []
    assert waits == [0.25, 0.0]
    # a device with no retained state to re-read counts as heard at the re-read: not re-read again
    # before another QUIET_S
    assert t.heard["a"] == clock.now
    clock.now += 1
    assert t.settled("1.0.1", 0) == [] and len(conn.rereads) == 1


def test_send_waits_for_each_puback_with_a_deadline():
    infos = []

    def info(device):
        infos.append(Info())
        return infos[-1]

    t = tracking.Tracker(FakeConn(info=info), JOB, 60)
    t.send(["a", "b"], lambda d: b"{}")
    assert [i.waited for i in infos] == [[30], [30]]  # a broker that never answers is an error, not a hang


def test_a_batch_shares_one_trigger_time(monkeypatch):
    ticks = iter(range(100, 200))
    monkeypatch.setattr(tracking.time, "monotonic", lambda: float(next(ticks)))
    t, conn = tracker(timeout=10)
    t.launch(["a", "b", "c"], 3, lambda d: b"{}")
    assert len({deadline for deadline, _ in t.in_flight.values()}) == 1
    assert len(set(t.heard.values())) == 1


def test_a_state_outside_a_job_ranks_lowest(clock):
    # "idle" is never sent with a job id (lib/ota/agent.py): one carrying ours ranks below every job
    # state, so after the job began it is a step back
    t, conn = tracker([Device("a", "1.0.0")])
    conn.say("a", state="idle", job=JOB, version="1.0.0")
    conn.say("a", state="idle", job=JOB, version="1.0.0")
    assert t.suspects == {}
    conn.say("a", state="downloading", job=JOB, version="1.0.0")
    assert t.suspects == {}
    conn.say("a", state="idle", job=JOB, version="1.0.0")
    assert t.suspects == {"a": "duplicate_id"}
