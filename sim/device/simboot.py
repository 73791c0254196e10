# One power-on of the simulated ESP32-C3:
#   `micropython -X heapsize=N+R sim/device/simboot.py DEVDIR [N R [SIM_ROMFS]]`
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
# This script is only the first step, kept small (its compile leaves garbage among what it keeps):
# it takes the room and mounts the simulator's own modules' image (sim.runner.sim_rom_image; on the
# board they are C), then simmain.py does the rest.
# The process ends with DEVDIR/last_exit = reset | wdt | soft_reset | power_cut (the runner
# boots again), crashed (exception out of main.py: exit status 3), no_app (status 4), exit (status 0).
import gc
import sys

_rom = None
_used = 0
if len(sys.argv) > 3:
    gc.collect()
    _total = gc.mem_alloc() + gc.mem_free()
    _own = int(sys.argv[2])
    # What the GC gives for N is about proportional to N (its tables take a fixed share); the
    # bytearray's own object takes 32 bytes beside its data.
    _rom = bytearray(_total - _total * _own // (_own + int(sys.argv[3])) - 32)
    _total = _own = None
    if len(sys.argv) > 4:
        import os
        import vfs

        _used = os.stat(sys.argv[4])[6]
        if _used > len(_rom):
            _used = 0
        else:
            _view = memoryview(_rom)[:_used]
            with open(sys.argv[4], "rb") as _f:
                _f.readinto(_view)
            vfs.mount(vfs.VfsRom(_view), "/simrom")
            _view = _f = None

_here = sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else "."
sys.path[:] = ["/simrom" if _used else _here]

import simmain  # noqa: E402

simmain.boot(_rom, _used, _here)
