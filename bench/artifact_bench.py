"""Full, compressed and delta updates side by side (`make bench`; issue 14, docs/COMPRESSED.md).

One simulated ESP32-C3 running a real-sized 1.0.0 image, one nginx over TLS with `limit_rate` 512 KB/s
per connection (the simulated link), one run: the real ota.update.run (bench/ota_driver.py "memory"
jobs) of the same 1.0.1 image as a plain .bin, as a compressed container and as a patch from 1.0.0;
and of a 1.1.0 whose firmware bytes changed too, as compressed and as a patch. For each: bytes on the
wire (the file nginx serves; no drops), seconds, peak GC heap above idle, GC bytes per 4 KiB chunk in
the steady state (the simulated flash's own Python allocations left out, as in ota_bench).

Image bytes: never zeros or random filler (neither compresses like firmware). The filler segment is
the MicroPython Unix port's loadable code and data (devkit/firmware_bytes.py: compiled MicroPython v1.28,
x86-64), the payload our frozen device code; 1.0.1 changes one frozen module; 1.1.0 "recompiles":
6 KB inserted early and one word in 50 changed.
"""
import hashlib
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.common import scratch, tls_www  # noqa: E402

FULL = 1_713_728  # the official MicroPython v1.24.1 ESP32_GENERIC_C3 app (docs/CHIP.md §3)
LINK = 512 * 1024  # bytes/s: the simulated link


def measure(root):
    from bench.ota_bench import _device, _results
    from devkit import simfleet
    from devkit.nginx import Nginx
    from otactl import zimage

    _, v100, v101, v110 = simfleet.releases(FULL, b"\n# 1.0.1: one frozen module changed\nRELEASE = 101\n")
    files = {"v101.bin": v101, "v101.otaz": zimage.pack_image(v101), "v100-v101.otaz": zimage.pack_patch(v100, v101),
             "v110.otaz": zimage.pack_image(v110), "v100-v110.otaz": zimage.pack_patch(v100, v110)}
    pki, www = tls_www(root, files)

    def sha(blob):
        return hashlib.sha256(blob).hexdigest()

    def art(name, encoding):
        # As otactl rollout sends them (artifacts.choose): no file_sha256, DeflateIO reads the socket
        blob = files[name]
        kind = encoding.split("+")[0]
        extra = {"base_sha256": sha(v100)} if kind == "delta" else {}
        if encoding.endswith("+hashed"):  # the file hashed on the device: every byte through Python
            extra["file_sha256"] = sha(blob)
        return dict({"encoding": kind, "file_size": len(blob)}, **extra)

    ota = {"retry_backoff_ms": 10}
    rows = [("1.0.1 full", "v101.bin", v101, None), ("1.0.1 compressed", "v101.otaz", v101, "deflate"),
            ("1.0.1 compressed, file hashed", "v101.otaz", v101, "deflate+hashed"),
            ("1.0.1 delta (frozen lib/ only)", "v100-v101.otaz", v101, "delta"),
            ("1.1.0 compressed", "v110.otaz", v110, "deflate"),
            ("1.1.0 delta (firmware changed)", "v100-v110.otaz", v110, "delta")]
    with Nginx(www, pki.server_cert, pki.server_key, target="v101.bin", limit_rate=LINK) as web:
        jobs = []
        for label, name, image, encoding in rows:
            job = {"name": label, "kind": "memory", "url": web.url(name), "sha256": sha(image),
                   "size": len(image), "ota": ota}
            if encoding:
                job["artifact"] = art(name, encoding)
            jobs.append(job)
        device = _device(root, "bench-artifacts", v100, pki, jobs, simfleet.FLEET_HEAP)
        device.run(timeout=1800)
    return {"rows": rows, "files": files, "results": _results(device), "console": device.console()}


def main():
    with scratch("artifact-bench-") as root:
        data = measure(root)
    results = data["results"]
    print("Image: %d bytes (real-sized C3 app); filler: MicroPython Unix port code (devkit/firmware_bytes.py)" % FULL)
    print("Link: nginx limit_rate %d B/s over TLS; one simulated device, runs one after the other" % LINK)
    header = "%-32s %12s %8s %9s %10s %12s %8s" % ("artifact", "wire bytes", "% image", "seconds",
                                                   "peak heap", "GC B/chunk", "result")
    print(header)
    print("-" * len(header))
    for label, name, image, _ in data["rows"]:
        got = results.get(label, {})
        if "error" in got or not got:
            print("%-32s %s" % (label, got.get("error", "no result")))
            continue
        wire = len(data["files"][name])
        print("%-32s %12d %7.1f%% %9.2f %8.1f KiB %5d max %4.1f mean %s" % (
            label, wire, 100.0 * wire / len(image), got["seconds"], got["peak_above_idle"] / 1024,
            got["alloc_max"], got["alloc_mean"], got["result"]))
    print("Goals: compressed <= 70 % of the image, frozen-only delta <= 5 %, peak heap above idle <= 24 KiB, "
          "0 GC bytes per chunk in the steady state (allocations at patch operation edges: see alloc_chunks)")
    for label, _, _, _ in data["rows"]:
        got = results.get(label, {})
        if got.get("alloc_chunks"):
            print("  %s: chunks that allocated (image offset, bytes): %s" % (label, got["alloc_chunks"][:12]))


if __name__ == "__main__":
    main()
