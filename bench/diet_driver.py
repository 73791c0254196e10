# Device-side driver of bench/diet_bench.py (issue 13): fs/main.py of a simulated ESP32-C3, in place of
# the agent. Reads diet.json and prints one "DIET {json}" line per job:
#   {"kind": "update", "url", "sha256", "ota", "idle"?}
#                                                the post-import baseline (gc.mem_alloc() after every
#                                                device module is imported and collected), then one
#                                                ota.update.run: ok or the reason. The host runs it at
#                                                shrinking -X heapsize to find the smallest that works;
#                                                "idle": true stops after the baseline.
#   {"kind": "heap", "url"}                      live bytes (after gc.collect()) and garbage
#                                                (micropython.mem_total deltas) of each piece of an
#                                                update, built one by one the way update.run does
#   {"kind": "timeline", "url", "reps"}          one connection, step by step, with TCP_NODELAY off and
#                                                on: DNS, TCP connect, TLS handshake, request, first
#                                                body byte; and the real https.open, timed whole
#   {"kind": "profile", "url", "sha256", "reps"} the update's streaming time split per chunk (job_profile)
#   {"kind": "stream", "url", "sha256", "reps"}  a raw TLS download (https.open + readinto into a 4 KiB
#                                                buffer, discarded) and ota.update.run of the same file,
#                                                interleaved: connection-open time, streaming time (open
#                                                returned -> body ended), the simulated flash's time; and
#                                                the same update with the flash out of the loop
#                                                (writeblocks a no-op; the slot holds the file from the
#                                                update before it, so this one completes too)
import gc
import json
import socket
import time

import esp32
import micropython

# In the agent's order: the target slot first (slots.py: get_next_update() allocates 4 KiB in one
# piece, MP #8382), then the update's workspace (jobrun.Runner at start-up: the buffer; the SSLContext
# once the radio is on, workspace.py), and only then every other module of the data path (jobrun imports
# update at the first job). All of it is part of the baseline, as it is part of the agent's. A job
# list with "workspace": false runs without one (before issue 13's third pass: update.run makes its
# buffer and context itself).
_TARGET = esp32.Partition(esp32.Partition.RUNNING).get_next_update()


def _workspace():
    with open("diet.json") as f:
        no_workspace = '"workspace": false' in f.read()
    import network

    from ota.config import DEFAULTS
    from ota.workspace import Workspace

    workspace = None if no_workspace else Workspace(DEFAULTS["ota"])
    network.WLAN(network.STA_IF).active(True)  # the agent's link, with or without a workspace
    if workspace is not None:
        workspace.make_context()  # once the radio is on, as the agent makes it
    return workspace


_WORKSPACE = _workspace()

from ota import (compat, config, fetch, heap, http_response, https, image, image_verify,  # noqa: E402, F401
                 update, version, writer)

_CHUNK = 4096


class _Clock:
    flash_us = 0
    open_us = 0
    stream_us = 0
    t_opened = 0
    t_end = 0
    flash_at_end = 0
    no_flash = False  # job_stream's third run: writeblocks does nothing (the update's own work alone)


class _TimedResponse:
    # The real Response; readinto's end of body is timed. Tiny methods: a frame over 11 words would be
    # allocated on the heap at every call.
    def __init__(self, resp):
        self._r = resp
        self.status, self.total, self.length = resp.status, resp.total, resp.length
        self.range_start, self.url = resp.range_start, resp.url
        self.tls_context = getattr(resp, "tls_context", None)

    def readinto(self, buf):
        n = self._r.readinto(buf)
        if n == 0:
            _Clock.t_end = time.ticks_us()
            _Clock.flash_at_end = _Clock.flash_us
        return n

    def close(self):
        self._r.close()


class _TimedHttps:
    reason = staticmethod(https.reason)
    context = staticmethod(https.context)

    @staticmethod
    def open(url, **kw):
        start = time.ticks_us()
        resp = https.open(url, **kw)
        _Clock.t_opened = time.ticks_us()
        _Clock.open_us += time.ticks_diff(_Clock.t_opened, start)
        _Clock.t_end = 0
        return _TimedResponse(resp)


class _TimedPartition:
    def __init__(self, real):
        self._real = real

    def info(self):
        return self._real.info()

    def ioctl(self, cmd, arg):
        return self._real.ioctl(cmd, arg)

    def writeblocks(self, block, buf):
        if _Clock.no_flash:
            return
        start = time.ticks_us()
        self._real.writeblocks(block, buf)
        _Clock.flash_us += time.ticks_diff(time.ticks_us(), start)

    def readblocks(self, block, buf, offset=0):
        start = time.ticks_us()
        self._real.readblocks(block, buf, offset)
        _Clock.flash_us += time.ticks_diff(time.ticks_us(), start)

    def get_next_update(self):
        return _TimedPartition(self._real.get_next_update())

    def set_boot(self):
        start = time.ticks_us()
        self._real.set_boot()
        _Clock.flash_us += time.ticks_diff(time.ticks_us(), start)


class _PartitionType:
    BOOT = esp32.Partition.BOOT
    RUNNING = esp32.Partition.RUNNING

    def __call__(self, *args):
        return _TimedPartition(esp32.Partition(*args))


class _Esp32:
    HEAP_DATA = esp32.HEAP_DATA
    Partition = _PartitionType()

    @staticmethod
    def idf_heap_info(capabilities):
        return esp32.idf_heap_info(capabilities)


def _rom_reserved():
    try:
        import simdev

        return simdev.rom_reserved
    except (ImportError, AttributeError):
        return 0


def job_update(job, cfg):
    # The target slot and the workspace were taken before the imports, as the agent takes them.
    target = _TARGET
    gc.collect()
    # The room simboot holds for the frozen modules' ROMFS image is flash on the board, and the
    # runner adds it to -X heapsize: it is neither baseline nor heap.
    base = gc.mem_alloc() - _rom_reserved()
    out = {"baseline": base, "heap_total": base + gc.mem_free(), "rom": _rom_reserved()}
    if job.get("map"):  # where the free heap above the baseline lies (holes), for docs/MEMORY.md
        micropython.mem_info(1)
    if job.get("idle"):  # the same process without the update: the heap the baseline itself needs
        out["result"] = "ok"
        return out
    check = heap.check
    if job.get("admission"):  # what heap.check saw: the free GC heap after its collect (ota.min_free's bisection)
        def recording(required, esp32=None):
            gc.collect()
            out["free_at_check"] = gc.mem_free()
            return check(required, esp32=esp32)
        heap.check = recording
    try:
        result = update.run(job["url"], sha256=job["sha256"], config=cfg, target=target, workspace=_WORKSPACE)
        out["result"] = result["result"]
    except Exception as e:  # OtaError: its reason; anything else by name
        out["result"] = getattr(e, "reason", type(e).__name__)
        out["detail"] = str(e)
    heap.check = check
    return out


def _live(label, rows, before, total_before):
    gc.collect()
    rows.append([label, gc.mem_alloc() - before, micropython.mem_total() - total_before])


def job_heap(job, cfg):
    # The pieces of one update in the order update.run and fetch.Download make them, each measured
    # as [name, live bytes it added, bytes allocated while making it (live + garbage)].
    rows = []
    running = esp32.Partition(esp32.Partition.RUNNING)
    target = running.get_next_update()
    running_info = running.info()  # update.run reads it before the buffer too
    gc.collect()
    base = gc.mem_alloc()
    m = lambda: (gc.mem_alloc(), micropython.mem_total())  # noqa: E731
    a, t = m()
    buf = bytearray(cfg["chunk_size"])
    _live("chunk buffer (bytearray %d): the workspace's, at start-up" % cfg["chunk_size"], rows, a, t)
    a, t = m()
    w = writer.SlotWriter(target, buf, running_info)
    _live("SlotWriter (+ its memoryview)", rows, a, t)
    a, t = m()
    a, t = m()
    ctx = https.context(cfg["ca_path"])
    _live("SSLContext + CA (https.context): the workspace's, at start-up", rows, a, t)
    a, t = m()
    v = image_verify.Verifier(w.slot_size, hashing=False)
    _live("streaming image_verify.Verifier (structure + checksum)", rows, a, t)
    a, t = m()
    try:  # issue 13's https.open takes the context and the header buffer
        resp = https.open(job["url"], ca_path=cfg["ca_path"], tls_context=ctx, line=w.free_space())
    except TypeError:
        resp = https.open(job["url"], ca_path=cfg["ca_path"])
    _live("connection: socket + TLS session + Response (https.open)", rows, a, t)
    a, t = m()
    n = resp.readinto(w.free_space())
    v.feed(w.view[:n])
    _live("first chunk read + fed", rows, a, t)
    resp.close()
    a, t = m()
    resp = None
    _live("connection closed", rows, a, t)
    a, t = m()
    import hashlib
    _readback = (hashlib.sha256(), image_verify.Verifier(w.slot_size))  # alive while measured
    _live("read-back: the file's SHA-256 + the image Verifier with its SHA-256", rows, a, t)
    gc.collect()
    return {"rows": rows, "baseline": base, "live_end": gc.mem_alloc() - base}


def _step_connect(host, port, nodelay):
    # One connection the way https._connect makes it, timed per step (ms).
    t0 = time.ticks_us()
    info = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    t1 = time.ticks_us()
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(10)
    sock.connect(info[-1])
    t2 = time.ticks_us()
    return sock, t0, t1, t2


def job_timeline(job, cfg):
    from ota import url as urls

    _, host, port, path = urls.split(job["url"])
    ctx = https.context(cfg["ca_path"])
    buf = bytearray(_CHUNK)
    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (path, host, port)).encode()
    out = {}
    for nodelay in (False, True, False, True) * job.get("reps", 5):
        sock, t0, t1, t2 = _step_connect(host, port, nodelay)
        tls = ctx.wrap_socket(sock, server_hostname=host)
        t3 = time.ticks_us()
        tls.write(request)
        t4 = time.ticks_us()
        http_response.read_head(tls, memoryview(buf))  # as https.open reads it: byte by byte
        t5 = time.ticks_us()
        tls.readinto(buf, 1)  # the first body byte
        t6 = time.ticks_us()
        tls.close()
        row = [time.ticks_diff(t1, t0), time.ticks_diff(t2, t1), time.ticks_diff(t3, t2),
               time.ticks_diff(t4, t3), time.ticks_diff(t5, t4), time.ticks_diff(t6, t0)]
        out.setdefault("nodelay" if nodelay else "nagle", []).append(row)
    opens = []
    for _ in range(job.get("reps", 5) * 2):
        start = time.ticks_us()
        resp = https.open(job["url"], ca_path=cfg["ca_path"])
        opens.append(time.ticks_diff(time.ticks_us(), start))
        resp.close()
    out["https_open"] = opens
    out["nodelay_supported"] = hasattr(socket, "TCP_NODELAY")
    return out


def _raw_download(url, cfg, buf):
    # https.open + readinto into buf until the end, bytes discarded.
    gc.collect()
    _Clock.open_us = 0
    start = time.ticks_us()
    resp = _TimedHttps.open(url, ca_path=cfg["ca_path"])
    total = 0
    while True:
        n = resp.readinto(buf)
        if n == 0:
            break
        total += n
    resp.close()
    return {"open_us": _Clock.open_us, "stream_us": time.ticks_diff(_Clock.t_end, _Clock.t_opened),
            "all_us": time.ticks_diff(time.ticks_us(), start), "bytes": total}


def job_stream(job, cfg):
    # Interleaved per repetition: a raw download, then the update.
    runs = []
    buf = bytearray(_CHUNK)
    for _ in range(job.get("reps", 3)):
        raw = _raw_download(job["url"], cfg, buf)
        gc.collect()
        _Clock.open_us = _Clock.flash_us = 0
        start = time.ticks_us()
        result = update.run(job["url"], sha256=job["sha256"], config=cfg, https=_TimedHttps, esp32=_Esp32(),
                            workspace=_WORKSPACE)
        end = time.ticks_us()
        upd = {"open_us": _Clock.open_us, "stream_us": time.ticks_diff(_Clock.t_end, _Clock.t_opened),
               "all_us": time.ticks_diff(end, start), "flash_us": _Clock.flash_us,
               "flash_stream_us": _Clock.flash_at_end, "after_us": time.ticks_diff(end, _Clock.t_end),
               "bytes": result["bytes"]}
        gc.collect()
        _Clock.no_flash = True
        reason = None
        try:  # nothing written, yet the read-back passes: the update before wrote the same file
            update.run(job["url"], sha256=job["sha256"], config=cfg, https=_TimedHttps, esp32=_Esp32(),
                       workspace=_WORKSPACE)
        except update.OtaError as e:
            reason = e.reason
        finally:
            _Clock.no_flash = False
        upd["no_flash"] = {"stream_us": time.ticks_diff(_Clock.t_end, _Clock.t_opened), "reason": reason}
        runs.append({"raw": raw, "update": upd})
    return {"runs": runs}


class _Prof:
    read_us = 0
    feed_us = 0
    commit_us = 0
    heap_us = 0
    chunks = 0


def _timed(fn, field):
    # fn wrapped: its time added to _Prof.<field>. Two ticks_us calls per call, about 1 us each here.
    def wrapper(*args):
        start = time.ticks_us()
        out = fn(*args)
        setattr(_Prof, field, getattr(_Prof, field) + time.ticks_diff(time.ticks_us(), start))
        return out
    return wrapper


def job_profile(job, cfg):
    # Where the update's streaming time goes beyond the raw download's, per 4 KiB chunk: the
    # response's readinto, update._Update.feed (the image check + SlotWriter.commit, which flushes
    # to the flash), SlotWriter.commit alone, the simulated flash alone (writeblocks), the stream's
    # heap check (heap.check_stream: gc.mem_free() walks the whole GC heap); the rest of the stream
    # time is fetch.Download._stream's own loop (watchdog feed, deadline, progress). Separate runs
    # from "stream": the wrappers cost a little time themselves.
    runs = []
    feed, commit, readinto = update._Update.feed, writer.SlotWriter.commit, _TimedResponse.readinto
    check_stream = heap.check_stream
    update._Update.feed = _timed(feed, "feed_us")
    writer.SlotWriter.commit = _timed(commit, "commit_us")
    _TimedResponse.readinto = _timed(readinto, "read_us")
    heap.check_stream = _timed(check_stream, "heap_us")
    try:
        for _ in range(job.get("reps", 3)):
            gc.collect()
            _Prof.read_us = _Prof.feed_us = _Prof.commit_us = _Prof.heap_us = 0
            _Clock.open_us = _Clock.flash_us = 0
            result = update.run(job["url"], sha256=job["sha256"], config=cfg, https=_TimedHttps, esp32=_Esp32(),
                            workspace=_WORKSPACE)
            runs.append({"stream_us": time.ticks_diff(_Clock.t_end, _Clock.t_opened), "read_us": _Prof.read_us,
                         "feed_us": _Prof.feed_us, "commit_us": _Prof.commit_us, "heap_us": _Prof.heap_us,
                         "flash_stream_us": _Clock.flash_at_end, "chunks": (result["bytes"] + _CHUNK - 1) // _CHUNK})
    finally:
        update._Update.feed, writer.SlotWriter.commit, _TimedResponse.readinto = feed, commit, readinto
        heap.check_stream = check_stream
    return {"runs": runs}


def main():
    import ntptime

    ntptime.settime()  # no certificate verifies before the clock is set (docs/CHIP.md)
    with open("diet.json") as f:
        jobs = json.load(f)
    for job in jobs:
        cfg = config.merge({"ota": job.get("ota", {})})["ota"]
        out = {"name": job["name"], "kind": job["kind"]}
        try:
            out.update(globals()["job_" + job["kind"]](job, cfg))
        except Exception as e:  # a bench reports what broke and goes on
            out["error"] = "%s: %s" % (type(e).__name__, e)
        gc.collect()
        print("DIET " + json.dumps(out))


main()
