# Simulated `machine` for the ESP32-C3 (MicroPython ports/esp32/modmachine.c): reset() ends the
# process at once like esp_restart() (no `finally` runs) and the runner boots the board again.
# reset_cause() reflects how the previous process ended: machine.reset() -> SOFT_RESET (ESP_RST_SW,
# as on the real port), a power cut or first boot -> PWRON_RESET.
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
    # On the board: the VM restarts (boot.py, main.py again) without the bootloader step.
    simdev.die("soft_reset")


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


class WDT:
    # Accepted and fed; the simulated board has no watchdog that fires.
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout

    def feed(self):
        pass
