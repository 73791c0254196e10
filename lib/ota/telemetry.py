# What one update cost, carried by its final state (ok, failed, rolled_back) as "t" (README
# "Per-update telemetry"):
#
#   "t": {"to": "1.0.1", "art": "full", "conn_ms": 412, "dl_ms": 4210, "write_ms": 1630,
#         "verify_ms": 380, "boot_ms": 820, "reboot_s": 2, "fetched": 1713728, "resumes": 0,
#         "restarts": 0, "heap_min": 80512, "idf_min": 150000, "rssi0": -55, "rssi_min": -61,
#         "reset": "HARD_RESET"}
#
# conn_ms: connect + TLS + headers, all connections; dl_ms: first connect to the last byte (erase and
# write happen inside it, as the bytes stream: write_ms is their share); verify_ms: read-back hash +
# set_boot; boot_ms: the new image's uptime when it confirmed (Wi-Fi, MQTT, health gate); reboot_s:
# wall clock from "rebooting" to the confirmation (null while a clock is unset); fetched: body bytes
# received, those fetched again after a drop or a restart included (null for a compressed image
# decoded straight from the socket, which the count cannot see); heap_min / idf_min: lowest free
# GC heap and largest free IDF block seen (at each connect and progress step); rssi0 / rssi_min: Wi-Fi
# RSSI at the start and the lowest seen; reset: machine.reset_cause() of the boot that judged the new
# image (its first boot for ok; the old image's boot after a rollback); art: the artifact used.
#
# The Meter times the data path from outside: it wraps the https module (open, readinto) and the target
# partition (writeblocks, readblocks, set_boot), so fetch.py and update.py stay as they are, and adds
# one call and a few small-int additions per 4 KiB chunk, no allocation. The numbers go into the job
# record (jobs.py, scalar fields "t_...") so that they survive the reboot into the new image.
import gc

from ota import heap, state
from ota.state import ticks_diff, ticks_ms

_RESETS = {1: "PWRON_RESET", 2: "HARD_RESET", 3: "WDT_RESET", 4: "DEEPSLEEP_RESET", 5: "SOFT_RESET"}
KEYS = ("to", "art", "conn_ms", "dl_ms", "write_ms", "verify_ms", "boot_ms", "reboot_s", "fetched",
        "resumes", "restarts", "heap_min", "idf_min", "rssi0", "rssi_min", "reset")


class Meter:
    # One per job. esp32: the module (idf_heap_info; None: not sampled); wlan: the station interface
    # (status('rssi'); None: not sampled).
    def __init__(self, to_version, esp32=None, wlan=None, artifact="full"):
        self.to, self.art = to_version, artifact
        self.esp32, self.wlan = esp32, wlan
        self.conn_ms = self.write_ms = self.verify_ms = 0
        self.fetched = self.resumes = self.restarts = self.connects = 0
        self.direct = False  # a compressed stream decoded straight from the socket: fetched uncounted
        self.first = self.last = None  # ticks of the first connect and of the first read-back
        self.heap_min = self.idf_min = self.rssi_min = None
        self.rssi0 = self._rssi()
        self.sample()

    def _rssi(self):
        if self.wlan is None:
            return None
        try:
            return self.wlan.status("rssi")
        except (OSError, ValueError, TypeError):  # not connected; a port without it
            return None

    def sample(self):
        # Lowest heap, IDF block and RSSI so far. Allocates idf_heap_info's small list: called per
        # connection and per progress step, never per chunk.
        free = getattr(gc, "mem_free", None)
        if free is not None:
            self.heap_min = _low(self.heap_min, free())
        if self.esp32 is not None:  # None: not sampled (heap.largest_idf_block would import esp32)
            self.idf_min = _low(self.idf_min, heap.largest_idf_block(self.esp32))
        self.rssi_min = _low(self.rssi_min, self._rssi())

    def https(self, module):
        return _Https(module, self)

    def partition(self, part):
        return _Slot(part, self)

    def fields(self):
        # The job record's "t_" fields (jobs.update(**meter.fields())).
        end = self.last if self.last is not None else ticks_ms()
        dl = ticks_diff(end, self.first) if self.first is not None else None
        return {"t_to": self.to, "t_art": self.art, "t_conn_ms": self.conn_ms, "t_dl_ms": dl,
                "t_write_ms": self.write_ms, "t_verify_ms": self.verify_ms, "t_fetched": None if self.direct else self.fetched,
                "t_resumes": self.resumes, "t_restarts": self.restarts, "t_heap_min": self.heap_min,
                "t_idf_min": self.idf_min, "t_rssi0": self.rssi0, "t_rssi_min": self.rssi_min,
                "t_reboot_at": state.unix_time()}


def _low(current, value):
    if value is None:
        return current
    return value if current is None or value < current else current


def confirmed(record, reset_cause, uptime_ms):
    # The new image's share, added to the record when it confirms: -> dict of "t_" fields.
    at, now = record.get("t_reboot_at"), state.unix_time()
    return {"t_boot_ms": uptime_ms, "t_reboot_s": max(0, now - at) if at is not None and now is not None else None,
            "t_reset": _RESETS.get(reset_cause, reset_cause)}


def reset_name(cause):
    return _RESETS.get(cause, cause)


def record(job_record):
    # The "t" object of a final state message, from the job record; None when the job kept none
    # (refused before it started, or written by an older firmware).
    if not job_record or "t_to" not in job_record:
        return None
    out = {}
    for key in KEYS:
        out[key] = job_record.get("t_" + key)
    return out


class _Https:
    # The https module as update.run and fetch.Download use it: open(), reason() and context().
    def __init__(self, module, meter):
        self.module, self.meter = module, meter
        # update.run makes the update's one SSLContext with it when the workspace has none
        self.context = getattr(module, "context", None)

    def open(self, url, start=0, **kwargs):
        meter = self.meter
        began = ticks_ms()
        if meter.first is None:
            meter.first = began
        resp = self.module.open(url, start=start, **kwargs)
        meter.conn_ms += ticks_diff(ticks_ms(), began)
        meter.connects += 1
        if start:
            meter.resumes += 1
            if resp.status == 200:  # the server ignored the Range: the whole file again
                meter.restarts += 1
        meter.sample()  # the TLS session is open: the IDF heap is at its lowest
        return _Response(resp, meter)

    def reason(self, error):
        return self.module.reason(error)


class _Response:
    # The answer, counting the body bytes. No try block and no allocation in readinto (the hot path).
    def __init__(self, resp, meter):
        self.resp, self.meter = resp, meter
        # The answer's fields, as https.Response has them (fetch.py reads status and total).
        self.status, self.total = resp.status, resp.total
        self.url, self.length = getattr(resp, "url", None), getattr(resp, "length", None)
        self.range_start, self.chunked = getattr(resp, "range_start", None), getattr(resp, "chunked", False)
        # the context https.open made, for every resume of the download (fetch.py)
        self.tls_context = getattr(resp, "tls_context", None)

    @property
    def _stream(self):
        # The raw socket, for the compressed path's direct decode (inflate.py): the C inflater reads
        # it without a Python call per byte, 5x less CPU than through readinto. Those bytes bypass
        # the count, so `fetched` becomes null (not measured) rather than a wrong number.
        raw = getattr(self.resp, "_stream", None)
        if raw is not None:
            self.meter.direct = True
        return raw

    def readinto(self, buf):
        n = self.resp.readinto(buf)
        self.meter.fetched += n
        return n

    def close(self):
        self.resp.close()


class _Slot:
    # The target partition as writer.SlotWriter and update.run use it. writeblocks erases then
    # programs (2 arguments); readblocks after the download is the read-back.
    def __init__(self, part, meter):
        self.part, self.meter = part, meter

    def info(self):
        return self.part.info()

    def ioctl(self, op, arg):
        return self.part.ioctl(op, arg)

    def writeblocks(self, block, buf):
        began = ticks_ms()
        self.part.writeblocks(block, buf)
        self.meter.write_ms += ticks_diff(ticks_ms(), began)

    def readblocks(self, block, buf):
        meter = self.meter
        began = ticks_ms()
        if meter.last is None:
            meter.last = began  # the download is over: the read-back starts
        self.part.readblocks(block, buf)
        meter.verify_ms += ticks_diff(ticks_ms(), began)

    def set_boot(self):
        began = ticks_ms()
        self.part.set_boot()
        self.meter.verify_ms += ticks_diff(ticks_ms(), began)
