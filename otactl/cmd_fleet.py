"""`otactl trigger` and `otactl status`: one trigger by hand, and the fleet from its retained states.

    otactl trigger --manifest releases/firmware-v1.0.1.json --device a0b1c2d3e4f5
    otactl trigger --url https://host/fw.bin --sha256 ... --size 1462272 --version 1.0.1 --all
    otactl status [--watch] [--timeout S] [--json]

A trigger is the seed guide's {"type": "ota_trigger", "url": ...} plus sha256, size, version and a
job id, checked with the device's own parser before it goes out, published with QoS 1 and NOT
retained: a retained trigger is handed out again by the broker at every subscribe, i.e. after every
reboot and reconnect of every device, for as long as it stays on the topic. A device joining the
fleet next year would install today's release; a trigger retained for a release that later proved
bad keeps offering it, and on the root topic it reaches every device at once, bypassing any staged
rollout. The job id guards against re-running (the device remembers its last 16 ids), but only
for as long as the id is remembered. One-shot delivery is what QoS 1 without retain gives.
"""
import json
import sys
import time

from . import mqtt, values
from .cmd_release import load_manifest
from ota.errors import OtaError
from .devstate import check_id, show
from .fleet import Fleet
from .messages import encode, load_sign_key, new_job_id, trigger_message

_BAR = 20


def argparse_trigger(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="release manifest (from `otactl release`)")
    source.add_argument("--url", help="firmware URL (then --sha256/--size/--version as known)")
    parser.add_argument("--sha256", help="SHA-256 of the image, 64 hex characters")
    parser.add_argument("--size", type=int, help="image size in bytes")
    parser.add_argument("--version", help="the image's version (the device checks it)")
    parser.add_argument("--project", help="install an image of another project_name on purpose (the "
                        "name, or * for any; devices refuse one otherwise: wrong_product)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", action="append", metavar="ID",
                     help="device id (repeatable): publishes on /switch/cmd/<id>")
    who.add_argument("--all", action="store_true", help="every device: publishes on /switch/cmd/root")
    parser.add_argument("--job", help="job id (default: generated; the device runs a job id once)")
    parser.add_argument("--force", action="store_true",
                        help="send to device ids that have no retained state on the broker")
    parser.add_argument("--sign-key", metavar="KEY", help="sign the trigger (otactl/signing.py)")
    parser.add_argument("--snapshot-timeout", type=float, default=5.0, metavar="S",
                        help="how long to wait for the retained states (default 5)")
    mqtt.add_arguments(parser)


def _trigger_fields(args):
    if args.manifest:
        if args.sha256 or args.size or args.version:
            raise OtaError("bad_arguments", "--sha256/--size/--version come from the manifest with --manifest")
        m = load_manifest(args.manifest)
        return m["url"], m["sha256"], m["size"], m["version"]
    sha256 = args.sha256.lower() if args.sha256 else None
    return args.url, sha256, args.size, args.version


def do_trigger(args):
    url, sha256, size, version = _trigger_fields(args)
    job = args.job or new_job_id("v%s" % version.lstrip("vV") if version else "job")
    message, payload = trigger_message(url, sha256, size, version, job,  # checked before connecting
                                       project=args.project)
    values.seconds("--snapshot-timeout", args.snapshot_timeout)
    key = load_sign_key(args.sign_key) if args.sign_key else None
    devices = [check_id(d) for d in dict.fromkeys(args.device or ())]  # "root" would be --all
    with mqtt.connect(args) as conn:
        if args.device:
            if not args.force:
                fleet = Fleet().snapshot(conn, args.snapshot_timeout)
                fleet.check_known(devices)
                for d in devices:
                    if not fleet.get(d).online:
                        print("note: %s is offline: the trigger waits in its session only if it "
                              "connected with a persistent session" % d, file=sys.stderr)
            sends = [(mqtt.cmd_topic(d), d) for d in devices]
        else:
            sends = [(mqtt.CMD_ROOT, "*")]
        for topic, target in sends:
            # a signed per-device trigger names its device: replayed elsewhere it is refused
            data = payload if key is None else encode(message, key, target)[1]
            conn.publish(topic, data, qos=1, retain=False)
            print("%s <- %s" % (topic, data.decode()))
    topics = sends
    print("job %s sent to %d topic(s); follow it with `otactl status --watch`" % (job, len(topics)))
    return 0


def argparse_status(parser):
    parser.add_argument("--watch", action="store_true", help="keep updating until Ctrl-C or --timeout")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="with --watch: stop after S seconds; else: wait S for the retained states")
    parser.add_argument("--json", action="store_true", help="one JSON object per device instead")
    mqtt.add_arguments(parser)


def _ago(ts, now):
    if ts is None:
        return "-"
    seconds = max(0, int(now - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "%d%s ago" % (seconds // size, unit)
    return "%ds ago" % seconds


def _bar(progress):
    if not isinstance(progress, (int, float)) or isinstance(progress, bool):
        return ""
    filled = int(max(0, min(100, progress)) * _BAR // 100)
    return "%s%s %3d%%" % ("#" * filled, "." * (_BAR - filled), progress)


_STATE_STYLE = {"ok": "green", "failed": "red", "rolled_back": "red", "offline": "dim",
                "downloading": "cyan", "verifying": "cyan", "rebooting": "yellow", "confirming": "yellow"}


def table(fleet, now=None):
    """The status table. Every cell is a rich Text, never markup: a device's "[/]" or "[red]" is
    shown as it is, and show() escapes what a terminal would act on."""
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    devices = fleet.sorted()
    counts = fleet.counts("state")
    versions = fleet.counts("version")
    caption = "%d devices: %s | versions: %s" % (
        len(devices), ", ".join("%s %d" % (k, n) for k, n in sorted(counts.items(), key=str)),
        ", ".join("%s %d" % (show(k), n) for k, n in sorted(versions.items(), key=str)))
    if fleet.rejected:
        caption += " | refused: %d (%s)" % (len(fleet.rejected), "; ".join(
            "%s %s" % item for item in sorted(fleet.rejected.items())[:5]))
    out = Table(caption=Text(caption), caption_justify="left")
    for name in ("device", "version", "slot", "state", "progress", "job", "reason", "last seen"):
        out.add_column(name, no_wrap=True)
    for d in devices:
        state = d.state or "?"
        reason = d.reason or ""
        if d.detail and state in ("failed", "rolled_back"):
            reason += " (%s)" % d.detail[:40]
        cells = (d.id, d.version or "-", d.slot or "-", state,
                 _bar(d.progress) if state in ("downloading", "verifying") else "", d.job or "", reason,
                 _ago(d.last_seen, now))
        row = [Text(show(cell)) for cell in cells]
        row[3].stylize(_STATE_STYLE.get(state, ""))
        out.add_row(*row)
    return out


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def do_status(args):
    values.seconds("--timeout", args.timeout, allow_none=True)
    with mqtt.connect(args) as conn:
        fleet = Fleet()
        snapshot_wait = args.timeout if (args.timeout and not args.watch) else 5.0
        fleet.snapshot(conn, snapshot_wait)
        if args.json:  # JSON escapes control characters itself
            for d in fleet.sorted():
                print(json.dumps(dict(d.fields, id=d.id, last_seen=d.last_seen), sort_keys=True))
            for device_id, why in sorted(fleet.rejected.items()):
                print(json.dumps({"id": device_id, "refused": why}, sort_keys=True))
            return 0
        console = _console()
        if not args.watch:
            if not fleet.devices and not fleet.rejected:
                print("no device states on %s (is the broker the fleet's?)" % conn.where)
                return 0
            console.print(table(fleet))
            return 0
        from rich.live import Live

        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        with Live(table(fleet), console=console, refresh_per_second=4) as live:
            try:
                while deadline is None or time.monotonic() < deadline:
                    time.sleep(0.25)
                    live.update(table(fleet))
            except KeyboardInterrupt:
                pass
    return 0
