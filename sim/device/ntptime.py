# Simulated `ntptime` (micropython-lib's, frozen in the ESP32 firmware): settime() sets the simulated
# RTC (time.py: from 2000-01-01 + uptime to the real time), which certificate checks need
# (ssl.py). NTP is UDP over the Wi-Fi: it fails. sim.json "ntp_failures": N makes the first N calls
# of each boot raise OSError(ETIMEDOUT), as ntptime's socket.recv timeout does on the board (its
# getaddrinfo can fail too). Every call is recorded: `calls`, and one line "ntptime" (or
# "ntptime failed") in DEVDIR/events.log for the tests.
import errno

import simdev

host = "pool.ntp.org"
timeout = 1
calls = 0


def time():
    # The NTP server's time in seconds since the 2000 epoch, as the ESP32's ntptime.time() returns it.
    import time as _time
    return int(_time._port.time()) - _time._EPOCH_2000


def settime():
    global calls
    calls += 1
    failed = calls <= simdev.config.get("ntp_failures", 0)
    with open(simdev.path("events.log"), "a") as f:
        f.write("ntptime failed\n" if failed else "ntptime\n")
    if failed:
        raise OSError(errno.ETIMEDOUT)
    import time as _time
    _time.set_clock()
