# Simulated `time` of the ESP32 port: the Unix port's module, except for the wall clock. On the chip the
# epoch is 2000-01-01 (time.gmtime(0) -> 2000) and after power-on the RTC starts there: time.time() counts
# from 0 until ntptime.settime() sets it (docs/CHIP.md). Everything else (sleep, ticks_*) is the port's.
# ntptime.py calls set_clock(); ssl.py asks clock_is_set() before verifying a certificate.
from simport import port_module

_port = port_module("time", [], globals())  # the port's built-in, under the same name
del port_module

_EPOCH_2000 = 946684800  # Unix seconds at 2000-01-01T00:00:00Z
_boot_ms = _port.ticks_ms()
_clock_set = False


def set_clock():
    # What ntptime.settime() does to the RTC: from now on time() is the real time (the host's).
    global _clock_set
    _clock_set = True


def clock_is_set():
    return _clock_set


def time():
    if not _clock_set:
        return _port.ticks_diff(_port.ticks_ms(), _boot_ms) // 1000
    return int(_port.time()) - _EPOCH_2000


def gmtime(secs=None):
    return _port.gmtime((time() if secs is None else int(secs)) + _EPOCH_2000)


localtime = gmtime  # the board has no time zone


def mktime(t):
    return _port.mktime(t) - _EPOCH_2000
