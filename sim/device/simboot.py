# One power-on of the simulated ESP32-C3:
#   `micropython -X heapsize=N+R sim/device/simboot.py DEVDIR [N R]`
# simstart does the bootloader step (otadata rules, image verification) and unpacks the booted
# image's payload into DEVDIR/frozen/ (compiled to .mpy, and packed as the ROMFS image
# DEVDIR/frozen.romfs); it is then dropped from the heap. sys.path is set as on the board (sim
# modules first so they shadow the Unix port's machine/network...), cwd = DEVDIR/fs, then boot.py and
# main.py run.
# Frozen code: on the board it is bytecode in flash and never enters the GC heap. Given N (the
# device's heap, bytes) and R (room the runner added to -X heapsize for the ROM), this process takes
# that room first, as one block at the bottom of a still empty heap, reads the ROMFS image into it
# and mounts it (vfs.VfsRom) where the frozen modules are: imports then run their bytecode in place
# (sim/device/simromfs.py), and the device code gets a heap of about N bytes, as -X heapsize=N would
# give without the ROM. Without N and R (or with "romfs": false in sim.json), the .mpy files are
# imported from DEVDIR/frozen/ into the GC heap, as before.
# The process ends with DEVDIR/last_exit = reset | wdt | soft_reset | power_cut (the runner
# boots again), crashed (exception out of main.py: exit status 3), no_app (status 4), exit (status 0).
import gc
import os
import sys
import time

_rom = None
if len(sys.argv) > 3:
    gc.collect()
    _total = gc.mem_alloc() + gc.mem_free()
    _own = int(sys.argv[2])
    # What the GC gives for N is about proportional to N (its tables take a fixed share); the
    # bytearray's own object takes 32 bytes beside its data.
    _rom = bytearray(_total - _total * _own // (_own + int(sys.argv[3])) - 32)
    _total = _own = None

_here = sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else "."
DEVICE_DIR = _here if _here.startswith("/") else os.getcwd() + "/" + _here
REPO = DEVICE_DIR.rsplit("/", 2)[0]
sys.path[:] = [DEVICE_DIR]
DEVDIR = sys.argv[1] if sys.argv[1].startswith("/") else os.getcwd() + "/" + sys.argv[1]
DEVDIR = DEVDIR.rstrip("/")

import simstart  # noqa: E402  (needs sys.path above)

simstart.power_on(DEVDIR, REPO)
simstart = None
for _name in ("simstart", "simbootloader", "simpayload"):
    del sys.modules[_name]

import simdev  # noqa: E402
import simflash  # noqa: E402


def _mount_rom():
    # -> True when the booted image's frozen modules are mounted at /rom (see the top of this file).
    # simdev.rom_reserved: the heap the room takes (flash on the board), for probes of the heap tax.
    simdev.rom_reserved = 0 if _rom is None else len(_rom) + 32
    path = DEVDIR + "/frozen.romfs"
    try:
        size = os.stat(path)[6]
    except OSError:
        size = None
    if _rom is not None and size is not None and size > len(_rom):
        print("W (boot) ROMFS image of %d bytes > the %d the runner reserved: frozen code goes to the heap"
              % (size, len(_rom)))
    if _rom is None or size is None or size > len(_rom):
        return False  # the reserved room stays taken: the device's heap is still about N
    import vfs

    view = memoryview(_rom)[:size]
    with open(path, "rb") as f:
        done = 0
        while done < size:
            done += f.readinto(view[done:])
    vfs.mount(vfs.VfsRom(view), "/rom")
    return True


_ROM_MOUNTED = _mount_rom()

if simdev.wdt_ms:  # armed before a soft reset: the chip's watchdog is still running
    import machine  # noqa: F401


def _run_file(name):
    # Like pyexec_file: runs fs/<name> as __main__. Returns False when the file does not exist.
    try:
        with open(name) as f:
            source = f.read()
    except OSError:
        return False
    code = compile(source, name, "exec")
    source = None
    gc.collect()
    exec(code, {"__name__": "__main__"})
    return True


def _finish(marker, status):
    if simdev.wdt_ms and marker in ("crashed", "exit"):
        # The board would sit at the REPL now, which does not feed the watchdog: it resets the
        # board within its timeout (machine.py's thread ends this process with "wdt").
        print("MPY: at the REPL with the watchdog armed (%d ms)" % simdev.wdt_ms)
        while True:
            time.sleep(1)
    simflash.save_counters(marker)
    with open(simdev.path("last_exit"), "w") as f:
        f.write(marker)
    sys.exit(status)


def _main():
    os.chdir(DEVDIR + "/fs")
    # As on the board: frozen modules (the port's own, like ssl, in ".frozen"; ours from the image)
    # before /lib.
    frozen = "/rom" if _ROM_MOUNTED else DEVDIR + "/frozen"
    sys.path[:] = [DEVICE_DIR, "", ".frozen", frozen, "lib", REPO + "/.mpy_packages"]
    gc.collect()
    try:
        try:
            _run_file("boot.py")
        except Exception as e:  # the port prints boot.py errors and still runs main.py
            sys.print_exception(e)
        _run_file("main.py")
    except (SystemExit, KeyboardInterrupt):
        if simdev.soft_reset_requested:  # machine.soft_reset(): boot.py and main.py again
            record = simdev.read_json("running.json", {})
            record["wdt_ms"] = simdev.wdt_ms  # an armed watchdog survives a soft reset
            simdev.write_json("running.json", record)
            _finish("soft_reset", 0)
    except BaseException as e:
        sys.print_exception(e)
        _finish("crashed", 3)
    _finish("exit", 0)


_main()
