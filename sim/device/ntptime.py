# Simulated `ntptime`: the host clock is already right, so settime() only records the call
# (`calls`, and one line "ntptime" in DEVDIR/events.log) for the tests that check the device sets
# its clock before verifying certificates.
import simdev

host = "pool.ntp.org"
timeout = 1
calls = 0


def time():
    import time as _time
    return _time.time()


def settime():
    global calls
    calls += 1
    with open(simdev.path("events.log"), "a") as f:
        f.write("ntptime\n")
