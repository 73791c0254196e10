# The simulated ESP32-C3's power-on after simboot.py took the ROM room: the bootloader step
# (simstart, then dropped from the heap), the frozen modules' ROMFS image mounted at /rom, boot.py
# and main.py. See simboot.py.
import gc
import os
import sys
import time

# The modules the device keeps, imported before simstart's, which are dropped after the bootloader
# step: what they leave behind is then one free stretch, not holes between these.
import simdev
import simflash
import simtable  # noqa: F401
import simimage  # noqa: F401

_rom = None
_rom_used = 0  # bytes of the room holding the sim's own modules' image
DEVICE_DIR = REPO = DEVDIR = None
_ROM_MOUNTED = False


def _mount_image(path, at):
    # Reads the ROMFS image at path into the room, 16-aligned; mounts it at `at`. -> bytes taken, or 0.
    try:
        size = os.stat(path)[6]
    except OSError:
        return 0
    start = (_rom_used + 15) // 16 * 16
    if start + size > len(_rom):
        print("W (boot) ROMFS image %s of %d bytes does not fit the %d the runner reserved: its code goes"
              " to the heap" % (path, size, len(_rom) - start))
        return 0
    import vfs

    view = memoryview(_rom)[start:start + size]
    with open(path, "rb") as f:
        done = 0
        while done < size:
            done += f.readinto(view[done:])
    vfs.mount(vfs.VfsRom(view), at)
    return start + size


def _mount_rom():
    # -> True when the booted image's frozen modules are mounted at /rom (see simboot.py).
    # simdev.rom_reserved: the heap the room takes (flash on the board), for probes of the heap tax.
    simdev.rom_reserved = 0 if _rom is None else len(_rom) + 32
    return _rom is not None and _mount_image(DEVDIR + "/frozen.romfs", "/rom") > 0


def boot(rom, rom_used, here):
    # rom: the room (None without one); rom_used: bytes of it the sim's image takes; here: the
    # folder of simboot.py (sim/device, relative or absolute).
    global _rom, _rom_used, DEVICE_DIR, REPO, DEVDIR, _ROM_MOUNTED
    _rom, _rom_used = rom, rom_used
    folder = here if here.startswith("/") else os.getcwd() + "/" + here
    REPO = folder.rsplit("/", 2)[0]
    DEVICE_DIR = "/simrom" if rom_used else folder
    DEVDIR = sys.argv[1] if sys.argv[1].startswith("/") else os.getcwd() + "/" + sys.argv[1]
    DEVDIR = DEVDIR.rstrip("/")
    import simstart

    simstart.power_on(DEVDIR, REPO)
    simstart = None
    for name in ("simstart", "simbootloader"):
        sys.modules.pop(name, None)
    _ROM_MOUNTED = _mount_rom()
    if simdev.wdt_ms:  # armed before a soft reset: the chip's watchdog is still running
        import machine  # noqa: F401
    _main()


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

