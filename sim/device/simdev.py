# The simulated board itself: its folder, its settings (sim.json), what the bootloader booted, the
# pending power-cut faults (faults.json) and the one way the board stops at once (reset, power cut).
#
# faults.json holds one fault object or a list of them; each fires at most once and is removed from
# the file when it fires, so the next boot does not repeat it:
#   {"point": "<name>", "count": k}   die the k-th time (default 1) this boot reaches the named point
#   {"cut_at": "<name>"}              the same with count 1
#   {"cut_after_bytes": n}            die once n bytes were programmed this boot (the crossing write
#                                     is applied only up to byte n: a partial program)
#   {"cut_after_ms": t}               die at the first flash operation or named point >= t ms after boot
# Optional in any fault: "boot": b  -> armed only on the b-th boot (1-based, see boot_number()).
# Named points: see POINTS in docs (simflash: erase, program, slot_erase, otadata_erase, otadata_write;
# esp32: set_boot, set_boot_done, mark_valid; simboot: boot).
# Runs under MicroPython (the device process) and CPython (unit tests: there die() raises Died).
import gc
import json
import os
import sys
import time

IS_MICROPYTHON = sys.implementation.name == "micropython"

devdir = None
config = {}
running = None        # label of the slot the simulated bootloader booted
reset_cause = 1       # machine.PWRON_RESET until simboot says otherwise
boot_number = 0       # 1 for the first boot of this device folder
wdt_ms = 0            # the watchdog's timeout once machine.WDT armed it (0: not armed)
soft_reset_requested = False  # machine.soft_reset() raised SystemExit: simboot soft-reboots
rom_reserved = 0      # GC heap bytes simboot holds for the ROMFS image of the frozen modules (flash)
idf_taken = 0         # IDF heap bytes held by open TLS sessions (simssl), gone from idf_heap_info
radio_on = False      # a network.WLAN is active: the chip's RNG is a true one (docs/CHIP.md §12)
_faults = []
_point_counts = {}
_start_ms = 0
_exit_hooks = []      # called by die() before the process ends (simflash saves its counters)


class Died(BaseException):
    # CPython only: stands for the end of the process so unit tests can observe a reset or a cut.
    def __init__(self, marker):
        BaseException.__init__(self, marker)
        self.marker = marker


def path(name):
    return devdir + "/" + name


def read_json(name, default):
    try:
        with open(path(name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(name, value):
    with open(path(name), "w") as f:
        f.write(json.dumps(value))


def init(folder):
    # Called once per process by simboot (or by a test) before any other sim module is used.
    global devdir, config, _faults, _start_ms, boot_number
    devdir = folder.rstrip("/")
    config = read_json("sim.json", {})
    faults = read_json("faults.json", [])
    _faults = faults if isinstance(faults, list) else [faults]
    _point_counts.clear()
    _start_ms = time.ticks_ms() if IS_MICROPYTHON else int(time.monotonic() * 1000)
    boot_number = _count_records("counters.jsonl") + 1


def _count_records(name):
    # Whole records only: a record is one line ending in its only "}"; a process killed while writing
    # its record leaves a torn line, which sim.runner's reader skips too (the boot numbers agree).
    try:
        with open(path(name)) as f:
            return sum(1 for line in f if line.rstrip().endswith("}"))
    except OSError:
        return 0


def _elapsed_ms():
    if IS_MICROPYTHON:
        return time.ticks_diff(time.ticks_ms(), _start_ms)
    return int(time.monotonic() * 1000) - _start_ms


def _armed(fault):
    return fault.get("boot", boot_number) == boot_number


def point(name):
    # A named moment inside the sim: dies here if a fault asks for it. Returns nothing. Kept tiny:
    # it runs at every flash operation, and a MicroPython function with a bigger frame allocates it
    # on the heap at every call, which would show up in the device's allocation measurements.
    if _faults:
        _point(name)


def _point(name):
    count = _point_counts.get(name, 0) + 1
    _point_counts[name] = count
    for fault in _faults:
        if not _armed(fault):
            continue
        wanted = fault.get("point", fault.get("cut_at"))
        if wanted == name and count >= fault.get("count", 1):
            _fire(fault)
        if "cut_after_ms" in fault and _elapsed_ms() >= fault["cut_after_ms"]:
            _fire(fault)


def bytes_allowed(programmed_before, length):
    # How many of the next `length` programmed bytes land before a cut_after_bytes fault fires;
    # `length` when none is pending. The caller programs that many, then calls cut_now().
    for fault in _faults:
        if "cut_after_bytes" in fault and _armed(fault):
            left = fault["cut_after_bytes"] - programmed_before
            if left < length:
                return max(left, 0)
    return length


def cut_now():
    for fault in _faults:
        if "cut_after_bytes" in fault and _armed(fault):
            _fire(fault)


def _fire(fault):
    _faults.remove(fault)
    write_json("faults.json", _faults)
    die("power_cut")


def die(marker):
    # Ends the process at once: no `finally`, no atexit handler of the device code runs.
    # marker -> DEVDIR/last_exit: 'reset', 'wdt', 'soft_reset', 'power_cut', 'panic' (read by the runner and
    # simboot).
    # A real reset cannot fail, so this must not either: the device code may have left the heap nearly
    # full (a MemoryError here would surface in the caller as if the reset had failed).
    gc.collect()
    for hook in _exit_hooks:
        try:
            hook(marker)
        except MemoryError:
            gc.collect()
            hook(marker)
    with open(path("last_exit"), "w") as f:
        f.write(marker)
    if not IS_MICROPYTHON:
        raise Died(marker)
    # The shell's parent is this micropython process: SIGKILL ends it before this call returns.
    os.system("kill -9 $PPID")
    while True:  # never reached; a return would let the caller's code go on
        time.sleep(1)
