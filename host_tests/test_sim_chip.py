"""The simulator is no kinder than the chip (docs/CHIP.md): each test runs the real MicroPython binary on
the simulated ESP32-C3 with a small fs/main.py that does what the chip punishes, and checks the chip's
answer. Each of them failed on the simulator before it modelled that fact."""
import os

import pytest

from test_sim_runner import app
from sim.runner import Device

MICROPYTHON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv", "bin",
                           "micropython")
pytestmark = pytest.mark.skipif(not os.path.exists(MICROPYTHON), reason="no micropython binary")


def make(tmp_path, main, max_boots=4, **settings):
    device = Device(tmp_path / "dev", max_boots=max_boots)
    device.create(app("1.0.0"), fs_files={"main.py": main}, **settings)
    return device


# --- writing the running slot: a panic before flash is touched ------------------------------------
RUNNING_WRITE = """
import esp32, machine, os
print('cause', machine.reset_cause())
try:
    os.stat('tried')
except OSError:
    open('tried', 'w').close()
    running = esp32.Partition(esp32.Partition.RUNNING)
    try:
        running.%s
    except OSError as e:
        print('refused', e)
    print('still running')
"""


@pytest.mark.parametrize("call", ["writeblocks(1, bytearray(4096))", "writeblocks(1, b'\\\\x00' * 16, 0)",
                                  "ioctl(6, 1)"])
def test_touching_the_running_app_panics_before_flash_is_touched(tmp_path, call):
    device = make(tmp_path, RUNNING_WRITE % call)
    running = device.partition("ota_0")
    before = device.read_flash(running.offset, 3 * 4096)
    assert device.run(timeout=30) == "exit"
    console = device.console()
    assert "still running" not in console and "refused" not in console
    assert "abort() was called" in console
    boots = device.boots()
    assert [b["exit"] for b in boots] == ["panic", "exit"]
    assert boots[1]["reset_cause"] == "HARD_RESET" and boots[1]["slot"] == "ota_0"
    assert device.read_flash(running.offset, 3 * 4096) == before
    assert device.counters()["boots"][0]["erases_by_partition"].get("ota_0", 0) == 0
