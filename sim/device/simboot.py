# One power-on of the simulated ESP32-C3: `micropython -X heapsize=64wK sim/device/simboot.py DEVDIR`.
# simstart does the bootloader step (otadata rules, image verification) and unpacks the booted
# image's payload into DEVDIR/frozen/; it is then dropped from the heap. sys.path is set as on the
# board (sim modules first so they shadow the Unix port's machine/network...), cwd = DEVDIR/fs,
# then boot.py and main.py run.
# The process ends with DEVDIR/last_exit = reset | wdt | soft_reset | power_cut (the runner
# boots again), crashed (exception out of main.py: exit status 3), no_app (status 4), exit (status 0).
import gc
import os
import sys
import time

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
    sys.path[:] = [DEVICE_DIR, "", ".frozen", DEVDIR + "/frozen", "lib", REPO + "/.mpy_packages"]
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
