"""otactl: the operator's tool. A command table in mpremote's shape: name -> (do_x, argparse_x).

Each command lives in its own module; handlers take the parsed args and raise OtaError (the device's
own error type, lib/ota/errors.py) on failure, which prints as `otactl: reason: detail` on stderr with
exit status 1, after stdout is flushed (as mpremote does), so the error comes after what was printed.
Modules are imported only when their command runs, so `otactl --help` stays fast.

`demo` and `sim` are the dev kit's (devkit/, a checkout of the repository): otactl forwards to it when
it can be imported and otherwise says how to get it (devkit_missing). otactl never imports it at the
top: the operator's tool stands without the kit.
"""
import argparse
import importlib
import signal
import sys

from ota.errors import OtaError

# name -> (module, handler, argparse builder, one-line help)
COMMANDS = {
    "image": ("otactl.cmd_image", "do_image", "argparse_image", "build or inspect ESP32-C3 app images"),
    "release": ("otactl.cmd_release", "do_release", "argparse_release", "check an image and publish a versioned release"),
    "serve": ("otactl.cmd_serve", "do_serve", "argparse_serve", "development HTTPS server with Range support"),
    "trigger": ("otactl.cmd_fleet", "do_trigger", "argparse_trigger", "publish an OTA trigger"),
    "status": ("otactl.cmd_fleet", "do_status", "argparse_status", "fleet status from the retained state topics"),
    "announce": ("otactl.announce", "do_announce", "argparse_announce", "retained release announcement for Home Assistant's Install"),
    "report": ("otactl.report", "do_report", "argparse_report", "update times, failures by reason, rollbacks, silent devices"),
    "rollout": ("otactl.cmd_rollout", "do_rollout", "argparse_rollout", "staged rollout with failure thresholds"),
    "revert": ("otactl.cmd_rollout", "do_revert", "argparse_revert", "send devices back to their other slot"),
    "flash": ("otactl.cmd_device", "do_flash", "argparse_flash", "first flash of a new board with esptool"),
    "provision": ("otactl.cmd_device", "do_provision", "argparse_provision", "write a device's config with mpremote"),
    "deploy": ("otactl.cmd_device", "do_deploy", "argparse_deploy", "copy compiled device code with mpremote"),
    "keys": ("otactl.cmd_keys", "do_keys", "argparse_keys", "Ed25519 keys that sign OTA triggers"),
    "sim": ("devkit.simwatch", "do_sim", "argparse_sim", "run a simulated ESP32-C3 (dev kit)"),
    "demo": ("devkit.demo", "do_demo", "argparse_demo", "the whole OTA cycle on a simulated device (dev kit)"),
}


DEVKIT_MISSING = ("the dev kit (devkit/: demo, simulated devices, synthetic images) is not installed "
                  "with otactl; it runs from a checkout of the repository: `make demo`, `make sim`, or "
                  "`python -m devkit demo|sim` there")


def devkit_module(name):
    """devkit.<name>, imported on demand. Raises OtaError devkit_missing when the dev kit is absent."""
    try:
        return importlib.import_module("devkit." + name)
    except ImportError as e:
        if (e.name or "").split(".")[0] not in ("devkit", "sim"):
            raise  # the kit is there but something it needs is not: not_available, with the name
        raise OtaError("devkit_missing", DEVKIT_MISSING)


def _load(name):
    module_name, handler, builder, _ = COMMANDS[name]
    try:
        if module_name.startswith("devkit."):
            module = devkit_module(module_name[len("devkit."):])
        else:
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise OtaError("not_available", "command %r is not available: %s" % (name, e))
    return getattr(module, handler), getattr(module, builder)


def build_parser(only=None):
    parser = argparse.ArgumentParser(prog="otactl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, _, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        handler, builder = _load(name)
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        builder(command_parser)
        command_parser.set_defaults(handler=handler)
    return parser


def _flush_stdout():
    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # a closed pipe or a closed stdout: the error still goes to stderr
        pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so commands that started a broker, a
    # server or a simulated device stop them on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        wanted = argv[0] if argv and argv[0] in COMMANDS else None
        parser = build_parser(only=wanted or "")
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 0 if not argv else 1
        result = args.handler(args)
        return result or 0
    except OtaError as e:
        _flush_stdout()  # what the command printed comes before its error, even through a pipe
        print("otactl: %s" % e, file=sys.stderr)
        return 1
    except BrokenPipeError:  # `otactl ... | head`
        return 0
    except KeyboardInterrupt:
        _flush_stdout()
        print("otactl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
