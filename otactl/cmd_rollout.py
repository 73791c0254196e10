"""`otactl rollout` and `otactl revert`: the CLI over otactl/rollout.py (the engine and its rules).

    otactl rollout --manifest releases/firmware-v1.0.1.json --stages 0.1,0.5,1 --max-concurrent 10 \
        --device-timeout 600 --success-threshold 0.9 --abort-failure-rate 0.2 --log rollout.jsonl
    otactl rollout --resume --manifest ... --log rollout.jsonl   # after Ctrl-C or a crash
    otactl revert --log rollout.jsonl                  # after an abort: back to the other slot
    otactl revert --device a0b1c2d3e4f5 --device ...

Exit status: 0 when the rollout completed, 1 (`otactl: rollout_aborted: ...`) when it aborted.
"""
import sys

from . import mqtt, rollout, tracking, values
from .cmd_release import load_manifest
from .devstate import check_id, show
from ota.errors import OtaError


def _fractions(text):
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise OtaError("bad_stages", "--stages takes fractions like 0.1,0.5,1, not %r" % text)


def argparse_rollout(parser):
    parser.add_argument("--manifest", help="release manifest (required; with --resume the log is checked against it)")
    parser.add_argument("--stages", default="0.1,0.5,1",
                        help="cumulative fractions of the targets per stage (default 0.1,0.5,1)")
    parser.add_argument("--max-concurrent", type=int, default=10, metavar="N",
                        help="devices updating at once (default 10)")
    parser.add_argument("--device-timeout", type=float, default=600.0, metavar="S",
                        help="a device without a final state S seconds after its trigger fails "
                             "with 'timeout' (default 600)")
    parser.add_argument("--success-threshold", type=float, default=0.9,
                        help="advance when a stage's success rate reaches this (default 0.9)")
    parser.add_argument("--abort-failure-rate", type=float, default=0.2,
                        help="abort as soon as a stage's failures exceed this fraction (default 0.2)")
    parser.add_argument("--only-below", metavar="VERSION",
                        help="only devices below this version (besides below the manifest's)")
    parser.add_argument("--job", help="job id (default: generated from the version)")
    parser.add_argument("--log", default="rollout.jsonl", help="decision log, JSON lines (default rollout.jsonl)")
    parser.add_argument("--resume", action="store_true", help="continue the rollout in --log")
    parser.add_argument("--quiet", action="store_true", help="print only stage decisions and the summary")
    parser.add_argument("--sign-key", metavar="KEY", help="sign each trigger for its device (otactl/signing.py)")
    mqtt.add_arguments(parser)


def _printer(quiet):
    def print_record(record):
        event = record["event"]
        if event == "start":
            print("rollout %s of %s: %d targets (%d skipped), stages %s"
                  % (record["job"], record["manifest"]["version"], len(record["targets"]),
                     len(record["skipped"]), " ".join("%d" % (hi - lo) for lo, hi in record["stages"])))
        elif event == "resume":
            print("resuming: %d devices done, %d in flight (watched, not re-triggered)"
                  % (record["done"], len(record["in_flight"])))
        elif event in ("outcome", "revert_outcome") and not quiet:
            # reason and version are what the device said: escaped (otactl/devstate.py)
            extra = " %s" % show(record["reason"]) if record.get("reason") else ""
            print("  %-24s %s%s %s" % (record["device"], record["outcome"], extra, show(record.get("version"))))
        elif event == "stage":
            print("stage %d: %s (%d devices: %s)" % (record["stage"] + 1, record["decision"], record["devices"],
                                                    ", ".join("%s %d" % kv for kv in record["counts"].items())))
        elif event == "abort":
            print("ABORT: %s: %s" % (record["reason"], record["detail"]))
        elif event == "revert_start":
            print("revert %s: %d devices" % (record["job"], len(record["devices"])))
        sys.stdout.flush()
    return print_record


def print_summary(summary):
    print("%s: %s %s, %d targets in %.1fs" % (summary["job"], summary["result"], summary["version"],
                                            summary["targets"], summary["duration_s"]))
    print("  outcomes: %s" % (", ".join("%s %d" % kv for kv in sorted(summary["outcomes"].items())) or "none"))
    if summary["reasons"]:
        print("  reasons:  %s" % ", ".join("%s %d" % (show(k), n) for k, n in sorted(summary["reasons"].items())))
    if summary.get("suspects"):
        kinds = {}
        for why in summary["suspects"].values():
            kinds[why] = kinds.get(why, 0) + 1
        print("  suspect devices: %s (%s)" % (", ".join("%s %d" % kv for kv in sorted(kinds.items())),
                                            ", ".join(sorted(summary["suspects"])[:10])))
    print("  not started: %d; stages advanced %d of %d; skipped (not targets): %d"
          % (summary["not_started"], summary["stages_advanced"], summary["stages"], summary["skipped"]))


def do_rollout(args):
    if not args.manifest:
        raise OtaError("bad_arguments", "--manifest is required (with --resume: the manifest of the "
                       "rollout in --log, which resume checks the log against)")
    manifest = load_manifest(args.manifest) if args.manifest else None
    if not args.resume:
        options = rollout.Options(_fractions(args.stages), args.max_concurrent, args.device_timeout,
                                  args.success_threshold, args.abort_failure_rate,
                                  rollout.check_version(args.only_below) if args.only_below else None)
    on_record = _printer(args.quiet)
    key = rollout.load_sign_key(args.sign_key) if args.sign_key else None
    with mqtt.connect(args) as conn:
        if args.resume:
            engine = rollout.Rollout.resume(conn, args.log, manifest, on_event=on_record, sign_key=key)
        else:
            engine = rollout.Rollout(conn, manifest, options, args.log, job=args.job, on_event=on_record,
                                     sign_key=key)
        try:
            summary = engine.run()
        except KeyboardInterrupt:
            print("interrupted: continue with `otactl rollout --resume --manifest %s --log %s`"
                  % (args.manifest, args.log), file=sys.stderr)
            raise
    print_summary(summary)
    if summary["result"] == "aborted":
        hint = ""
        if summary["outcomes"].get("ok"):
            hint = "; the devices that took %s can go back with `otactl revert --log %s`" % (
                summary["version"], args.log)
        raise OtaError("rollout_aborted", summary["abort_reason"] + hint)
    return 0


def argparse_revert(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--log", help="rollout log: revert the devices that took its version")
    source.add_argument("--device", action="append", metavar="ID", help="device id (repeatable)")
    parser.add_argument("--timeout", type=float, default=180.0, metavar="S",
                        help="per device: no final state in S seconds -> timeout (default 180)")
    parser.add_argument("--job", help="job id of the revert (default: generated)")
    parser.add_argument("--max-concurrent", type=int, default=10, metavar="N",
                        help="at most N devices rebooting at once (default 10)")
    parser.add_argument("--force", action="store_true", help="send to device ids without a retained state")
    parser.add_argument("--sign-key", metavar="KEY", help="sign the revert message (otactl/signing.py)")
    parser.add_argument("--allow-downgrade", action="store_true",
                        help="with --sign-key: let devices go back to an older version (a revert is "
                        "an update to the other slot's version; devices refuse downgrades otherwise)")
    mqtt.add_arguments(parser)


# What the operator can do about the refusals a revert gets (the device's reason codes).
REVERT_HINTS = {
    "downgrade": "the other slot holds an older version and the devices refuse downgrades: send a signed "
                 "revert that allows it (--sign-key KEY --allow-downgrade), or set ota.allow_downgrade "
                 "in their config",
    "wrong_product": "the other slot holds another firmware (its app descriptor's project_name differs): "
                     "not ours to boot",
}


def do_revert(args):
    if args.allow_downgrade and not args.sign_key:
        raise OtaError("bad_arguments", "--allow-downgrade needs --sign-key: devices ignore it on an "
                       "unsigned revert (anyone on the broker could send one)")
    values.seconds("--timeout", args.timeout)  # before connecting
    values.count("--max-concurrent", args.max_concurrent)
    on_record = _printer(False)
    with mqtt.connect(args) as conn:
        tracker = tracking.Tracker(conn, None, args.timeout)
        tracker.start(10.0)
        fleet = tracker.fleet
        if args.log:
            devices, skipped, _ = rollout.revert_candidates(args.log, fleet)
            for device, why in sorted(skipped.items()):
                print("  skip %-24s %s" % (show(device), show(why)))
            if not devices:
                raise OtaError("nothing_to_revert", "no device of %s runs its version now (%d skipped)"
                               % (args.log, len(skipped)))
        else:
            devices = [check_id(d) for d in dict.fromkeys(args.device)]  # "root": every device
            if not args.force:
                fleet.check_known(devices)
        key = rollout.load_sign_key(args.sign_key) if args.sign_key else None
        results = rollout.revert(conn, devices, job=args.job, timeout=args.timeout, log_path=args.log,
                                 on_event=on_record, tracker=tracker, sign_key=key,
                                 max_concurrent=args.max_concurrent, allow_downgrade=args.allow_downgrade)
    failed = {d: r for d, r in results.items() if r["outcome"] != "ok"}
    print("reverted %d of %d devices" % (len(results) - len(failed), len(results)))
    for reason, hint in sorted(REVERT_HINTS.items()):
        count = sum(1 for r in failed.values() if r.get("reason") == reason)
        if count:
            print("%d devices refused with %s: %s" % (count, reason, hint))
    if failed:
        raise OtaError("revert_failed", "%d devices did not revert: %s" % (
            len(failed), ", ".join("%s (%s)" % (d, show(r.get("reason"))) for d, r in sorted(failed.items())[:10])))
    return 0
