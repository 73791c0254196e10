# Device-side driver of bench/ota_bench.py: fs/main.py of a simulated ESP32-C3 (MicroPython), in place
# of the agent. Reads bench.json and prints one "BENCH {json}" line per measurement:
#   {"kind": "raw", "url", "reps"}       ota.https.open + readinto(4 KiB buffer), discarded: the ceiling
#   {"kind": "update", "url", "sha256", "reps", "raw_url"?}
#                                        the real ota.update.run into the other slot, with the time spent
#                                        in the (simulated) flash measured by a wrapper around the
#                                        partitions; with raw_url, a raw download runs before each
#                                        update (side by side, same process, same server)
#   {"kind": "hashing", "size"}          CPU seconds of SHA-256 and of the image Verifier over the image
#                                        left in the other slot by the previous update
#   {"kind": "memory", "url", "sha256", "size", "artifact"?}    (artifact: update.run's, compressed/delta)
#                                        one update.run with progress at every 4 KiB chunk: GC bytes
#                                        allocated per chunk (micropython.mem_total deltas) and the GC
#                                        heap above idle (gc.mem_alloc)
# Each update ends with set_boot() of the other slot; the running slot never changes (no reset here).
import gc
import hashlib
import json
import time

import esp32
import micropython
from ota import config, https, update
from ota import delta, inflate  # noqa: F401  frozen on a board: imported before any idle is measured

try:
    import simflash  # the simulator's instruments (absent on a board)
except ImportError:
    simflash = None

_CHUNK = 4096


def ota_erases():
    if simflash is None:
        return -1
    return simflash.erases_by_partition().get(esp32.Partition(esp32.Partition.RUNNING)
                                              .get_next_update().info()[4], 0)


def raw(url, cfg, buf):
    # Seconds for one download of url, bytes discarded, and the byte count.
    start = time.ticks_us()
    resp = https.open(url, ca_path=cfg["ca_path"], connect_timeout=cfg["connect_timeout"],
                      read_timeout=cfg["read_timeout"])
    total = 0
    while True:
        n = resp.readinto(buf)
        if n == 0:
            break
        total += n
    resp.close()
    return time.ticks_diff(time.ticks_us(), start) / 1e6, total


class _Clock:
    flash_us = 0
    flash_alloc = 0  # GC bytes the simulated flash allocated (its Python code; C on a board)


class _Wrapped:
    # The real partition inside; what a wrapper does not change goes straight to it.
    def __init__(self, real):
        self._real = real

    def info(self):
        return self._real.info()

    def get_next_update(self):
        return type(self)(self._real.get_next_update())


class _CountingPartition(_Wrapped):
    # The real partition, with the GC bytes allocated inside each flash call added to
    # _Clock.flash_alloc, so that the device code's own allocation can be told apart. Tiny methods:
    # a frame over 11 words would itself be allocated on the heap at every call.
    def ioctl(self, cmd, arg):
        return self._real.ioctl(cmd, arg)  # block size; one erase on failure only

    def writeblocks(self, block, buf):
        before = micropython.mem_total()
        self._real.writeblocks(block, buf)
        _Clock.flash_alloc += micropython.mem_total() - before

    def readblocks(self, block, buf, offset=0):
        before = micropython.mem_total()
        self._real.readblocks(block, buf, offset)
        _Clock.flash_alloc += micropython.mem_total() - before

    def set_boot(self):
        self._real.set_boot()


class _TimedPartition(_Wrapped):
    # The real partition, with the time spent inside each flash call added to _Clock.flash_us.
    def ioctl(self, cmd, arg):
        start = time.ticks_us()
        try:
            return self._real.ioctl(cmd, arg)
        finally:
            _Clock.flash_us += time.ticks_diff(time.ticks_us(), start)

    def writeblocks(self, block, buf, offset=None):
        start = time.ticks_us()
        if offset is None:
            self._real.writeblocks(block, buf)
        else:
            self._real.writeblocks(block, buf, offset)
        _Clock.flash_us += time.ticks_diff(time.ticks_us(), start)

    def readblocks(self, block, buf, offset=0):
        start = time.ticks_us()
        self._real.readblocks(block, buf, offset)
        _Clock.flash_us += time.ticks_diff(time.ticks_us(), start)

    def set_boot(self):
        start = time.ticks_us()
        self._real.set_boot()  # validates the whole image again (esp_image_verify), then otadata
        _Clock.flash_us += time.ticks_diff(time.ticks_us(), start)


class _PartitionType:
    # Stands for esp32.Partition: Partition(id) gives the real one inside `wrapper`.
    BOOT = esp32.Partition.BOOT
    RUNNING = esp32.Partition.RUNNING

    def __init__(self, wrapper):
        self._wrapper = wrapper

    def __call__(self, *args):
        return self._wrapper(esp32.Partition(*args))


class _Esp32:
    # Stands for the esp32 module in update.run(esp32=...).
    HEAP_DATA = esp32.HEAP_DATA

    def __init__(self, wrapper):
        self.Partition = _PartitionType(wrapper)

    @staticmethod
    def idf_heap_info(capabilities):
        return esp32.idf_heap_info(capabilities)


def timed_update(job, cfg):
    _Clock.flash_us = 0
    erases = ota_erases()
    gc.collect()
    start = time.ticks_us()
    result = update.run(job["url"], sha256=job["sha256"], config=cfg, esp32=_Esp32(_TimedPartition))
    seconds = time.ticks_diff(time.ticks_us(), start) / 1e6
    return {"seconds": seconds, "flash_seconds": _Clock.flash_us / 1e6, "bytes": result["bytes"],
            "result": result["result"], "erases": ota_erases() - erases}


# Samples of the memory run, in module globals: a closure's cells count as extra arguments, and a
# frame over 11 words is allocated on the heap at every call, which would be measured as well.
_totals = _flash = _heap = _state = None


def _sample(received, total):
    i = _state[0]
    if i < len(_totals):
        _totals[i] = micropython.mem_total()
        _flash[i] = _Clock.flash_alloc
        _heap[i] = gc.mem_alloc()
        _state[0] = i + 1
        if i == _state[1]:  # once, mid-update: what is really live (the rest is garbage)
            gc.collect()
            _state[2] = gc.mem_alloc()


def memory(job, cfg):
    global _totals, _flash, _heap, _state
    cfg = dict(cfg, progress_bytes=_CHUNK)
    count = (job["size"] + _CHUNK - 1) // _CHUNK + 8
    # preallocated: recording a sample allocates nothing
    _totals, _flash, _heap = [0] * count, [0] * count, [0] * count
    _state = [0, count // 2, 0]  # samples taken, the chunk where the live heap is measured, live
    totals, flash, heap, state = _totals, _flash, _heap, _state
    _Clock.flash_alloc = 0
    gc.collect()
    idle = gc.mem_alloc()
    start = time.ticks_us()
    result = update.run(job["url"], sha256=job["sha256"], config=cfg, progress=_sample,
                        esp32=_Esp32(_CountingPartition), artifact=job.get("artifact"))
    seconds = time.ticks_diff(time.ticks_us(), start) / 1e6
    n = state[0]
    # Steady state: skip the first 16 chunks (header check, first flushes), the chunks around the
    # mid-update gc.collect() and the final callback (verify_and_commit reports once more).
    mid = state[1]
    steps = [i for i in range(16, n - 2) if i != mid and i + 1 != mid]
    device = [totals[i + 1] - totals[i] - (flash[i + 1] - flash[i]) for i in steps]
    sim = [flash[i + 1] - flash[i] for i in steps]
    return {"result": result["result"], "bytes": result["bytes"], "chunks": n, "seconds": seconds,
            "steady_chunks": len(steps), "alloc_max": max(device), "alloc_mean": sum(device) / len(device),
            # (first byte of the chunk, GC bytes) for every chunk that allocated anything
            "alloc_chunks": [((i + 1) * _CHUNK, d) for i, d in zip(steps, device) if d],
            "sim_flash_alloc_mean": sum(sim) / len(sim),
            "peak_above_idle": max(heap[:n]) - idle, "first_above_idle": heap[0] - idle,
            "live_above_idle": state[2] - idle, "idle": idle, "heap_total": gc.mem_alloc() + gc.mem_free()}


def hashing(job):
    # Seconds of CPU in the hashes of the pipeline over the image now in the other slot (flash reads
    # not timed): one SHA-256 pass (update.py hashes the file, and again at the read-back) and the
    # image Verifier (its own SHA-256 + the XOR checksum).
    from ota import image_verify

    part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    sha = hashlib.sha256()
    verifier = image_verify.Verifier(part.info()[3])
    sha_us = verify_us = 0
    left = job["size"]
    block = 0
    while left > 0:
        part.readblocks(block, buf)
        chunk = view if left >= _CHUNK else view[:left]
        start = time.ticks_us()
        sha.update(chunk)
        middle = time.ticks_us()
        verifier.feed(chunk)
        verify_us += time.ticks_diff(time.ticks_us(), middle)
        sha_us += time.ticks_diff(middle, start)
        left -= _CHUNK
        block += 1
    verifier.finish()
    return {"sha_seconds": sha_us / 1e6, "verifier_seconds": verify_us / 1e6}


def main():
    # The RTC starts at 2000-01-01: no certificate verifies before the clock is set (docs/CHIP.md).
    import ntptime

    ntptime.settime()
    with open("bench.json") as f:
        jobs = json.load(f)
    for job in jobs:
        cfg = config.merge({"ota": job.get("ota", {})})["ota"]
        out = {"name": job["name"], "kind": job["kind"]}
        try:
            if job["kind"] == "raw":
                buf = bytearray(_CHUNK)
                out["runs"] = [raw(job["url"], cfg, buf) for _ in range(job.get("reps", 1))]
            elif job["kind"] == "update":
                runs = []
                buf = bytearray(_CHUNK)
                for _ in range(job.get("reps", 1)):
                    row = {}
                    if job.get("raw_url"):
                        gc.collect()
                        row["raw_seconds"], row["raw_bytes"] = raw(job["raw_url"], cfg, buf)
                    row.update(timed_update(job, cfg))
                    runs.append(row)
                out["runs"] = runs
            elif job["kind"] == "hashing":
                out.update(hashing(job))
            elif job["kind"] == "memory":
                out.update(memory(job, cfg))
        except Exception as e:  # a bench reports what broke and goes on with the next measurement
            out["error"] = "%s: %s" % (type(e).__name__, e)
        gc.collect()
        print("BENCH " + json.dumps(out))


main()
