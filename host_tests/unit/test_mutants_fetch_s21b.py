"""ota.fetch._pause sleeps every millisecond it is asked for, the last one included: config allows
ota.retry_backoff_ms down to 1 (and the backoff doubles from there), so a remainder of 1 ms after the
whole seconds is a real pause. Session 21's open _pause__mutmut_2 (`while ms > 1`) skipped it, with
its watchdog feed (docs/MUTATION.md)."""
import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import fetch


class Clock:
    def __init__(self):
        self.slept = []

    def sleep_ms(self, ms):
        self.slept.append(ms)


def test_a_one_millisecond_pause_and_remainder_are_slept_and_fed(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(fetch, "time", clock)
    fed = []
    fetch._pause(1, lambda: fed.append(1))
    assert clock.slept == [1] and len(fed) == 1
    fetch._pause(2001, lambda: fed.append(1))
    assert clock.slept == [1, 1000, 1000, 1] and len(fed) == 4
