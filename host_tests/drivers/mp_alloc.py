# MicroPython driver (run by test_writer.py / test_update_unit.py with .venv/bin/micropython): streams
# an image file into a file-backed fake partition and measures the GC bytes allocated per 4 KiB chunk
# in the steady state (micropython.mem_total() deltas). Goal: 0.
#
#   micropython mp_alloc.py LIBDIR IMAGE SLOTFILE MODE [SHA256]    MODE: commit | update
# SHA256 (update only): the trigger's hash, which the read-back proves instead of a streaming hash.
# Prints one line: "alloc mode=... chunks=N steady_max=B steady_mean=B total=B ok=1".
import gc
import hashlib
import sys

import micropython
from fileflash import SLOT, Esp32, FilePartition, FileResponse

sys.path.insert(0, sys.argv[1])
from ota.writer import SlotWriter

IMAGE, SLOTFILE, MODE = sys.argv[2], sys.argv[3], sys.argv[4]
SHA256 = sys.argv[5] if len(sys.argv) > 5 else None
marks = [0] * 1024  # mem_total() before each read; preallocated so recording allocates nothing
count = 0


FilePartition.path = SLOTFILE  # ota_1 at its start; ota_0 has no file


class Response(FileResponse):
    # The image file as the answer; each read marks mem_total() first.
    def __init__(self):
        FileResponse.__init__(self, IMAGE)

    def readinto(self, buf):
        global count
        if count < len(marks):
            marks[count] = micropython.mem_total()
            count += 1
        return self.f.readinto(buf)


class Https:
    @staticmethod
    def open(url, start=0, **kw):
        return Response()


def progress(done, total):
    pass


def report(extra_ok):
    n = count
    steady = [marks[i + 1] - marks[i] for i in range(4, n - 3)]
    print("alloc mode=%s chunks=%d steady_max=%d steady_mean=%d total=%d ok=%d"
          % (MODE, n, max(steady), sum(steady) // len(steady), marks[n - 1] - marks[4], extra_ok))


gc.collect()
if MODE == "update":
    from ota import update

    result = update.run("https://x/fw.bin", https=Https, esp32=Esp32, running="0.0.1", progress=progress,
                        running_project="micropython", sha256=SHA256)  # the test image's (firmware_image.PRODUCT)
    report(result["result"] == "ok")
else:
    buf = bytearray(4096)
    writer = SlotWriter(FilePartition("ota_1", 0x1E0000), buf, (0, 0x10, 0x10000, SLOT, "ota_0", False))
    resp = Response()
    digest = hashlib.sha256()
    while True:  # MODE commit: the zero-copy path of fetch.py
        free = writer.free_space()
        n = resp.readinto(free)
        if n == 0:
            break
        digest.update(free if n == len(free) else free[:n])
        writer.commit(n)
    total = writer.finish()
    report(writer.readback_sha256(total) == digest.digest())
