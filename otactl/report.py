"""`otactl report`: what the fleet's updates cost and how they ended, from the retained states.

    otactl report [--json] [--timeout S] [--expect FILE] [--log ROLLOUT_LOG]

Each device's retained state is its last word; a final one (ok, failed, rolled_back) carries the
telemetry record of its job (lib/ota/telemetry.py, "t"). Per version the job aimed at (t.to) and for
the whole fleet: devices, ok, failed, rolled back, p50/p95 update time (download + verify + the
reboot until it confirmed) and download throughput, bytes fetched again (resumes, restarts),
failures by reason code; and the devices not heard from: offline, or expected but with no state at all
(--expect: one device id a line; --log: the devices a rollout's decision log says it triggered). A `same_version` ok is counted as ok
with no time (nothing was downloaded).
"""
import json
import sys

from . import mqtt
from ota.errors import OtaError
from .fleet import Fleet

FINAL = ("ok", "failed", "rolled_back")


def percentile(values, pct):
    """Nearest-rank percentile of a list (None for an empty one)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[int(rank) - 1]


def update_ms(t):
    """Wall time of one update from its record: download (connects, erase+write included) + verify +
    the reboot until confirmed (boot_ms, or reboot_s when the clock was set). None without a download."""
    if not t or t.get("dl_ms") is None:
        return None
    total = t["dl_ms"] + (t.get("verify_ms") or 0)
    if t.get("reboot_s") is not None:
        total += max(t["reboot_s"] * 1000, t.get("boot_ms") or 0)
    elif t.get("boot_ms") is not None:
        total += t["boot_ms"]
    return total


def _group():
    return {"devices": 0, "ok": 0, "failed": 0, "rolled_back": 0, "in_progress": 0, "idle": 0,
            "offline": 0, "reasons": {}, "rollback_reasons": {}, "times_ms": [], "kbps": [],
            "refetched": 0, "resumes": 0, "restarts": 0}


def build(devices, expected=()):
    """devices: {id: fields (devstate.parse)}; expected: ids that should have answered.
    Returns the report dict (the --json output)."""
    fleet = _group()
    versions = {}
    silent = sorted(set(expected) - set(devices))  # a set: a device listed twice counts once
    for device_id in sorted(devices):
        fields = devices[device_id]
        t = fields.get("t") or {}
        state = fields.get("state")
        version = t.get("to") or fields.get("version") or "?"
        for group in (fleet, versions.setdefault(version, _group())):
            group["devices"] += 1
            if state == "offline":
                group["offline"] += 1
            elif state in FINAL:
                group[state] += 1
                if state != "ok":
                    key = "reasons" if state == "failed" else "rollback_reasons"
                    reason = fields.get("reason") or "unknown"
                    group[key][reason] = group[key].get(reason, 0) + 1
                took = update_ms(t) if state == "ok" else None
                if took is not None:
                    group["times_ms"].append(took)
                if t.get("dl_ms") and t.get("fetched"):
                    group["kbps"].append(t["fetched"] / 1024 / (t["dl_ms"] / 1000))
                group["resumes"] += t.get("resumes") or 0
                group["restarts"] += t.get("restarts") or 0
            elif state == "idle":
                group["idle"] += 1
            else:
                group["in_progress"] += 1
    report = {"fleet": _summary(fleet), "versions": {v: _summary(g) for v, g in sorted(versions.items())},
              "not_heard_from": sorted([d for d in devices if devices[d].get("state") == "offline"] + silent),
              "expected_silent": silent}
    return report


def _summary(group):
    times, rates = group.pop("times_ms"), group.pop("kbps")
    group["p50_ms"], group["p95_ms"] = percentile(times, 50), percentile(times, 95)
    group["p50_kbps"] = round(percentile(rates, 50), 1) if rates else None
    group["p95_kbps"] = round(percentile(rates, 95), 1) if rates else None
    group["timed"] = len(times)
    return group


def _cell(value):
    return "-" if value is None else str(value)


def text(report):
    rows = [("fleet", report["fleet"])] + list(report["versions"].items())
    header = ("version", "devices", "ok", "failed", "rolled_back", "busy", "offline", "p50_s", "p95_s",
              "p50_KB/s", "resumes", "restarts")
    lines = [header]
    for name, g in rows:
        lines.append((name, g["devices"], g["ok"], g["failed"], g["rolled_back"], g["in_progress"],
                      g["offline"], _secs(g["p50_ms"]), _secs(g["p95_ms"]), _cell(g["p50_kbps"]),
                      g["resumes"], g["restarts"]))
    widths = [max(len(_cell(row[i])) for row in lines) for i in range(len(header))]
    out = ["  ".join(_cell(v).rjust(w) if i else _cell(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
           for row in lines]
    for title, key in (("failures by reason", "reasons"), ("rollbacks by reason", "rollback_reasons")):
        counts = report["fleet"][key]
        if counts:
            out.append("")
            out.append(title + ":")
            for reason, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
                out.append("  %-28s %d" % (reason, n))
    silent = report["not_heard_from"]
    out.append("")
    names = ""
    if silent:
        names = " (%s%s)" % (", ".join(silent[:20]), " ..." if len(silent) > 20 else "")
    out.append("not heard from: %d%s" % (len(silent), names))
    return "\n".join(out)


def _secs(ms):
    return None if ms is None else "%.1f" % (ms / 1000)


def argparse_report(parser):
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="how long to wait for the retained states (default 5)")
    parser.add_argument("--expect", metavar="FILE", help="device ids that should have answered, one a line")
    parser.add_argument("--log", metavar="FILE", help="a rollout's decision log: the devices it triggered are expected")
    mqtt.add_arguments(parser)


def do_report(args):
    expected = ()
    if args.expect:
        try:
            with open(args.expect) as f:
                expected = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as e:
            raise OtaError("io_error", "cannot read %s: %s" % (args.expect, e.strerror))
    if args.log:  # every device the rollout sent a trigger to must have answered
        from .decisionlog import Log

        triggered = [r.get("device") for r in Log.read(args.log) if r.get("event") == "trigger"]
        expected = list(expected) + [d for d in triggered if isinstance(d, str)]
    with mqtt.connect(args) as conn:
        fleet = Fleet().snapshot(conn, args.timeout)
    devices = {d.id: d.fields for d in fleet.sorted()}
    report = build(devices, expected)
    if args.json:
        json.dump(report, sys.stdout, indent=1, sort_keys=True)
        print()
    else:
        print(text(report))
    if fleet.rejected:
        print("%d state message(s) refused (otactl status shows them)" % len(fleet.rejected), file=sys.stderr)
    return 0
