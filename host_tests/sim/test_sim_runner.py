"""End-to-end: the real MicroPython binary boots the simulated ESP32-C3 through sim.runner.

The device scripts are custom fs/main.py files (not the project's agent): version 1 writes the
image in fs/new.bin into get_next_update() with writeblocks, set_boot()s it and resets."""
import os

import pytest

from test_sim_image import build_test_image
from sim.runner import Device

from paths import MICROPYTHON
pytestmark = pytest.mark.skipif(not os.path.exists(MICROPYTHON), reason="no micropython binary")


def app(version, pad_to=64 * 1024):
    return build_test_image(version, pad_to=pad_to, files=[("app.py", ("VERSION = %r\nprint('app', VERSION)\n" % version).encode()),
                                      ("pkg/__init__.py", b"NAME = 'pkg'\n")])


UPDATER = """
import esp32, machine, os
import app, pkg
print('running', app.VERSION, 'cause', machine.reset_cause())

def exists(name):
    try:
        os.stat(name)
        return True
    except OSError:
        return False

if app.VERSION == '1.0.0' and not exists('attempted'):
    open('attempted', 'w').close()
    part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
    buf = bytearray(4096)
    block = 0
    with open('new.bin', 'rb') as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            for i in range(n, 4096):
                buf[i] = 0xFF
            part.writeblocks(block, buf)
            block += 1
    part.set_boot()
    print('set_boot done')
    machine.reset()
if app.VERSION == '2.0.0':
    if exists('confirm'):
        esp32.Partition.mark_app_valid_cancel_rollback()
        print('confirmed')
    else:
        machine.reset()
"""


def make(tmp_path, name="dev", main=UPDATER, image=None, **files):
    device = Device(tmp_path / name, max_boots=6)
    fs = {"main.py": main, "new.bin": app("2.0.0")}
    fs.update(files)
    device.create(image if image is not None else app("1.0.0"), fs_files=fs)
    return device


def test_boot_runs_frozen_code_of_the_slot(tmp_path):
    device = make(tmp_path, main="import app, pkg, sys\nprint('path', sys.path[1:3])\n")
    assert device.run(timeout=60) == "exit"  # main.py ended by itself: not "timeout"
    assert "app 1.0.0" in device.console()
    boots = device.boots()
    assert len(boots) == 1 and boots[0]["slot"] == "ota_0" and boots[0]["version"] == "1.0.0"
    assert boots[0]["reset_cause"] == "PWRON_RESET" and boots[0]["exit"] == "exit"
    assert os.path.exists(os.path.join(device.devdir, "frozen", "pkg", "__init__.mpy"))  # precompiled
    assert device.counters()["boots"][0]["erases_by_partition"] == {"otadata": 1}


def test_update_then_confirm_runs_new_code(tmp_path):
    device = make(tmp_path, confirm="")
    assert device.run(timeout=30) == "exit"
    console = device.console()
    assert "set_boot done" in console and "app 2.0.0" in console and "confirmed" in console
    assert "running 2.0.0 cause 2" in console  # machine.reset(): ESP_RST_SW -> HARD_RESET on the port
    assert [(b["slot"], b["state"]) for b in device.boots()] == [("ota_0", "VALID"), ("ota_1", "PENDING_VERIFY")]
    assert device.read_otadata()["slot"] == "ota_1"
    assert device.read_otadata()["entries"][1]["state_name"] == "VALID"
    first = device.counters()["boots"][0]
    image_sectors = (len(app("2.0.0")) + 4095) // 4096
    assert first["erases_by_partition"] == {"otadata": 2, "ota_1": image_sectors}
    assert first["overprogrammed_bytes"] == 0 and first["exit"] == "reset"


def test_reset_without_confirm_rolls_back(tmp_path):
    device = make(tmp_path)
    assert device.run(timeout=30) == "exit"
    boots = device.boots()
    assert [(b["slot"], b["version"]) for b in boots] == [("ota_0", "1.0.0"), ("ota_1", "2.0.0"),
                                                          ("ota_0", "1.0.0")]
    assert [b["exit"] for b in boots] == ["reset", "reset", "exit"]
    assert device.read_otadata()["entries"][1]["state_name"] == "ABORTED"
    assert device.console().count("app 1.0.0") == 2


def test_power_cut_mid_write_boots_old_firmware(tmp_path):
    device = make(tmp_path)
    device.set_fault(cut_after_bytes=20000)
    assert device.run(timeout=30) == "exit"
    boots = device.boots()
    assert [(b["slot"], b["exit"]) for b in boots] == [("ota_0", "power_cut"), ("ota_0", "exit")]
    assert boots[1]["reset_cause"] == "PWRON_RESET"
    assert "set_boot done" not in device.console()
    assert device.counters()["boots"][0]["bytes_programmed"] == 20000  # counts the bootloader's 32 too
    assert device.faults() == []


def test_power_cut_in_otadata_write_boots_old_firmware(tmp_path):
    device = make(tmp_path)
    device.set_fault({"point": "otadata_erase", "count": 1, "boot": 1})
    assert device.run(timeout=30) == "exit"
    boots = device.boots()
    # boot 1's bootloader erased otadata to write its first-boot entry (seq 1): cut there
    assert boots[0] == {"boot": 1, "slot": None, "stage": "bootloader", "exit": "power_cut"}
    assert (boots[1]["slot"], boots[1]["reset_cause"], boots[1]["seq"]) == ("ota_0", "PWRON_RESET", 1)


def test_power_cut_at_set_boot_erase_keeps_old_slot(tmp_path):
    device = make(tmp_path)
    device.set_fault({"point": "otadata_erase", "count": 2})  # 1st: bootloader's seq 1, 2nd: set_boot
    assert device.run(timeout=30) == "exit"
    assert [(b["slot"], b["exit"]) for b in device.boots()] == [("ota_0", "power_cut"), ("ota_0", "exit")]
    assert device.read_otadata()["slot"] == "ota_0"


def test_reset_skips_finally_and_exception_crashes(tmp_path):
    main = ("import machine, os\n"
            "try:\n    os.stat('again')\n    raise RuntimeError('boom')\nexcept OSError:\n    pass\n"
            "open('again', 'w').close()\n"
            "try:\n    machine.reset()\nfinally:\n    print('FINALLY RAN')\n")
    device = make(tmp_path, main=main)
    assert device.run(timeout=30) == "crashed"
    console = device.console()
    assert "FINALLY RAN" not in console and "RuntimeError: boom" in console
    assert [b["exit"] for b in device.boots()] == ["reset", "crashed"]


def test_image_without_payload_crashes_on_import(tmp_path):
    device = make(tmp_path, main="import app\n", image=build_test_image("1.0.0"))
    assert device.run(timeout=30) == "crashed"
    assert "ImportError" in device.console()


def test_two_devices_side_by_side(tmp_path):
    a = make(tmp_path, "a", confirm="")
    b = make(tmp_path, "b")
    a.start()
    b.start()
    assert a.wait(30) == "exit" and b.wait(30) == "exit"
    assert a.read_otadata()["slot"] == "ota_1" and b.read_otadata()["slot"] == "ota_0"


def test_machine_network_ntptime_shadowing(tmp_path):
    main = ("import machine, network, ntptime, esp32\n"
            "w = network.WLAN(network.STA_IF); w.active(True); w.connect('ssid', 'key')\n"
            "import time\nwhile not w.isconnected():\n    time.sleep(0.02)\n"  # connects later
            "print('uid', machine.unique_id().hex(), w.isconnected(), w.config('mac') == machine.unique_id())\n"
            "ntptime.settime()\n"
            "print('heap', esp32.idf_heap_info(esp32.HEAP_DATA))\n")
    device = make(tmp_path, main=main)
    assert device.run(timeout=30) == "exit"
    console = device.console()
    assert "uid a0b1c2d3e4f5 True True" in console and "heap [(" in console
    assert open(os.path.join(device.devdir, "events.log")).read() == "ntptime\n"


def test_wait_for_and_host_power_cut(tmp_path):
    main = "import time\nprint('up')\nwhile True:\n    time.sleep(0.05)\n"
    device = make(tmp_path, main=main)
    device.start()
    device.wait_for(r"^up", timeout=10)
    device.power_cut()
    device.wait_for(lambda line: "cause PWRON_RESET" in line, timeout=10, start=2)
    device.stop()
    assert device.result == "stopped"
    assert device.boots()[0]["exit"] == "power_cut"


WATCHDOG = """
import machine, os, socket, time
def exists(name):
    try:
        os.stat(name)
        return True
    except OSError:
        return False
print('cause', machine.reset_cause())
if not exists('hang'):
    open('hang', 'w').close()
    for args in ((1, 1000), (0, 0), (0, -5)):
        try:
            machine.WDT(*args)
            print('accepted', args)
        except ValueError:
            print('refused', args)
    dog = machine.WDT(timeout=300)
    for i in range(8):  # fed: alive well past 300 ms
        time.sleep_ms(100)
        dog.feed()
    machine.WDT(timeout=1500)  # constructing again changes the timeout
    time.sleep_ms(600)
    print('fed and reconfigured: alive')
    machine.WDT(timeout=200)
    while True:
        pass
elif not exists('socket'):
    open('socket', 'w').close()
    machine.WDT(timeout=300)
    s = socket.socket()
    s.bind(socket.getaddrinfo('127.0.0.1', 0)[0][-1])
    s.listen(1)
    print('blocking in accept')
    s.accept()
print('done')
"""


def test_watchdog_fires_on_a_hang_and_in_a_blocking_socket_call(tmp_path):
    device = make(tmp_path, main=WATCHDOG)
    assert device.run(timeout=60) == "exit"
    console = device.console()
    assert "refused (1, 1000)" in console and "refused (0, 0)" in console and "refused (0, -5)" in console
    assert "fed and reconfigured: alive" in console and "blocking in accept" in console
    assert console.count("Task watchdog got triggered") == 2
    boots = device.boots()
    assert [(b["reset_cause"], b["exit"]) for b in boots] == [
        ("PWRON_RESET", "wdt"), ("WDT_RESET", "wdt"), ("WDT_RESET", "exit")], boots
    assert "cause 3" in console  # machine.WDT_RESET


SOFT_RESET = """
import machine, os, time
print('cause', machine.reset_cause())
try:
    os.stat('again')
except OSError:
    open('again', 'w').close()
    machine.WDT(timeout=400)
    try:
        machine.soft_reset()
    finally:
        print('finally ran')
if machine.reset_cause() == machine.SOFT_RESET:
    print('soft: not feeding')
    while True:
        time.sleep_ms(50)
print('done')
"""


def test_soft_reset_runs_finally_reruns_main_and_keeps_the_watchdog(tmp_path):
    device = make(tmp_path, main=SOFT_RESET)
    assert device.run(timeout=60) == "exit"
    console = device.console()
    assert "finally ran" in console and "soft: not feeding" in console and "cause 5" in console
    boots = device.boots()
    assert [(b["reset_cause"], b["soft"], b["exit"]) for b in boots] == [
        ("PWRON_RESET", False, "soft_reset"), ("SOFT_RESET", True, "wdt"), ("WDT_RESET", False, "exit")], boots
    # The soft reset skipped the bootloader step: only the first boot's bootloader wrote otadata.
    assert device.counters()["boots"][1]["erases_by_partition"] == {}


def test_exception_with_the_watchdog_armed_ends_in_a_watchdog_reset(tmp_path):
    # Out of main.py the board sits at the REPL, which does not feed the watchdog.
    main = ("import machine, os\n"
            "try:\n    os.stat('again')\nexcept OSError:\n    open('again', 'w').close()\n"
            "    machine.WDT(timeout=300)\n    raise RuntimeError('boom')\n")
    device = make(tmp_path, main=main)
    assert device.run(timeout=30) == "exit"
    assert "RuntimeError: boom" in device.console()
    assert [(b["reset_cause"], b["exit"]) for b in device.boots()] == [("PWRON_RESET", "wdt"),
                                                                      ("WDT_RESET", "exit")]
