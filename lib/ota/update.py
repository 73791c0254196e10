# The update itself: heap check -> fetch (with resume) -> image check -> write -> verify -> set_boot.
#
#   result = update.run(url, sha256=hex, size=n, version="1.2.0", token=tok, config=cfg, progress=cb)
#   -> {"result": "ok", "version": v, "bytes": n, "slot": "ota_1", "sha256": hex, "restarts": 0}
#      {"result": "same_version", "version": v, "bytes": 0, "slot": ...}: nothing was written
#
# On any failure the boot slot is untouched (set_boot is the last step, reached only when every check
# passed), the target slot's first sector is erased if anything was written, and OtaError is raised.
# The reset is the caller's: it reports "rebooting" first.
#
# Resume: a drop mid-body reconnects asking for the bytes after the last one received; the writer's
# buffer keeps what was not flushed yet and the hashes already cover it. A 206 must start exactly
# there. A 200 is the whole file again: hashes, verifier and writer restart at byte 0 (those sectors
# are erased a second time, counted in "restarts"); appending it would corrupt (esp-idf PR #17960).
import binascii
import errno
import gc
import hashlib
import time

try:
    from micropython import const
except ImportError:  # CPython (host tests)
    def const(x):
        return x

from ota import heap
from ota.config import DEFAULTS
from ota.errors import OtaError
from ota.writer import SlotWriter

_HEADER_BYTES = const(0x100)  # image.check_header needs this much of the image
_HEAP_EVERY = const(65536)  # bytes between two heap checks during the stream (cheap, no collect)
_VALIDATE_FAILED = const(-5379)  # ESP_ERR_OTA_VALIDATE_FAILED from Partition.set_boot()
# Connection-level failures worth a reconnect once the body has started (reasons of https.py).
_RESUMABLE = ("connection_lost", "timeout", "connect_failed", "dns_failed", "tls_failed")
# Before the first byte: only what a flaky link does is retried; a host that does not resolve or
# refuses connections is a wrong URL or a server that is down, said at once.
_RETRY_FIRST = ("connection_lost", "timeout", "tls_failed")
_OPEN_KEYS = ("ca_path", "token_host", "allow_http", "connect_timeout", "read_timeout")


# OSError -> OtaError with a stable reason. Raises nothing.
def _reason(exc):
    code = exc.args[0] if exc.args else None
    if code == errno.ENOMEM:
        return OtaError("low_memory", "ENOMEM")
    if code == errno.ETIMEDOUT:
        return OtaError("timeout", "ETIMEDOUT")
    return OtaError("io_error", str(exc))


class _Drop(Exception):
    # An OSError from the connection (not from the flash): the resume loop may reconnect.
    pass


class _Update:
    def __init__(self, url, sha256, size, version, cfg, progress, modules, running):
        self.url, self.size, self.version, self.cfg, self.progress = url, size, version, cfg, progress
        self.expect = sha256.lower() if sha256 else None
        self.https, self.image, self.esp32 = modules
        self.running = running
        self.writer = None
        self.total = size

    # Everything received is dropped: the download starts again at byte 0. Raises nothing.
    def reset(self):
        if self.writer.received:
            self.writer.restart()  # counted in writer.restarts
        self.sha = hashlib.sha256()  # the whole file, as the trigger's sha256
        self.verifier = self.image.Verifier(self.writer.slot_size)
        self.info = self.new_version = None
        self.next_report = 0
        self.next_heap_check = _HEAP_EVERY

    # Raises OtaError version_mismatch, downgrade, bad_version, check_header's reasons.
    # Returns True for the running version. An unknown version (empty, no trigger version) goes ahead.
    def check_header(self, first):
        info = self.image.check_header(first, self.writer.slot_size, self.cfg["chip_rev"])
        new = info["version"]  # stock MicroPython leaves it empty: then the trigger's word is all we have
        if self.version and new and new != self.version:
            raise OtaError("version_mismatch", "image says %s, trigger says %s" % (new, self.version))
        new = new or self.version
        self.info, self.new_version = info, new
        if new and new == self.running:
            return True
        if not new or not self.running:
            return False
        from ota import version as versions

        try:
            order = versions.compare(new, self.running)
        except OtaError:  # bad_version: not provably newer; only allow_downgrade lets it through
            if not self.cfg["allow_downgrade"]:
                raise
            return False
        if order < 0 and not self.cfg["allow_downgrade"]:
            raise OtaError("downgrade", "%s is older than the running %s" % (new, self.running))
        return order == 0  # "1.2" and "1.2.0"

    # One connection's body into the slot, zero copy (the socket reads into the writer's buffer).
    # Returns True for the running version (nothing written). Raises _Drop, OtaError, OSError (flash).
    def stream(self, resp):
        w = self.writer
        while True:
            free = w.free_space()
            try:
                n = resp.readinto(free)
            except OSError as e:
                raise _Drop(e)
            if n == 0:
                return False
            data = free if n == len(free) else free[:n]
            # The header sits in the buffer until the first flush (4096 > 0x100): checked before it.
            if self.info is None and w.received + n >= _HEADER_BYTES:
                if self.check_header(w.view[:w.fill + n]):
                    return True
            self.sha.update(data)
            self.verifier.feed(data)
            w.commit(n)
            if w.received >= self.next_heap_check:
                self.next_heap_check = w.received + _HEAP_EVERY
                heap.check_stream(self.cfg["min_free"])
            if self.progress and w.received >= self.next_report:
                self.next_report = w.received + self.cfg["progress_bytes"]
                self.progress(w.received, self.total)

    # A (re)connection's answer against what was asked. Raises OtaError too_large, size_mismatch,
    # bad_response.
    def accept(self, resp, start):
        if start and resp.status == 200:  # Range ignored: the whole file again, from byte 0
            self.reset()
        elif resp.status == 206 and resp.range_start != start:
            raise OtaError("bad_response", "206 from byte %s, asked %d" % (resp.range_start, start))
        total, slot = resp.total, self.writer.slot_size
        if total is not None:
            if total > slot:
                raise OtaError("too_large", "%d bytes, the slot holds %d" % (total, slot))
            if self.size is not None and total != self.size:
                raise OtaError("size_mismatch", "server has %d bytes, trigger says %d" % (total, self.size))
            self.total = total

    # The download and its resume loop. Returns True for the running version. Raises OtaError (a
    # drop's reason after `retries` reconnects in a row brought no new byte), OSError (flash).
    def fetch(self, open_args):
        failures = 0
        while True:
            start = self.writer.received
            try:
                resp = self.https.open(self.url, start=start, **open_args)
            except OSError as e:  # https.py lets only ENOMEM through: never worth a retry
                raise _reason(e)
            except OtaError as e:
                if e.reason not in (_RESUMABLE if self.writer.received else _RETRY_FIRST):
                    raise
                error = e
            else:
                # The handshake and the headers leave garbage behind; collect it once per
                # connection, before the copy loop (never inside it), so the peak stays low.
                gc.collect()
                try:
                    self.accept(resp, start)
                    if self.stream(resp):
                        return True
                    received = self.writer.received
                    if self.total is None or received >= self.total:
                        return False
                    error = OtaError("truncated", "body ended at %d of %d" % (received, self.total))
                except _Drop as e:  # a reset or timeout mid-body: worth a resume, named as such
                    named = self.https.reason(e.args[0])
                    error = OtaError(named, str(e.args[0])) if named else _reason(e.args[0])
                except OtaError as e:
                    if e.reason not in _RESUMABLE:
                        raise
                    error = e
                finally:
                    resp.close()
            failures = 1 if self.writer.received > start else failures + 1
            if failures > self.cfg["retries"] or error.reason == "low_memory":
                raise error
            backoff = self.cfg["retry_backoff_ms"] << min(failures - 1, 5)
            if hasattr(time, "sleep_ms"):
                time.sleep_ms(backoff)
            else:  # CPython
                time.sleep(backoff / 1000)
            heap.check(self.cfg["min_free"], esp32=self.esp32)  # a new TLS session needs its block

    # The end checks, then the commit. Returns the result dict. Raises OtaError truncated,
    # size_mismatch, bad_sha256, bad_checksum, bad_image_hash, readback_mismatch, validate_failed.
    def verify_and_commit(self, target):
        w = self.writer
        received = w.received
        if self.progress:
            self.progress(received, self.total)
        if self.info is None:
            raise OtaError("truncated", "%d bytes: not even an image header" % received)
        if self.size is not None and received != self.size:
            raise OtaError("truncated" if received < self.size else "size_mismatch",
                           "got %d bytes, expected %d" % (received, self.size))
        digest = self.sha.digest()
        got = binascii.hexlify(digest).decode()
        if self.expect and got != self.expect:
            raise OtaError("bad_sha256", "recv=%s expect=%s" % (got, self.expect))
        self.verifier.finish()
        w.finish()
        if w.readback_sha256(received) != digest:
            raise OtaError("readback_mismatch", "slot %s does not read back what was written" % w.label)
        try:
            target.set_boot()  # esp_image_verify once more, then otadata: the very last step
        except OSError as e:
            if e.args and e.args[0] == _VALIDATE_FAILED:
                raise OtaError("validate_failed", "set_boot refused the image in " + w.label)
            raise
        return {"result": "ok", "version": self.new_version, "bytes": received, "slot": w.label,
                "sha256": got, "restarts": w.restarts}


# The running slot's app descriptor version; "" when unknown (stock builds leave it empty).
def _running_version(partition):
    from ota import version as versions

    try:
        return versions.read_descriptor(partition)["version"]
    except (OtaError, OSError):
        return ""


# Raises OtaError: low_memory, running_slot, too_large, size_mismatch, truncated, version_mismatch,
# downgrade, bad_version, bad_sha256, readback_mismatch, validate_failed, timeout, io_error,
# bad_response, the image reasons (not_app_image, wrong_chip, chip_revision, bad_segments,
# bad_checksum, bad_image_hash) and the https reasons (http_<status>, tls_verify_failed, ...).
# config: the "ota" section. https, esp32, image: modules (tests inject fakes). running: the running
# version (None: read from the running slot).
def run(url, sha256=None, size=None, version=None, token=None, config=None, progress=None,
        https=None, esp32=None, image=None, running=None):
    cfg = dict(DEFAULTS["ota"])  # every default lives in config.py; a partial dict is fine
    cfg.update(config or {})
    if esp32 is None:
        import esp32
    if https is None:
        from ota import https
    if image is None:
        from ota import image
    current = esp32.Partition(esp32.Partition.RUNNING)
    target = current.get_next_update()  # allocates 4 KiB: before the heap fragments (MP #8382)
    if running is None:
        running = _running_version(current)
    open_args = {"token": token}
    for key in _OPEN_KEYS:
        open_args[key] = cfg[key]
    job = _Update(url, sha256, size, version, cfg, progress, (https, image, esp32), running)
    gc.collect()
    try:
        # The one buffer of the update (received data, padding, read-back); chunk_size % 4096 == 0.
        job.writer = SlotWriter(target, bytearray(cfg["chunk_size"]), current.info())
        job.reset()
        if size is not None and size > job.writer.slot_size:
            raise OtaError("too_large", "%d bytes, the slot holds %d" % (size, job.writer.slot_size))
        heap.check(cfg["min_free"], esp32=esp32)
        if not job.fetch(open_args):
            return job.verify_and_commit(target)
        if job.writer.sectors_erased:  # the file changed under a 200 restart: drop what was written
            job.writer.invalidate()
        return {"result": "same_version", "version": job.new_version, "bytes": 0,
                "slot": job.writer.label}
    except OtaError as e:
        error = e
    except OSError as e:
        error = _reason(e)
    except MemoryError:
        error = OtaError("low_memory", "MemoryError")
    if job.writer is not None and job.writer.sectors_erased:
        try:
            job.writer.invalidate()  # a half-written slot must never look bootable
        except OSError:
            pass  # the flash failing again: the first error is the one to report
    raise error
