"""The path to a real board: first flash (esptool) and code deploy (mpy-cross + mpremote), as plans.

A plan is data: the files it compiles and the exact command lines it runs, so `--dry-run` prints
what would happen and the tests check it without a board. `run_plan` carries a plan out.

    plan = flash_plan(repo_root, "/dev/ttyACM0")     # bootloader, table, blank otadata, app in ota_0,
                                                     # the filesystem region blanked
    plan = deploy_plan(repo_root, "/dev/ttyACM0")    # lib/ -> .mpy, boot.py, main.py via mpremote

Nothing here has run against a board (docs/HARDWARE.md says what was and was not tested).
Raises OtaError('missing_build', ...) when a file the plan needs is not built, ('command_failed', ...)
when a command exits non-zero.
"""
import argparse
import importlib.util
import os
import shlex
import subprocess
import sys

from . import REPO, partitions
from ota.errors import OtaError

CHIP = "esp32c3"
BOOTLOADER_OFFSET = 0x0  # the ESP32-C3 ROM loads the 2nd-stage bootloader from 0x0 (ESP32: 0x1000)
FLASH_BAUD = 460800
MPY_ARCH = "rv32imc"
DEPLOY_DIR = os.path.join("build", "deploy")
FIRMWARE_DIR = os.path.join("build", "firmware")


def repo_root_default():
    """The checkout otactl runs from; installed (no checkout beside the package), the current folder:
    the operator runs flash/deploy in the checkout whose firmware they built (build/firmware/)."""
    if os.path.isfile(os.path.join(REPO, "partitions.csv")) and os.path.isdir(os.path.join(REPO, "lib", "ota")):
        return REPO
    return os.getcwd()


def _tool(name):
    # The venv's copy when we run from it, else whatever is on PATH.
    local = os.path.join(os.path.dirname(sys.executable), name)
    return local if os.path.exists(local) else name


def esptool_command():
    """esptool as a module of the Python that runs otactl (the .venv's pinned esptool), never whatever
    `esptool` happens to be first on PATH. Raises OtaError('missing_dependency') when it is absent."""
    if importlib.util.find_spec("esptool") is None:
        raise OtaError("missing_dependency", "esptool is not installed for %s: run make venv" % sys.executable)
    return [sys.executable, "-m", "esptool"]


def filesystem_partition(table):
    """The partition MicroPython mounts as / : the data partition labelled "vfs" (ports/esp32/modules/
    flashbdev.py looks it up by label; "ffat" is TinyUF2's). inisetup.py formats it LittleFS whatever
    its subtype says (our partitions.csv says fat). None when the table has none."""
    found = [p for p in table if p.type == partitions.TYPES["data"] and p.label in ("vfs", "ffat")]
    return found[0] if found else None


def device_modules(repo_root):
    """Every .py under lib/, relative to the repo root, sorted (what the firmware freezes)."""
    found = []
    for top, dirs, files in os.walk(os.path.join(repo_root, "lib")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [os.path.relpath(os.path.join(top, f), repo_root) for f in files if f.endswith(".py")]
    return sorted(found)


def deploy_plan(repo_root, port, frozen=True):
    """lib/**/*.py compiled to build/deploy/lib/**/*.mpy, then copied with boot.py and main.py.

    frozen=True: the firmware freezes umqtt.simple (ours and the official ESP32 builds do);
    frozen=False adds `mpremote mip install umqtt.simple` (it lands in :lib).
    Returns {"compile": [(source, output), ...], "copy": [(local, remote), ...], "commands": [argv]}.
    """
    compile_list = []
    for source in device_modules(repo_root):
        compile_list.append((source, os.path.join(DEPLOY_DIR, source[:-3] + ".mpy")))
    commands = [[_tool("mpy-cross"), "-march=" + MPY_ARCH, "-o", out, src] for src, out in compile_list]
    copy = [(out, ":" + os.path.relpath(out, DEPLOY_DIR)) for _, out in compile_list]
    copy += [("boot.py", ":boot.py"), ("main.py", ":main.py")]
    connect = ["mpremote", "connect", port]
    # `fs cp -r` creates :lib and :lib/ota when missing and copies into them when present.
    commands.append(connect + ["fs", "cp", "-r", os.path.join(DEPLOY_DIR, "lib"), ":"])
    commands.append(connect + ["fs", "cp", "boot.py", "main.py", ":"])
    if not frozen:
        commands.append(connect + ["mip", "install", "umqtt.simple"])
    commands.append(connect + ["reset"])
    return {"compile": compile_list, "copy": copy, "commands": commands}


def flash_plan(repo_root, port, baud=FLASH_BAUD):
    """The first flash of a new board: bootloader at 0x0, our partition table at 0x8000 (from
    partitions.csv), otadata blank (so the bootloader boots ota_0), the app image at ota_0, and the
    filesystem region blank (0xFF). A board that ran stock MicroPython has its filesystem there; at
    our first boot _boot.py fails to mount it and inisetup.py, finding its first sector not blank,
    loops forever printing "The filesystem appears to be corrupted" (ports/esp32/modules/inisetup.py).
    Blank, it is formatted LittleFS at that first boot.

    The command spells its subcommand write_flash: esptool v4 knows only that spelling, v5 still
    accepts it (with a deprecation warning) beside write-flash.

    Returns {"write": [(offset, file)], "generate": {file: bytes}, "commands": [argv]}.
    """
    table = partitions.load(os.path.join(repo_root, "partitions.csv"))
    slots = partitions.ota_slots(table)
    otadata = partitions.otadata_partitions(table)
    if not slots or not otadata:
        raise OtaError("bad_partition_table", "partitions.csv has no OTA slots or no otadata")
    filesystem = filesystem_partition(table)
    if filesystem is None:
        raise OtaError("bad_partition_table", "partitions.csv has no vfs partition for the filesystem")
    table_bin = os.path.join(FIRMWARE_DIR, "partition-table.bin")
    blank_otadata = os.path.join(FIRMWARE_DIR, "otadata-blank.bin")
    blank_filesystem = os.path.join(FIRMWARE_DIR, "vfs-blank.bin")
    write = [
        (BOOTLOADER_OFFSET, os.path.join(FIRMWARE_DIR, "bootloader.bin")),
        (partitions.TABLE_OFFSET, table_bin),
        (otadata[0].offset, blank_otadata),
        (slots[0].offset, os.path.join(FIRMWARE_DIR, "micropython.bin")),
        (filesystem.offset, blank_filesystem),
    ]
    command = esptool_command() + ["--chip", CHIP, "--port", port, "--baud", str(baud), "write_flash"]
    for offset, path in write:
        command += ["0x%x" % offset, path]
    return {"write": write,
            "generate": {table_bin: partitions.to_binary(table), blank_otadata: b"\xff" * otadata[0].size,
                         blank_filesystem: b"\xff" * filesystem.size},
            "commands": [command]}


def print_plan(plan, out=sys.stdout):
    for source, output in plan.get("compile", []):
        print("# compile %s -> %s" % (source, output), file=out)
    for path in sorted(plan.get("generate", {})):
        print("# generate %s (%d bytes)" % (path, len(plan["generate"][path])), file=out)
    for command in plan["commands"]:
        print(shlex.join(command), file=out)


def run_plan(repo_root, plan):
    for path, data in plan.get("generate", {}).items():
        full = os.path.join(repo_root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    for _, output in plan.get("compile", []):
        os.makedirs(os.path.join(repo_root, os.path.dirname(output)), exist_ok=True)
    for _, path in plan.get("write", []):
        if not os.path.exists(os.path.join(repo_root, path)):
            raise OtaError("missing_build", "%s is not built: run `make firmware VERSION=x.y.z` first "
                           "(it needs ESP-IDF and a MicroPython checkout)" % path)
    for command in plan["commands"]:
        argv = [_tool("mpremote")] + command[1:] if command[0] == "mpremote" else command
        try:
            result = subprocess.run(argv, cwd=repo_root)
        except FileNotFoundError:
            raise OtaError("command_failed", "%s is not installed (make venv)" % argv[0])
        if result.returncode != 0:
            raise OtaError("command_failed", "exit %d: %s" % (result.returncode, shlex.join(command)))


def argparse_flash(parser):
    parser.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyACM0")
    parser.add_argument("--baud", type=int, default=FLASH_BAUD)
    parser.add_argument("--dry-run", action="store_true", help="print the esptool command only")
    parser.add_argument("--repo", default=repo_root_default(), help=argparse.SUPPRESS)


def do_flash(args):
    plan = flash_plan(args.repo, args.port, args.baud)
    print_plan(plan)
    if not args.dry_run:
        run_plan(args.repo, plan)
    return 0


def argparse_deploy(parser):
    parser.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyACM0")
    parser.add_argument("--no-frozen", dest="frozen", action="store_false",
                        help="the firmware does not freeze umqtt.simple: install it with mip")
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    parser.add_argument("--repo", default=repo_root_default(), help=argparse.SUPPRESS)


def do_deploy(args):
    plan = deploy_plan(args.repo, args.port, frozen=args.frozen)
    print_plan(plan)
    if not args.dry_run:
        run_plan(args.repo, plan)
    return 0
