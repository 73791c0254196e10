# The download stage: one HTTPS body into the slot writer's buffer, resumed after a drop.
#
#   download = fetch.Download(url, size, cfg, https, esp32, progress, open_args)
#   stopped = download.run(writer, sink)   # True: sink.feed() stopped it (the running version)
#
# The socket reads straight into writer.free_space() (zero copy); sink.feed(data, n) checks, hashes
# and commits those n bytes. The loop owns what is about the wire: Range requests, the answer's size
# against the slot and the trigger, reconnects with backoff, the heap during the stream, progress.
#
# Resume: a drop mid-body reconnects asking for the bytes after the last one received; the writer's
# buffer keeps what was not flushed yet and the sink's hashes already cover it. A 206 must start
# exactly there. A 200 is the whole file again: sink.restart() sends hashes, verifier and writer back
# to byte 0 (those sectors are erased a second time); appending it would corrupt (esp-idf PR #17960).
import gc
import time

try:
    from micropython import const
except ImportError:  # CPython (host tests)
    def const(x):
        return x

from ota import heap
from ota.errors import OtaError, from_oserror
from ota.http_response import HEADER_LINE
from ota.state import no_watchdog, ticks_diff, ticks_ms

_HEAP_EVERY = const(65536)  # bytes between two heap checks during the stream (cheap, no collect)
# Connection-level failures worth a reconnect once the body has started (reasons of https.py).
_RESUMABLE = ("connection_lost", "timeout", "connect_failed", "dns_failed", "tls_failed")
# Before the first byte: only what a flaky link does is retried; a host that does not resolve or
# refuses connections is a wrong URL or a server that is down, said at once.
_RETRY_FIRST = ("connection_lost", "timeout", "tls_failed")


class _Drop(Exception):
    # An OSError from the connection (not from the flash): the resume loop may reconnect.
    pass


class Download:
    # size: the trigger's size or None. total: the file's size once a server has said it.
    # feed: the watchdog's feed, called for every chunk and through the backoff pauses (None: none).
    def __init__(self, url, size, cfg, https, esp32, progress, open_args, feed=None):
        self.url, self.size, self.cfg, self.https, self.esp32 = url, size, cfg, https, esp32
        self.progress, self.open_args = progress, dict(open_args)
        self.feed = feed or no_watchdog
        self.total = size
        self._counters_from(0)
        # Bounds per job, whatever the server does: each 200 to a Range request erases the slot's
        # sectors again (flash wear), and progress resets the retry count, so a server that cuts a
        # little later each time, or trickles, could hold the device for ever without them.
        self.restarts = 0
        self.started = ticks_ms()
        self.deadline_ms = cfg["download_deadline_s"] * 1000
        # The SSLContext for every connection of this download: update.run's, or the first one's.
        self.tls_context = self.open_args.pop("tls_context", None)

    def _counters_from(self, received):
        self.next_report = received
        self.next_heap_check = received + _HEAP_EVERY

    # The download and its resume loop. Returns True when the sink stopped it. Raises OtaError (a
    # drop's reason after `retries` reconnects in a row brought no new byte, truncated,
    # too_many_restarts, download_deadline, the answer's reasons), OSError (flash, from the sink).
    def run(self, writer, sink):
        failures = 0
        while True:
            start = writer.received
            try:
                # The status and header lines go into the chunk buffer's free part: one buffer for
                # the whole update (http_response.read_head).
                resp = self.https.open(self.url, start=start, tls_context=self.tls_context,
                                       line=writer.free_space(), **self.open_args)
            except OSError as e:  # https.py lets only ENOMEM through: never worth a retry
                raise from_oserror(e)
            except OtaError as e:
                if e.reason not in (_RESUMABLE if writer.received else _RETRY_FIRST):
                    raise
                error = e
            else:
                self.tls_context = getattr(resp, "tls_context", None) or self.tls_context
                # The handshake and the headers leave garbage behind; collect it once per
                # connection, before the copy loop (never inside it), so the peak stays low.
                gc.collect()
                try:
                    self._accept(resp, start, writer, sink)
                    if self._stream(resp, writer, sink):
                        return True
                    received = writer.received
                    if self.total is None or received >= self.total:
                        if self.progress:
                            self.progress(received, self.total)
                        return False
                    error = OtaError("truncated", "body ended at %d of %d" % (received, self.total))
                except _Drop as e:  # a reset or timeout mid-body: worth a resume, named as such
                    named = self.https.reason(e.args[0])
                    error = OtaError(named, str(e.args[0])) if named else from_oserror(e.args[0])
                except OtaError as e:
                    if e.reason not in _RESUMABLE:
                        raise
                    error = e
                finally:
                    resp.close()
            failures = 1 if writer.received > start else failures + 1
            if failures > self.cfg["retries"] or error.reason == "low_memory":
                raise error
            _pause(self.cfg["retry_backoff_ms"] << min(failures - 1, 5), self.feed)
            self._check_deadline()
            # A new TLS session needs its block; when the bytes kept in the buffer leave less than
            # a header line free, the headers need a line buffer of their own (read_head).
            extra = HEADER_LINE if len(writer.buf) - writer.fill < HEADER_LINE else 0
            heap.check(self.cfg["min_free"] + extra, esp32=self.esp32)

    # Raises OtaError download_deadline once the job has downloaded for ota.download_deadline_s.
    # Checked between chunks and reconnects: a single 4 KiB read slower than the watchdog's timeout
    # is the watchdog's to end.
    def _check_deadline(self):
        if ticks_diff(ticks_ms(), self.started) > self.deadline_ms:
            raise OtaError("download_deadline", "not done after %d s (ota.download_deadline_s)"
                           % (self.deadline_ms // 1000))

    # A (re)connection's answer against what was asked. Raises OtaError too_large, size_mismatch,
    # too_many_restarts.
    def _accept(self, resp, start, writer, sink):
        # A 206 that does not start at `start` never gets here: http_response.Response refuses it.
        if start and resp.status == 200:  # Range ignored: the whole file again, from byte 0
            self.restarts += 1
            if self.restarts > self.cfg["max_restarts"]:
                raise OtaError("too_many_restarts", "%d answers of 200 to a Range request (ota.max_restarts %d)"
                               % (self.restarts, self.cfg["max_restarts"]))
            sink.restart()
            self._counters_from(0)
        total, slot = resp.total, writer.slot_size
        if total is not None:
            if total > slot:
                raise OtaError("too_large", "%d bytes, the slot holds %d" % (total, slot))
            if self.size is not None and total != self.size:
                raise OtaError("size_mismatch", "server has %d bytes, trigger says %d" % (total, self.size))
            self.total = total

    # One connection's body. Returns True when the sink stopped it, False at the end of the body.
    # Raises _Drop, OtaError, OSError (flash).
    def _stream(self, resp, writer, sink):
        while True:
            self.feed()
            self._check_deadline()
            free = writer.free_space()
            try:
                n = resp.readinto(free)
            except OSError as e:
                raise _Drop(e)
            if n == 0:
                return False
            if sink.feed(free if n == len(free) else free[:n], n):
                return True
            if writer.received >= self.next_heap_check:
                self.next_heap_check = writer.received + _HEAP_EVERY
                heap.check_stream(self.cfg["min_free"])
            if self.progress and writer.received >= self.next_report:
                self.next_report = writer.received + self.cfg["progress_bytes"]
                self.progress(writer.received, self.total)


# Sleeps ms, feeding the watchdog at least every second (a backoff can be longer than its timeout).
def _pause(ms, feed):
    while ms > 0:
        feed()
        step = ms if ms < 1000 else 1000
        if hasattr(time, "sleep_ms"):
            time.sleep_ms(step)
        else:  # CPython
            time.sleep(step / 1000)
        ms -= step
