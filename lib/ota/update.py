# The update itself: heap check -> fetch (with resume) -> image check -> write -> verify -> set_boot.
#
#   result = update.run(url, sha256=hex, size=n, version="1.2.0", token=tok, config=cfg, progress=cb)
#   -> {"result": "ok", "version": v, "bytes": n, "slot": "ota_1", "sha256": hex, "restarts": 0}
#      {"result": "same_version", "version": v, "bytes": 0, "slot": ...}: nothing was written
#
# On any failure the boot slot is untouched (set_boot is the last step, reached only when every check
# passed), the target slot's first sector is erased if anything was written, and OtaError is raised:
# any exception at all, an unexpected one as internal_error.
# The reset is the caller's: it reports "rebooting" first.
#
# The download and its resume loop are fetch.py's; this module is the sink of the bytes (header
# check, the hashes, the image verifier, the writer) and the end checks.
#
# The passes over the data (docs/MEMORY.md, "Passes"). While streaming: the image's structure and its
# XOR checksum (viper: cheap), so that a bad image is refused as it comes, before the slot fills; no
# SHA-256 (in software it costs as much as the TLS download itself, and a hash tells nothing before
# the last byte anyway). After the last flush, one read-back of the slot feeds both SHA-256: the
# file's (the trigger's sha256, proven over what the flash really holds) and the image's appended one
# (with the checksum and the structure again), as esp_image_verify will. The read-back image is
# compared with the streamed one (length, checksum, appended hash as received): a difference is the
# flash's fault (readback_mismatch), not the file's. 2 SHA-256 passes, both over the flash, where
# there were 3 (the download, the image's, the read-back).

import binascii
import gc
import hashlib

try:
    from micropython import const
except ImportError:  # CPython (host tests)
    def const(x):
        return x

from ota import heap, image
from ota.config import DEFAULTS
from ota.errors import OtaError, from_oserror, unexpected
from ota.fetch import Download
from ota.state import no_watchdog
from ota.image_verify import Verifier
from ota.writer import SlotWriter

_VALIDATE_FAILED = const(-5379)  # ESP_ERR_OTA_VALIDATE_FAILED from Partition.set_boot()
_OPEN_KEYS = ("ca_path", "token_origin", "allow_http", "connect_timeout", "read_timeout")


class _Update:
    def __init__(self, sha256, size, version, cfg, running, running_project, project):
        self.size, self.version, self.cfg, self.running = size, version, cfg, running
        self.running_project, self.project = running_project, project  # compat.check
        self.expect = sha256.lower() if sha256 else None
        self.writer = None

    # Everything received is dropped: the download starts again at byte 0. Raises nothing.
    def restart(self):
        if self.writer.received:
            self.writer.restart()  # counted in writer.restarts
        self.verifier = Verifier(self.writer.slot_size, hashing=False)  # the hashes: on the read-back
        self.info = self.new_version = None

    # Raises OtaError wrong_product, version_mismatch, downgrade, bad_version (compat.py), and
    # check_header's reasons. Returns True for the running version.
    def check_header(self, first):
        from ota import compat

        info = image.check_header(first, self.writer.slot_size, self.cfg["chip_rev"])
        self.new_version, same = compat.check(info, self.running_project, self.running, self.version,
                                              self.project, self.cfg["allow_downgrade"])
        self.info = info
        return same

    # The sink of fetch.Download: the n bytes just read into the writer's buffer. The header sits
    # in the buffer until the first flush (4096 > 0x100): it is checked before anything is written.
    # Returns True for the running version (nothing written). Raises OtaError, OSError (flash).
    def feed(self, data, n):
        w = self.writer
        if self.info is None and w.received + n >= image.HEADER_BYTES:
            if self.check_header(w.view[:w.fill + n]):
                return True
        self.verifier.feed(data)
        w.commit(n)
        return False

    # The end checks, then the commit. Returns the result dict. Raises OtaError truncated,
    # size_mismatch, bad_sha256, bad_checksum, bad_image_hash, readback_mismatch, validate_failed.
    def verify_and_commit(self, target, feed):
        w = self.writer
        received = w.received
        if self.info is None:
            raise OtaError("truncated", "%d bytes: not even an image header" % received)
        if self.size is not None and received != self.size:
            raise OtaError("truncated" if received < self.size else "size_mismatch",
                           "got %d bytes, expected %d" % (received, self.size))
        self.verifier.finish()  # the download: whole image (truncated), checksum (bad_checksum)
        w.finish()
        sink = _ReadBack(self.writer.slot_size)
        try:
            w.readback(received, sink.update, feed)  # the one pass over what the slot holds
        except OtaError as e:  # the structure that streamed fine does not read back
            raise OtaError("readback_mismatch", "slot %s: %s" % (w.label, e.reason))
        try:
            sink.image.finish()
            image_error = None
        except OtaError as e:
            image_error = e
        if sink.image.witness() != self.verifier.witness():
            raise OtaError("readback_mismatch", "slot %s does not read back what was written" % w.label)
        if image_error is not None:
            raise image_error  # the flash holds what came: the file's own hash is wrong
        got = binascii.hexlify(sink.file.digest()).decode()
        if self.expect and got != self.expect:
            raise OtaError("bad_sha256", "recv=%s expect=%s" % (got, self.expect))
        try:
            target.set_boot()  # esp_image_verify once more, then otadata: the very last step
        except OSError as e:
            if e.args and e.args[0] == _VALIDATE_FAILED:
                raise OtaError("validate_failed", "set_boot refused the image in " + w.label)
            raise
        return {"result": "ok", "version": self.new_version, "bytes": received, "slot": w.label,
                "sha256": got, "restarts": w.restarts}


class _ReadBack:
    # The read-back's sink: the file's SHA-256 and the image check (structure, checksum, appended
    # SHA-256) over the same bytes from flash, in one pass.
    def __init__(self, slot_size):
        self.file = hashlib.sha256()
        self.image = Verifier(slot_size)

    def update(self, data):
        self.file.update(data)
        self.image.feed(data)


# The running slot's app descriptor: (version, project_name); ("", None) when unreadable (stock
# builds leave the version empty; compat refuses every image for an unknown project).
def _running_identity(partition):
    from ota import version as versions

    try:
        info = versions.read_descriptor(partition)
    except (OtaError, OSError):
        return "", None
    return info["version"], info["project_name"]


# Raises OtaError: internal_error, low_memory, running_slot, too_large, size_mismatch, truncated,
# wrong_product, version_mismatch, downgrade, bad_version, bad_sha256, readback_mismatch,
# validate_failed, timeout, io_error,
# bad_response, the image reasons (not_app_image, wrong_chip, chip_revision, bad_segments,
# bad_checksum, bad_image_hash) and the https reasons (http_<status>, tls_verify_failed, ...).
# config: the "ota" section. https, esp32: modules (tests inject fakes). running, running_project:
# the running firmware's version and project_name (None: read from the running slot); project: the
# trigger's "project" (compat.check). target: the slot to write (None: get_next_update(); the
# agent passes the one it took at start-up). progress(bytes, total): rate-limited by progress_bytes.
# feed(): the watchdog's, called for every chunk downloaded or read back (None: no watchdog).
# artifact: the trigger's encoding fields (None or no "encoding": url is the image itself, as before;
# else url is an OTAZ container, docs/COMPRESSED.md); sha256 and size stay the image's.
# workspace: the agent's workspace.Workspace, whose buffer and SSLContext were taken at start-up
# (None, or what it lacks: made here, as before).
def run(url, sha256=None, size=None, version=None, token=None, config=None, progress=None,
        https=None, esp32=None, running=None, target=None, running_project=None, project=None,
        feed=None, artifact=None, workspace=None):
    cfg = dict(DEFAULTS["ota"])  # every default lives in config.py; a partial dict is fine
    cfg.update(config or {})
    if esp32 is None:
        import esp32
    if https is None:
        from ota import https
    current = esp32.Partition(esp32.Partition.RUNNING)
    if target is None:
        target = current.get_next_update()  # allocates 4 KiB: best before the heap fragments (MP #8382)
    if running is None or running_project is None:
        slot_version, slot_project = _running_identity(current)
        running = slot_version if running is None else running
        running_project = slot_project if running_project is None else running_project
    open_args = {"token": token}
    for key in _OPEN_KEYS:
        open_args[key] = cfg[key]
    job = _Update(sha256, size, version, cfg, running, running_project, project)
    gc.collect()
    try:
        # The one buffer of the update (received data, padding, read-back); chunk_size % 4096 == 0.
        buf = workspace.buffer(cfg["chunk_size"]) if workspace is not None else None
        if buf is None:
            buf = bytearray(cfg["chunk_size"])
        # The update's one SSLContext (3 KB in one piece on the GC heap). Best the workspace's, made
        # early (workspace.py); it goes to any URL (https.open uses it only on https hops: an http
        # URL may redirect to https). Else one is made here for an https URL (the scheme in any
        # case), with the buffer right after the collect, while the heap's top is still in one
        # piece: later, the small objects of the update fill the holes and a block that size may no
        # longer be found (docs/MEMORY.md). fetch.py passes it to every connection. Fakes without
        # context(): None.
        tls_context = workspace.tls_context if workspace is not None else None
        make_context = getattr(https, "context", None)
        if tls_context is None and make_context is not None and url[:6].lower() == "https:":
            tls_context = make_context(cfg["ca_path"])
        if tls_context is not None:
            open_args["tls_context"] = tls_context
        job.writer = SlotWriter(target, buf, current.info())
        job.restart()
        if size is not None and size > job.writer.slot_size:
            raise OtaError("too_large", "%d bytes, the slot holds %d" % (size, job.writer.slot_size))
        heap.check(cfg["min_free"], esp32=esp32)
        feed = feed or no_watchdog
        if artifact and artifact.get("encoding"):  # a compressed image or a patch (inflate.py)
            from ota.inflate import Loader

            loader = Loader(url, artifact, size, sha256, cfg, https, esp32, progress, open_args, feed)
        else:
            loader = Download(url, size, cfg, https, esp32, progress, open_args, feed)
        if not loader.run(job.writer, job):
            return job.verify_and_commit(target, feed)
        if job.writer.sectors_erased:  # the file changed under a 200 restart: drop what was written
            job.writer.invalidate()
        return {"result": "same_version", "version": job.new_version, "bytes": 0,
                "slot": job.writer.label}
    except OtaError as e:
        error = e
    except OSError as e:
        error = from_oserror(e)
    except MemoryError:
        error = OtaError("low_memory", "MemoryError")
    except Exception as e:  # whatever it is, the half-written slot must not stay bootable
        error = unexpected(e)
    if job.writer is not None and job.writer.sectors_erased:
        try:
            job.writer.invalidate()  # a half-written slot must never look bootable
        except OSError:
            pass  # the flash failing again: the first error is the one to report
    raise error
