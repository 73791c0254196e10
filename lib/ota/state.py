# The retained state message on /switch/state/<id>: what an operator (or a fleet tool) reads to know
# where a device is. One JSON object, every field always present (null when unknown):
#
#   {"id": "a0b1c2d3e4f5", "version": "1.2.0", "slot": "ota_0", "state": "downloading",
#    "progress": 42, "bytes": 614400, "total": 1462272, "job": "job-42", "reason": null,
#    "detail": null, "heap": 143872, "uptime_s": 37, "ts": 1767225600, "t": null}
#
# state: one of STATES, or "offline" (the last will, published by the broker when the device vanishes).
# reason/detail: the stable reason code and a short human detail (failed, rolled_back, busy, ...).
# ts: Unix time, null while the clock is unset (before ntptime succeeds the device thinks it is 2000).
import gc
import json
import time

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython (host tests)

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


STATES = ("idle", "downloading", "verifying", "rebooting", "confirming", "ok", "failed", "rolled_back")
_MAX_DETAIL = 160  # a state message stays well under one TCP segment
_CLOCK_SET_AFTER = 1577836800  # 2020-01-01: anything earlier means ntptime has not run


def _heap():
    mem_free = getattr(gc, "mem_free", None)
    return mem_free() if mem_free else None


def no_watchdog():
    # The watchdog's feed where none is armed (unit tests, the host): agent, fetch and update take a
    # feed() and call it on every step that could outlast the watchdog's timeout.
    pass


def unix_time():
    # Unix time, or None while the clock is unset.
    now = int(time.time())
    if time.gmtime(0)[0] == 2000:  # ports with the 2000 epoch: report Unix time all the same
        now += 946684800
    return now if now >= _CLOCK_SET_AFTER else None


class Reporter:
    # Builds the state messages of one device. The identity fields (id, version, slot) are fixed at
    # boot; message() fills in the rest. Returns bytes, ready for MQTTClient.publish.
    def __init__(self, device_id, version, slot):
        self.device_id = device_id
        self.version = version
        self.slot = slot
        self.started = ticks_ms()
        self.last_state = ("idle", {})  # the last message's arguments, rebuilt after a reconnect

    def fields(self, state, progress=None, done=None, total=None, job=None, reason=None, detail=None,
               t=None):
        if detail is not None:
            detail = str(detail)[:_MAX_DETAIL]
        return {
            "id": self.device_id,
            "version": self.version,
            "slot": self.slot,
            "state": state,
            "progress": progress,
            "bytes": done,
            "total": total,
            "job": job,
            "reason": reason,
            "detail": detail,
            "heap": _heap(),
            "uptime_s": ticks_diff(ticks_ms(), self.started) // 1000,
            "ts": unix_time(),
            "t": t,  # a final state's telemetry record (telemetry.py), else null
        }

    def message(self, state, **kwargs):
        self.last_state = (state, kwargs)
        return json.dumps(self.fields(state, **kwargs)).encode()

    def offline(self):
        # The last will: registered at connect time, so heap/uptime/ts would be stale; leave them null.
        return json.dumps({"id": self.device_id, "version": self.version, "slot": self.slot,
                           "state": "offline"}).encode()


def percent(done, total):
    # 0..100, or None when the total is unknown (no size in the trigger and no Content-Length).
    if not total:
        return None
    return min(100, done * 100 // total)


class Throttle:
    # Progress rate limiter: a progress message goes out when at least min_interval_ms have passed
    # AND the percentage moved by at least min_step (or the total is unknown), plus always the first
    # and the final (100 %) one. At 67 KiB/s over a 1.4 MiB image that is about 20 messages.
    def __init__(self, min_interval_ms=1000, min_step=5):
        self.min_interval_ms = min_interval_ms
        self.min_step = min_step
        self.last_ms = None
        self.last_pct = None

    def due(self, done, total):
        pct = percent(done, total)
        now = ticks_ms()
        if self.last_ms is not None and pct != 100:
            if ticks_diff(now, self.last_ms) < self.min_interval_ms:
                return False
            if pct is not None and self.last_pct is not None and pct - self.last_pct < self.min_step:
                return False
        if pct == 100 and self.last_pct == 100:
            return False
        self.last_ms = now
        self.last_pct = pct
        return True
