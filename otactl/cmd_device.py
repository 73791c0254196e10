"""`otactl provision` and `otactl deploy`: put a config and code on a real board with mpremote.

provision validates the config with the device's own module (lib/ota/config.py, loaded from the
repo's lib/), so a config that would not validate on the device is never written:

    otactl provision --port /dev/ttyACM0 --config my.json --ca ca.der [--pubkey key.hex] [--dry-run]
    otactl: bad_config: mqtt.port: must be 1..65535, got 0        (exit 1, nothing written)

The file written to :config.json holds only the given overrides (plus the public key from --pubkey),
so the device keeps taking every other default from the code it runs.
"""
import argparse
import json
import os
import shlex
import sys
import tempfile

from . import deploy
from .deploy import argparse_deploy, argparse_flash, do_deploy, do_flash  # noqa: F401  (the command table imports them here)
from ota.errors import OtaError


def device_config_module(repo_root=None):
    """lib/ota/config.py as the device runs it (lib/ on sys.path, imported as ota.config)."""
    lib = os.path.join(repo_root or deploy.repo_root_default(), "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)
    from ota import config  # needs lib/ on sys.path (above)

    return config


def _read(path, what, mode="rb"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError as e:
        raise OtaError("bad_config", "%s: cannot read %s: %s" % (what, path, e.strerror))


def _check_der(blob, path):
    if blob.startswith(b"-----BEGIN"):
        raise OtaError("bad_config", "%s is PEM; the device loads DER: "
                       "openssl x509 -in %s -outform der -out ca.der" % (path, path))
    if blob[:1] != b"\x30":
        raise OtaError("bad_config", "%s is not a DER certificate (no ASN.1 SEQUENCE)" % path)


def provision_plan(repo_root, port, config_path, ca=None, pubkey=None):
    """Validate, then return {"config": text to write, "files": [(local, remote)], "commands": [argv]}.
    The config text is written to a temporary file by run; "<config.json>" stands for it."""
    config = device_config_module(repo_root)
    text = _read(config_path, "--config", "r")
    try:
        overrides = json.loads(text)
    except ValueError as e:
        raise OtaError("bad_config", "%s: not valid JSON: %s" % (config_path, e))
    if not isinstance(overrides, dict):
        raise OtaError("bad_config", "config: must be a JSON object")
    if pubkey:
        key = _read(pubkey, "--pubkey", "r").strip()
        overrides.setdefault("ota", {})
        if not isinstance(overrides["ota"], dict):
            raise OtaError("bad_config", "ota: must be an object of settings")
        overrides["ota"]["signing_pubkey"] = key
    merged = config.validate(config.merge(overrides), complete=True)  # the device's OtaError bad_config
    files = []
    if ca:
        _check_der(_read(ca, "--ca"), ca)
        targets = [merged["ota"]["ca_path"]]
        if merged["mqtt"]["tls"] and merged["mqtt"]["ca_path"] not in targets:
            targets.append(merged["mqtt"]["ca_path"])
        files += [(ca, ":" + t.lstrip("/")) for t in targets]
    connect = ["mpremote", "connect", port]
    commands = [connect + ["fs", "cp", "<config.json>", ":config.json"]]
    commands += [connect + ["fs", "cp", local, remote] for local, remote in files]
    # The device reads config.json at boot and its CA once per boot (the update's TLS context, made
    # after the first connect): a reset, so that what was just written is what runs.
    commands.append(connect + ["reset"])
    return {"config": json.dumps(overrides, sort_keys=True), "merged": merged, "files": files,
            "commands": commands}


def argparse_provision(parser):
    parser.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyACM0")
    parser.add_argument("--config", required=True, help="JSON with the settings that differ from the defaults")
    parser.add_argument("--ca", help="CA certificate (DER) for the firmware server (and the broker with mqtt.tls)")
    parser.add_argument("--pubkey", help="hex Ed25519 public key file: sets ota.signing_pubkey")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the mpremote commands only")
    parser.add_argument("--repo", default=deploy.repo_root_default(), help=argparse.SUPPRESS)


def do_provision(args):
    plan = provision_plan(args.repo, args.port, args.config, args.ca, args.pubkey)
    config = device_config_module(args.repo)
    print("# config (secrets masked): %s" % json.dumps(config.redacted(plan["merged"]), sort_keys=True))
    for command in plan["commands"]:
        print(shlex.join(command))
    if args.dry_run:
        return 0
    handle, staged = tempfile.mkstemp(prefix="otactl-config-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as f:  # mkstemp: mode 0600, the file holds the Wi-Fi password
            f.write(plan["config"])
        commands = [[staged if part == "<config.json>" else part for part in c] for c in plan["commands"]]
        deploy.run_plan(args.repo, {"commands": commands})
    finally:
        os.unlink(staged)
    return 0
