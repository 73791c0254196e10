# MicroPython driver (host_tests/test_inflate_device.py, bench): the real ota.update.run on a
# compressed or delta artifact (an OTAZ container file) into file-backed fake partitions, with drops
# at given offsets of the file, and the GC bytes allocated between two samples (each socket read, each 4 KiB image chunk) in the steady state.
#
#   micropython mp_inflate.py LIBDIR CONTAINER SLOTFILE ENCODING SHA256 SIZE [DROPS] [BASESHA|-] [direct|-] [FILESHA]
#     ENCODING: deflate | delta; DROPS: comma-separated file offsets where the connection drops
#     SLOTFILE holds ota_0 (running, the delta's base) at 0 and ota_1 (the target) at 0x1D0000
# Prints one line: "inflate result=... reason=... chunks=N steady_max=B total=B downloaded=B peak=B".
import gc
import sys

import micropython
from fileflash import SLOT, Esp32, FilePartition

sys.path.insert(0, sys.argv[1])
CONTAINER, SLOTFILE, ENCODING, SHA, SIZE = sys.argv[2:7]
DROPS = [int(x) for x in sys.argv[7].split(",")] if len(sys.argv) > 7 and sys.argv[7] else []
BASESHA = sys.argv[8] if len(sys.argv) > 8 and sys.argv[8] != "-" else None
DIRECT = len(sys.argv) > 9 and sys.argv[9] == "direct"  # the file object as the response's socket
FILESHA = sys.argv[10] if len(sys.argv) > 10 else None  # the trigger's file_sha256
marks = [0] * 4096  # mem_total() at each socket read; preallocated so recording allocates nothing
count = 0
peak = [0]
idle = [0]
wire = [0]


FilePartition.path = SLOTFILE
FilePartition.bases = {"ota_0": 0, "ota_1": SLOT}
FilePartition.announce = True


class Response:
    # A 206 from `start`, cut (OSError ECONNRESET) at the next drop offset past start.
    def __init__(self, start):
        self.f = open(CONTAINER, "rb")
        self.f.seek(0, 2)
        self.total = self.f.tell()
        self.f.seek(start)
        self.pos = start
        self.status = 206 if start else 200
        self.chunked = False
        if DIRECT:
            self._stream = self.f  # a native stream: inflate.Loader._raw hands it to DeflateIO
        self.range_start = start if start else None
        self.cut = None
        for d in DROPS:
            if d > start:
                self.cut = d
                DROPS.remove(d)
                break

    def readinto(self, buf):
        sample()
        if self.cut is not None and self.pos + len(buf) > self.cut:
            raise OSError(104)
        n = self.f.readinto(buf)
        self.pos += n
        wire[0] += n
        return n

    def close(self):
        self.f.close()


def sample():
    # mem_total() and the heap above idle, at every socket read and every image chunk (progress).
    global count
    if count < len(marks):
        marks[count] = micropython.mem_total()
        count += 1
    used = gc.mem_alloc() - idle[0]
    if used > peak[0]:
        peak[0] = used


def progress(done, total):
    sample()


class Https:
    @staticmethod
    def open(url, start=0, **kw):
        return Response(start)

    @staticmethod
    def reason(e):
        return "connection_lost"


from ota import update, inflate, delta  # noqa: E402,F401  (frozen on the board: imported before idle)
from ota.errors import OtaError  # noqa: E402

artifact = None if ENCODING == "none" else {"encoding": ENCODING, "file_sha256": FILESHA, "file_size": None, "base_sha256": BASESHA}
gc.collect()
idle[0] = gc.mem_alloc()
reason = "-"
try:
    result = update.run("https://x/fw.z", sha256=SHA, size=int(SIZE), https=Https, esp32=Esp32,
                        running="0.0.1", running_project="micropython",
                        config={"retry_backoff_ms": 1, "progress_bytes": 4096}, artifact=artifact,
                        progress=progress)["result"]
except OtaError as e:
    result, reason = "error", e.reason
n = count
# Steady state: past the first 16 samples (header, image header check, first flushes) and the end.
steady = [marks[i + 1] - marks[i] for i in range(16, n - 3)] or [0]
print("inflate result=%s reason=%s chunks=%d steady_max=%d total=%d downloaded=%d peak=%d"
      % (result, reason, n, max(steady), marks[n - 1] - marks[min(16, n - 1)], wire[0], peak[0]))
