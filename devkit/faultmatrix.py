"""The fault-injection matrix: rows collected by the fault tests, one table at the end (PYTEST_DONT_REWRITE)."""
# The fault-injection matrix of `make faults` (and its short form in `make test`): every fault test
# records one row per case here; the table is printed once at the end of the pytest session.
#
#   from devkit import faultmatrix
#   pytest_plugins = ["devkit.faultmatrix"]          # in the test module: prints the table at the end
#   faultmatrix.record("power: download", "cut_after_bytes=4097", "refused", "interrupted",
#                      bricked=False, allowed=True)
#   faultmatrix.FULL                                  # OTA_FAULTS=full: the full matrix, else short
#
# A row: fault (the group a table line stands for), case (one injection), outcome ("success": the
# update went through; "refused": the job failed or rolled back cleanly; "error": the test could not
# tell, e.g. a timeout), reason (the reason code the device reported, or None), bricked (no valid
# image booted: must never happen), allowed (the outcome is one the case permits). The table groups
# rows by fault: count, outcomes, reason codes seen, bricked devices, cases outside their allowed set.
# build/faults/matrix.json keeps the rows of the last run (one file per pytest session).
import json
import os
import threading
import time

FULL = os.environ.get("OTA_FAULTS", "").strip().lower() == "full"
FORM = "full" if FULL else "short"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSON_PATH = os.path.join(REPO, "build", "faults", "matrix.json")

ROWS = []
_lock = threading.Lock()
_started = time.monotonic()
_notes = []


def select(cases):
    """OTA_FAULTS_ONLY=text replays only the cases whose group or name contains it. Cases are tuples
    (group, name, ...); returns (cases, the groups in order)."""
    only = os.environ.get("OTA_FAULTS_ONLY")
    if only:
        cases = [c for c in cases if only in c[0] + " / " + c[1]]
    return cases, list(dict.fromkeys(c[0] for c in cases))


def outcome_of(state):
    """A job's final device state ("ok", "failed", "rolled_back", None) -> the row's outcome."""
    return {"ok": "success", "failed": "refused", "rolled_back": "refused"}.get(state, "error")


def run_grouped(cases, run, workers, group_of):
    """run(index, case) for every case, `workers` devices at a time -> {group: [result, ...]}, each
    result filed under group_of(result), in case order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(lambda item: run(*item), enumerate(cases)))
    out = {}
    for result in done:
        out.setdefault(group_of(result), []).append(result)
    return out


def record(fault, case, outcome, reason=None, bricked=False, allowed=True, seconds=None, detail=None, n=1):
    """Adds one row; thread-safe (the power cases run on a thread pool). n: how many cases the row
    stands for (a fuzz run is one row of thousands). Returns the row."""
    row = {"fault": fault, "case": case, "outcome": outcome, "reason": reason, "bricked": int(bricked),
           "allowed": bool(allowed), "seconds": None if seconds is None else round(seconds, 2),
           "detail": detail, "n": n}
    with _lock:
        ROWS.append(row)
    return row


def note(text):
    """A line printed under the table (seeds, sizes): what a reader needs to reproduce the run."""
    with _lock:
        if text not in _notes:
            _notes.append(text)


def summary(rows=None):
    """-> [{fault, count, outcomes {name: n}, reasons [sorted], bricked, disallowed}] in first-seen order."""
    groups = {}
    for row in ROWS if rows is None else rows:
        g = groups.setdefault(row["fault"], {"fault": row["fault"], "count": 0, "outcomes": {},
                                             "reasons": set(), "bricked": 0, "disallowed": 0})
        n = row.get("n", 1)
        g["count"] += n
        g["outcomes"][row["outcome"]] = g["outcomes"].get(row["outcome"], 0) + n
        if row["reason"]:
            g["reasons"].update(r.strip() for r in row["reason"].split(","))
        g["bricked"] += row["bricked"]
        g["disallowed"] += not row["allowed"]
    out = []
    for g in groups.values():
        g["reasons"] = sorted(g["reasons"])
        out.append(g)
    return out


def table(rows=None, reason_width=64):
    """The matrix as text: one line per fault group (long reason lists wrap), then a total line."""
    rows = ROWS if rows is None else rows
    header = ("fault", "count", "outcome", "reason codes seen", "bricked", "not allowed")
    lines = []
    for g in summary(rows):
        outcome = ", ".join("%s %d" % (name, n) for name, n in sorted(g["outcomes"].items()))
        lines.append((g["fault"], str(g["count"]), outcome, _wrap(g["reasons"], reason_width),
                      str(g["bricked"]), str(g["disallowed"])))
    bricked = sum(r["bricked"] for r in rows)
    disallowed = sum(not r["allowed"] for r in rows)
    total = ("TOTAL", str(sum(r.get("n", 1) for r in rows)), "", [""], str(bricked), str(disallowed))
    header = header[:3] + ([header[3]],) + header[4:]
    everything = [header, total] + lines
    widths = [max(len(line[i]) if i != 3 else max(len(p) for p in line[3]) for line in everything)
              for i in range(len(header))]

    def fmt(line):
        out = []
        for k, part in enumerate(line[3]):
            cells = [line[i] if k == 0 else "" for i in range(len(line))]
            cells[3] = part
            out.append("  ".join(c.rjust(widths[i]) if i in (1, 4, 5) and c else c.ljust(widths[i])
                                 for i, c in enumerate(cells)).rstrip())
        return "\n".join(out)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule] + [fmt(line) for line in lines] + [rule, fmt(total)])


def _wrap(words, width):
    parts, line = [], ""
    for word in words or ["-"]:
        piece = word if not line else line + ", " + word
        if line and len(piece) > width:
            parts.append(line + ",")
            line = word
        else:
            line = piece
    parts.append(line)
    return parts


def save(path=JSON_PATH):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"form": FORM, "seconds": round(time.monotonic() - _started, 1), "notes": _notes,
                   "summary": summary(), "rows": ROWS}, f, indent=1)


# --- pytest plugin part: loaded by the test modules' `pytest_plugins` ---------------------------------
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not ROWS:
        return
    terminalreporter.section("fault-injection matrix (%s form, OTA_FAULTS=%s)"
                             % (FORM, os.environ.get("OTA_FAULTS", "")))
    terminalreporter.write_line(table())
    for line in _notes:
        terminalreporter.write_line(line)
    bad = [r for r in ROWS if r["bricked"] or not r["allowed"]]
    for row in bad[:20]:
        terminalreporter.write_line("  NOT OK: %(fault)s / %(case)s: %(outcome)s %(reason)s %(detail)s" % row)
    try:
        save()
        terminalreporter.write_line("rows: " + os.path.relpath(JSON_PATH, os.getcwd()))
    except OSError as e:
        terminalreporter.write_line("matrix.json not written: %s" % e)
