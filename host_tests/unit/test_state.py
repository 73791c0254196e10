# state.py: the retained state message (every field always present) and the progress rate limiter.
import json

from ota import state

FIELDS = {"id", "version", "slot", "state", "progress", "bytes", "total", "job", "reason", "detail",
          "heap", "uptime_s", "ts", "t"}


def test_message_fields():
    r = state.Reporter("a0b1c2d3e4f5", "1.2.0", "ota_1")
    msg = json.loads(r.message("downloading", progress=42, done=614400, total=1462272, job="job-42"))
    assert set(msg) == FIELDS
    assert msg["id"] == "a0b1c2d3e4f5" and msg["version"] == "1.2.0" and msg["slot"] == "ota_1"
    assert (msg["state"], msg["progress"], msg["bytes"], msg["total"], msg["job"]) == \
        ("downloading", 42, 614400, 1462272, "job-42")
    assert msg["reason"] is None and msg["detail"] is None
    assert msg["uptime_s"] >= 0 and isinstance(msg["ts"], int)  # host clock is set
    assert r.last_state == ("downloading", {"progress": 42, "done": 614400, "total": 1462272, "job": "job-42"})


def test_idle_and_failed():
    r = state.Reporter("d", None, "ota_0")
    idle = json.loads(r.message("idle"))
    assert idle["state"] == "idle" and idle["progress"] is None and idle["version"] is None
    failed = json.loads(r.message("failed", reason="bad_url", detail="x" * 1000))
    assert failed["reason"] == "bad_url" and len(failed["detail"]) == 160


def test_offline_last_will():
    msg = json.loads(state.Reporter("d", "1.0", "ota_0").offline())
    assert msg == {"id": "d", "version": "1.0", "slot": "ota_0", "state": "offline"}


def test_clock_unset_gives_null_ts(monkeypatch):
    monkeypatch.setattr(state.time, "time", lambda: 86400.0)  # 1970-01-02: the clock was never set
    assert state.unix_time() is None
    assert json.loads(state.Reporter("d", "1", "s").message("idle"))["ts"] is None


def test_percent():
    assert state.percent(0, 100) == 0 and state.percent(50, 200) == 25 and state.percent(7, 7) == 100
    assert state.percent(10, None) is None and state.percent(10, 0) is None
    assert state.percent(300, 200) == 100


class Clock:
    def __init__(self):
        self.now = 0

    def __call__(self):
        return self.now


def test_throttle_interval_and_step(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(state, "ticks_ms", clock)
    t = state.Throttle(min_interval_ms=1000, min_step=5)
    total = 1000
    assert t.due(0, total)              # the first one always
    clock.now = 100
    assert not t.due(100, total)        # 10 % but too soon
    clock.now = 1500
    assert t.due(100, total)            # now due
    clock.now = 3000
    assert not t.due(120, total)        # late enough but only +2 %
    assert t.due(150, total)            # +5 %
    clock.now = 3001
    assert t.due(1000, total)           # the final one regardless of time
    assert not t.due(1000, total)       # ... once


def test_throttle_unknown_total_is_time_based(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(state, "ticks_ms", clock)
    t = state.Throttle(min_interval_ms=500, min_step=5)
    sent = 0
    for i in range(100):  # 10 s of chunks every 100 ms
        clock.now = i * 100
        sent += t.due(i * 4096, None)
    assert sent == 20


def test_throttle_bounds_message_count(monkeypatch):
    # 1.4 MiB at 67 KiB/s, progress every 4 KiB: about 21 s -> a handful of messages, not 350.
    clock = Clock()
    monkeypatch.setattr(state, "ticks_ms", clock)
    t = state.Throttle(min_interval_ms=1000, min_step=5)
    total = 1462272
    sent = 0
    for done in range(4096, total + 1, 4096):
        clock.now = done * 1000 // (67 * 1024)
        sent += t.due(done, total)
    sent += t.due(total, total)
    assert 15 <= sent <= 22
