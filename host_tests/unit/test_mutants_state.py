"""ota.state's clock and heap fields (pinned after `make mutate`). The Unix port and the ESP32 count
time from 2000-01-01 (MicroPython's time docs: "epoch ... 2000-01-01 on embedded ports"), CPython from
1970: unix_time() reports Unix seconds on both, None until the clock was set (before 2020). CPython,
with a fake `time` module standing in for a 2000-epoch port."""
import json

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import state

UNIX_2000 = 946684800  # 2000-01-01T00:00:00Z in Unix seconds


class Clock2000:
    # time as on the ESP32 port: time() counts from 2000, gmtime(0) is 2000-01-01.
    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now

    def gmtime(self, t):
        assert t == 0
        return (2000, 1, 1, 0, 0, 0, 5, 1)


def test_a_2000_epoch_clock_is_reported_in_unix_seconds(monkeypatch):
    set_at = 1767225600 - UNIX_2000  # 2026-01-01 on the device's clock
    monkeypatch.setattr(state, "time", Clock2000(set_at + 0.7))
    assert state.unix_time() == 1767225600


def test_the_clock_counts_as_set_from_2020_on_exactly(monkeypatch):
    monkeypatch.setattr(state, "time", Clock2000(state._CLOCK_SET_AFTER - UNIX_2000))
    assert state.unix_time() == state._CLOCK_SET_AFTER
    monkeypatch.setattr(state, "time", Clock2000(state._CLOCK_SET_AFTER - UNIX_2000 - 1))
    assert state.unix_time() is None
    monkeypatch.setattr(state, "time", Clock2000(0))  # a device fresh from reset: 2000-01-01
    assert state.unix_time() is None


def test_cpython_time_is_unix_time_already():
    import time

    assert abs(state.unix_time() - time.time()) < 5  # the same clock read twice, not a duration bound


def test_heap_field_is_gc_mem_free_on_micropython(monkeypatch):
    monkeypatch.setattr(state.gc, "mem_free", lambda: 12345, raising=False)
    fields = state.Reporter("dev", "1.0.0", "ota_0").fields("idle")
    assert fields["heap"] == 12345


def test_heap_field_is_null_where_there_is_no_mem_free(monkeypatch):
    monkeypatch.delattr(state.gc, "mem_free", raising=False)
    assert json.loads(state.Reporter("dev", "1.0.0", "ota_0").message("idle"))["heap"] is None


def test_a_new_reporter_repeats_idle_until_told_otherwise():
    r = state.Reporter("dev", "1.0.0", "ota_0")
    assert r.last_state == ("idle", {})
    r.message("failed", reason="bad_sha256")
    assert r.last_state == ("failed", {"reason": "bad_sha256"})


def test_percent_rounds_down_in_whole_numbers():
    assert [state.percent(d, 3) for d in (0, 1, 2, 3)] == [0, 33, 66, 100]
    assert state.percent(1, 101) == 0 and state.percent(100, 101) == 99
    assert state.percent(5, 0) is None and state.percent(5, None) is None
    assert state.percent(7, 5) == 100  # more than announced: capped


def test_uptime_is_whole_seconds_since_the_reporter_started(monkeypatch):
    now = {"ms": 0}
    monkeypatch.setattr(state, "ticks_ms", lambda: now["ms"])
    r = state.Reporter("dev", "1.0.0", "ota_0")
    now["ms"] = 2999
    assert r.fields("idle")["uptime_s"] == 2
    now["ms"] = 1000 * 1000
    assert r.fields("idle")["uptime_s"] == 1000


def test_throttle_defaults_one_second_and_five_percent(monkeypatch):
    now = {"ms": 0}
    monkeypatch.setattr(state, "ticks_ms", lambda: now["ms"])
    t = state.Throttle()
    assert t.due(0, 100)
    now["ms"] = 999
    assert not t.due(50, 100)  # too soon
    now["ms"] = 1000
    assert not t.due(4, 100)  # a second later, but only 4 %
    assert t.due(5, 100)  # exactly the step
    now["ms"] = 2000
    assert t.due(10, 100)
