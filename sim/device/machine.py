# Simulated `machine` for the ESP32-C3 (MicroPython ports/esp32/modmachine.c, machine_wdt.c).
# reset() ends the process at once like esp_restart() (no `finally` runs) and the runner boots the
# board again. reset_cause() reflects how the previous process ended, as the port maps
# esp_reset_reason(): machine.reset() (ESP_RST_SW) -> HARD_RESET, the watchdog (ESP_RST_TASK_WDT) ->
# WDT_RESET, a power cut or first boot -> PWRON_RESET, soft_reset() -> SOFT_RESET (the port's
# is_soft_reset flag). docs/HARDWARE.md "Watchdog and reset causes" has the sources.
import time

import simdev

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


def reset():
    simdev.die("reset")


def soft_reset():
    # On the board this is sys.exit(): SystemExit unwinds (finally blocks run), the port leaves
    # main.py, sets is_soft_reset and runs boot.py and main.py again in the same chip state: no
    # bootloader step, and an armed watchdog stays armed. simboot ends the process with
    # "soft_reset" when it sees the flag (a plain sys.exit() in the sim ends the run instead).
    simdev.soft_reset_requested = True
    raise SystemExit


def reset_cause():
    return simdev.reset_cause


def unique_id():
    # 6 bytes (the eFuse MAC): sim.json "unique_id" as hex.
    return bytes.fromhex(simdev.config.get("unique_id", "a0b1c2d3e4f5"))


def freq(hz=None):
    return 160000000 if hz is None else None


def idle():
    time.sleep_ms(1) if hasattr(time, "sleep_ms") else time.sleep(0.001)


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self._value = value or 0

    def value(self, v=None):
        if v is None:
            return self._value
        self._value = 1 if v else 0

    def on(self):
        self._value = 1

    def off(self):
        self._value = 0


# The task watchdog as machine_wdt.c sets it up on the ESP32-C3 (MicroPython >= 1.21, IDF 5): one
# watchdog (id 0 only), timeout in ms > 0, no deinit and no way to stop it; constructing it again
# reconfigures the timeout (esp_task_wdt_reconfigure) and returns the same object; feed() resets it.
# On expiry the IDF panics (trigger_panic) and restarts: the next boot's reset_cause() is WDT_RESET.
# Here a thread of the device process checks the deadline, so a hang anywhere fires it: a busy loop,
# or a blocking socket call (the Unix port's syscalls let other threads run).
_wdt = [0, 0]  # [timeout ms (0: not armed), ticks_ms of the last feed]; list items: one store each
_wdt_thread = []


def _ticks():
    return time.ticks_ms()


def _wdt_watch():
    while True:
        time.sleep_ms(50)
        if time.ticks_diff(time.ticks_ms(), _wdt[1]) > _wdt[0]:
            print("E (task_wdt) Task watchdog got triggered. The following tasks/users did not reset"
                  " the watchdog in time:\nE (task_wdt)  - mpy_machine_wdt\nE (task_wdt) Aborting.")
            simdev.die("wdt")


def _arm(timeout):
    _wdt[1] = _ticks()
    _wdt[0] = timeout
    simdev.wdt_ms = timeout  # kept over a soft reset (running.json), as the chip keeps it running
    if not _wdt_thread:
        import _thread

        _wdt_thread.append(_thread.start_new_thread(_wdt_watch, ()))


class WDT:
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError()
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        _arm(timeout)

    def feed(self):
        _wdt[1] = _ticks()


if simdev.wdt_ms:  # armed before a soft reset: still running
    _arm(simdev.wdt_ms)
