"""Issue 13, the data path on a diet, measured on the simulated ESP32-C3 (`make bench`; never a test).

One run, side by side: the same `micropython` binary, the same nginx over TLS with the test CA, the same
1.7 MB image, the simulator's TLS accounting on (docs/CHIP.md §5). Only byte counts and ratios are
judged, never absolute times (the host is not a C3):

  heap needed       the smallest free GC heap above the post-import baseline with which a whole update
                    completes: the device runs bench/diet_driver.py (frozen) at a shrinking `-X heapsize` (bytes,
                    bisected to 256), which reports its baseline (gc.mem_alloc() after importing the
                    device code and collecting) and gc.mem_alloc() + gc.mem_free(); needed = that total
                    at the smallest heapsize that completes, minus the baseline. Once with the
                    admission check as configured (ota.min_free: the margin included), once with
                    ota.min_free 0 (what the data path itself needs); both with the frozen modules run
                    in place from ROMFS, as the board runs them from flash, and the update's workspace
                    (buffer + SSLContext, lib/ota/workspace.py) taken before the imports, as the agent
                    takes it at start-up. Once without the workspace (the update makes both itself:
                    before the third pass), and once with the bytecode loaded into the GC heap
                    (`"romfs": false`, the simulator before issue 13), whose load holes made the old
                    number
  heap pieces       live bytes and allocation of each piece of an update (diet_driver job "heap")
  timeline          a connection step by step, TCP_NODELAY off and on (median of the repetitions), and
                    the real https.open against TCP connect + TLS handshake
  streaming         interleaved: a raw TLS download of the file (https.open + 4 KiB readinto, bytes
                    discarded) and ota.update.run of it; streaming = open returned -> body ended
"""
import hashlib
import os
import shutil
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.common import driver_device, print_table, rows_of, scratch, tls_www  # noqa: E402

FULL = 1_713_728  # the official MicroPython v1.24.1 ESP32_GENERIC_C3 app (docs/CHIP.md §3)
RESOLUTION = 256
GOAL_HEAP = 12 * 1024
REPS = 5
STREAM_REPS = 31  # interleaved pairs: single pairs range from 0.6 to 1.2; with 9 the median moved by 0.03 between runs


def _device(root, name, image, pki, jobs, heapsize, romfs=True):
    return driver_device(root, name, image, pki, "diet_main.py", "diet.json", jobs, heapsize,
                         tls_accounting=True, romfs=romfs)


def bench_image(version, size=None):
    """Our firmware with bench/diet_driver.py frozen beside the device code (bench/diet_main.py imports it)."""
    from devkit import images, simfleet

    with open(os.path.join(REPO, "bench", "diet_driver.py"), "rb") as f:
        driver = f.read()
    return images.build_image(version, files=simfleet.device_files() + [("diet_driver.py", driver)], size=size)


def _rows(device):
    # The heap rows assume the frozen code runs in place from the simulator's ROM room; an image
    # that outgrew the room is imported into the heap instead (simmain's warning), and every heap
    # number would move without saying why.
    if "does not fit the" in device.console():
        raise RuntimeError("%s: a ROMFS image outgrew sim.runner.ROM_ROOM; see its console" % device.devdir)
    return rows_of(device, "DIET")


def _one(root, image, pki, job, heapsize, romfs):
    device = _device(root, "heap-%s" % heapsize, image, pki, [job], heapsize, romfs)
    device.run(timeout=300)
    row = _rows(device).get(job["name"], {"result": "no answer"})
    shutil.rmtree(device.devdir, ignore_errors=True)
    return row


def smallest_heap(root, image, pki, job, romfs=True):
    """-> (bytes needed above the baseline, the smallest heapsize, the row there, the first failure).
    romfs False: the frozen modules' bytecode is loaded into the GC heap (the simulator before issue 13)."""
    top = 1024 * 1024
    row = _one(root, image, pki, job, str(top), romfs)
    if row.get("result") != "ok":
        return None, None, row, None
    # Below the baseline nothing boots. (Starting at the baseline plus the GC tables measured at 1 MiB
    # floored the answer: those tables shrink with the heap, by about 11 KB down here.)
    low, high = row["baseline"], row["baseline"] + 96 * 1024
    best, fail = None, None
    while high - low > RESOLUTION:
        mid = (low + high) // 2 // 64 * 64
        got = _one(root, image, pki, job, str(mid), romfs)
        if got.get("result") == "ok":
            high, best = mid, got
        else:
            low, fail = mid, got
    if best is None:
        best = _one(root, image, pki, job, str(high), romfs)
    return best["heap_total"] - best["baseline"], high, best, fail


def sweep_min_free(root, image, pki, url, sha, low, min_free, span=8192, step=512):
    """ota.min_free's bisection: one update at every heapsize from low to low + span, with the admission
    check at min_free. -> [(heapsize, free GC heap heap.check saw, outcome)]; outcome "refused" (the
    admission check said low_memory: fine), "ok", or the reason an admitted update failed with."""
    out = []
    for heapsize in range(low, low + span + 1, step):
        job = {"name": "sweep", "kind": "update", "url": url, "sha256": sha, "ota": {"min_free": min_free},
               "admission": True}
        row = _one(root, image, pki, job, str(heapsize), True)
        result = row.get("result", "no answer")
        if result == "low_memory" and "needed" in row.get("detail", "") and "during" not in row.get("detail", ""):
            result = "refused"
        out.append((heapsize, row.get("free_at_check"), result))
    return out


def measure(root):
    from devkit import simfleet
    from devkit.nginx import Nginx

    v100, full = bench_image("1.0.0"), simfleet.firmware("1.0.1", size=FULL)
    pki, www = tls_www(root, {"full.bin": full})
    sha = hashlib.sha256(full).hexdigest()
    out = {}
    with Nginx(www, pki.server_cert, pki.server_key) as web:
        url = web.url("full.bin")
        jobs = [{"name": "heap", "kind": "heap", "url": url},
                {"name": "timeline", "kind": "timeline", "url": url, "reps": REPS},
                {"name": "stream", "kind": "stream", "url": url, "sha256": sha, "reps": STREAM_REPS},
                {"name": "profile", "kind": "profile", "url": url, "sha256": sha, "reps": 3}]
        device = _device(root, "main", v100, pki, jobs, simfleet.FLEET_HEAP)
        out["outcome"] = device.run(timeout=900)
        out.update(_rows(device))
        out["console"] = device.console()
        from ota.config import DEFAULTS

        out["min_free"] = DEFAULTS["ota"]["min_free"]
        for name, ota, idle, romfs, workspace in (
                ("idle", {}, True, True, True), ("needed_margin", {}, False, True, True),
                ("needed_bare", {"min_free": 0}, False, True, True),
                ("needed_before", {}, False, True, False),
                ("needed_heapcode", {}, False, False, True)):
            job = {"name": name, "kind": "update", "url": url, "sha256": sha, "ota": ota, "idle": idle,
                   "workspace": workspace}
            out[name] = smallest_heap(root, v100, pki, job, romfs)
        bare = out["needed_bare"][1]
        if bare:  # around the smallest heap that completes without the check, with and without it
            out["sweep"] = {m: sweep_min_free(root, v100, pki, url, sha, bare - 2048, m)
                            for m in (0, out["min_free"])}
    return out


def _ms(us):
    return "%.1f ms" % (us / 1000)


def report(data):
    rows = []

    def row(metric, measured, goal="", met=None):
        rows.append((metric, measured, goal, met))

    idle = data["idle"][1]
    row("smallest -X heapsize for the baseline alone (target slot, workspace, imports; no update)",
        "%s B" % idle if idle else "failed: %s" % (data["idle"][2],))
    labels = (("needed_margin", "admission margin included (ota.min_free %d)" % data["min_free"]),
              ("needed_bare", "ota.min_free 0: the data path alone"),
              ("needed_before", "margin included, no workspace: buffer and SSLContext made by the update "
                                "(before the third pass; the baseline is smaller by the workspace)"),
              ("needed_heapcode", "margin included, frozen bytecode loaded into the GC heap (the old simulator)"))
    for name, label in labels:
        if name not in data:
            continue
        needed, heapsize, best, fail = data[name]
        if needed is None:
            row("heap needed, " + label, "update failed: %s" % best, "", False)
            continue
        goal = name == "needed_margin"
        # The measure: the free GC heap above the post-import baseline at the smallest
        # -X heapsize that completes (holes included).
        row("heap needed above the post-import baseline, 1.7 MB update, " + label,
            "%d B (%.1f KiB)" % (needed, needed / 1024), "<= 12 KiB" if goal else "",
            needed <= GOAL_HEAP if goal else None)
        row("  smallest -X heapsize that completes", "%d B (%.1fwK)" % (heapsize, heapsize / 8192))
        if idle and name not in ("needed_heapcode", "needed_before"):
            extra = heapsize - idle
            row("  that heapsize minus the baseline alone's", "%d B (%.1f KiB)" % (extra, extra / 1024))
        if fail:
            row("  %d B less fails with" % RESOLUTION, "%s %s" % (fail.get("result"), fail.get("detail", "")[:60]))
    with_ws, without = data.get("needed_margin"), data.get("needed_before")
    if with_ws and without and with_ws[0] is not None and without[0] is not None:
        held = with_ws[2]["baseline"] - without[2]["baseline"]
        row("the workspace, held from start-up (the baseline with it minus without)", "%d B" % held)
        row("smallest -X heapsize completing the update: with the workspace / without",
            "%d B / %d B (%+d B)" % (with_ws[1], without[1], with_ws[1] - without[1]), "less with it",
            with_ws[1] < without[1])
    for min_free, points in sorted((data.get("sweep") or {}).items()):
        # Failed before the check: the buffer or the TLS context (made first, while the heap's top is
        # in one piece) did not fit; no admission threshold can prevent that.
        early = [(h, f, r) for h, f, r in points if r not in ("ok", "refused") and f is None]
        bad = [(h, f, r) for h, f, r in points if r not in ("ok", "refused") and f is not None]
        good = [(h, f, r) for h, f, r in points if r == "ok"]
        row("ota.min_free %d: heapsizes %d-%d B, step 512: ok / failed before the check / refused by it / "
            "admitted but failed" % (min_free, points[0][0], points[-1][0]),
            "%d / %d / %d / %d" % (len(good), len(early), sum(1 for p in points if p[2] == "refused"), len(bad)),
            "0 admitted but failed" if min_free else "", not bad if min_free else None)
        if bad:
            row("  admitted and failed: free GC heap at the check, reason",
                ", ".join("%s %s" % (f, r) for h, f, r in bad[-4:]))
        if good:
            row("  least free GC heap at the check of an update that completed", "%s B" % min(f for h, f, r in good if f))
    heap = data.get("heap", {})
    for label, live, allocated in heap.get("rows", []):
        row("  live: " + label, "%d B (allocated %d)" % (live, allocated))
    if "error" in heap:
        row("heap pieces", heap["error"], "", False)
    timeline = data.get("timeline", {})
    if "nagle" in timeline:
        names = ("DNS", "TCP connect", "TLS handshake", "request write", "head read (read_head, byte by byte)",
                 "open to first body byte")
        for i, name in enumerate(names):
            row("  timeline: " + name, "%s -> %s with TCP_NODELAY" % (
                _ms(statistics.median(r[i] for r in timeline["nagle"])),
                _ms(statistics.median(r[i] for r in timeline["nodelay"]))))
        base = statistics.median(r[1] + r[2] for r in timeline["nodelay"])
        head = statistics.median(r[4] for r in timeline["nodelay"])
        opened = statistics.median(timeline["https_open"])
        row("connection open (https.open, to the headers) vs TCP connect + TLS handshake (+ head read)",
            "%s vs %s (+ %s)" % (_ms(opened), _ms(base), _ms(head)), "no 40 ms stall",
            opened < base + head + 10000)
        row("  TCP_NODELAY in this socket module", str(timeline["nodelay_supported"]))
    elif "error" in timeline:
        row("timeline", timeline["error"], "", False)
    stream = data.get("stream", {})
    runs = stream.get("runs") or []
    if runs:
        def spread(values):
            values = sorted(values)
            return "%.2f (min %.2f, max %.2f, middle half %.2f-%.2f)" % (
                statistics.median(values), values[0], values[-1], values[len(values) // 4],
                values[(3 * len(values)) // 4])

        no_flash = [r["raw"]["stream_us"] / (r["update"]["stream_us"] - r["update"]["flash_stream_us"]) for r in runs]
        ratio = [r["raw"]["stream_us"] / r["update"]["stream_us"] for r in runs]
        whole = [r["raw"]["all_us"] / r["update"]["all_us"] for r in runs]
        row("streaming: raw TLS download / update, simulated flash time taken out (%d interleaved pairs)" % len(runs),
            spread(no_flash), ">= 0.90", statistics.median(no_flash) >= 0.9)
        # The no-flash run follows a real update of the same file: the slot already holds these bytes,
        # so the read-back passes and the update completes ("reason" None) though nothing was written.
        done = [r for r in runs if "no_flash" in r["update"] and r["update"]["no_flash"]["reason"] is None]
        if done:
            row("  streaming: raw / update with the flash out of the loop (writeblocks a no-op; %d of %d completed)"
                % (len(done), len(runs)),
                spread([r["raw"]["stream_us"] / r["update"]["no_flash"]["stream_us"] for r in done]))
        elif runs[0]["update"].get("no_flash"):
            row("  streaming with the flash out of the loop", "ended with %s" % runs[0]["update"]["no_flash"]["reason"],
                "", False)
        row("  streaming with the simulated flash's Python time in", spread(ratio))
        row("  whole update (open, stream, read-back, set_boot) vs raw download", spread(whole))
        for part in ("open_us", "stream_us", "after_us", "flash_us"):
            row("  update %s (raw %s)" % (part[:-3], _ms(statistics.median(r["raw"].get(part, 0) for r in runs))),
                _ms(statistics.median(r["update"][part] for r in runs)))
        prof = (data.get("profile") or {}).get("runs") or []
        if prof:
            raw_chunk = statistics.median(r["raw"]["stream_us"] for r in runs) / prof[0]["chunks"]

            def per_chunk(fn):
                return "%.1f us" % statistics.median(fn(p) / p["chunks"] for p in prof)

            row("  per 4 KiB chunk (median of %d profiled updates; raw download: %.1f us)" % (len(prof), raw_chunk),
                "stream %s" % per_chunk(lambda p: p["stream_us"]))
            row("    response readinto (the raw download's work)", per_chunk(lambda p: p["read_us"]))
            row("    image check (update feed minus writer commit)", per_chunk(lambda p: p["feed_us"] - p["commit_us"]))
            row("    writer commit without the simulated flash", per_chunk(lambda p: p["commit_us"] - p["flash_stream_us"]))
            row("    simulated flash (writeblocks: erase + program in Python)", per_chunk(lambda p: p["flash_stream_us"]))
            row("    the stream's heap check (gc.mem_free() walks the whole heap, every 64 KiB)",
                per_chunk(lambda p: p.get("heap_us", 0)))
            row("    the fetch loop itself (watchdog, deadline, progress) + timers",
                per_chunk(lambda p: p["stream_us"] - p["read_us"] - p["feed_us"] - p.get("heap_us", 0)))
    elif "error" in stream:
        row("streaming", stream["error"], "", False)
    return rows


def main():
    print("== OTA data path on a diet (bench/diet_bench.py, issue 13) ==")
    with scratch("ota-diet-") as root:
        data = measure(root)
        print_table(report(data), 14)
        if "Traceback" in data["console"]:
            print("note: the device printed a traceback:\n" + data["console"][-3000:])
        print("Host ratios and 64-bit object sizes, not C3 numbers (docs/MEMORY.md). Load average %.1f."
              % os.getloadavg()[0])


if __name__ == "__main__":
    main()
