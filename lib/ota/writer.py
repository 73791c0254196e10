# SlotWriter: streams an app image into the inactive OTA slot, 4 KiB sector by sector.
#
# Every flush is a 2-argument `writeblocks(block, buf)`, which on the ESP32 erases the range and then
# programs it (docs/CHIP.md §1). Blocks go out in order and exactly once, so each sector of the image is
# erased exactly once and never programmed over data (NOR would silently AND old and new). The
# 3-argument form (no erase) is never used.
#
# One caller-owned buffer (length a multiple of 4096) serves the whole update: received bytes, the
# 0xFF padding of the last block and the read-back. The caller reads straight into it:
#   free = w.free_space()          zero copy: the writable rest of the buffer ...
#   n = stream.readinto(free)
#   w.commit(n)                    ... and says how much arrived; full buffers are flushed here
# free_space() returns a memoryview made once at construction while the buffer is empty, so a stream
# whose readinto fills what it is given costs no allocation per chunk (measured: host_tests and the
# MicroPython check in the report). After a short read it must slice (one small object).
#
# Bytes received but not yet flushed stay in the buffer: after a dropped connection the caller resumes
# at `w.received` (everything so far is kept, flushed or not). restart() goes back to block 0 when the
# server ignores Range and sends the whole file again: those sectors are then erased a second time
# (counted in `restarts`); appending would corrupt the image (esp-idf PR #17960).
import hashlib

try:
    from micropython import const
except ImportError:  # CPython (host tests)
    def const(x):
        return x

from ota.errors import OtaError

SECTOR = const(4096)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_ERASE = const(6)


class SlotWriter:
    # partition: an esp32.Partition (block size 4096) of the inactive slot.
    # buf: bytearray, len a multiple of 4096. running_info: Partition(RUNNING).info() (update.py
    # looks it up once). Raises OtaError running_slot, ValueError for a bad buffer or block size.
    def __init__(self, partition, buf, running_info):
        if not buf or len(buf) % SECTOR:
            raise ValueError("buffer must be a multiple of 4096 bytes")
        if partition.ioctl(_IOCTL_BLOCK_SIZE, None) != SECTOR:
            raise ValueError("partition block size must be 4096")
        info = partition.info()
        # Partition objects are new at each lookup: compare the flash address, not identity.
        if info[2] == running_info[2]:
            raise OtaError("running_slot", "refusing to write the running slot " + info[4])
        self.partition = partition
        self.label = info[4]
        self.slot_size = info[3]
        self.buf = buf
        self.view = memoryview(buf)  # made once: handed out by free_space() when the buffer is empty
        self.restarts = 0
        self.sectors_erased = 0
        self._reset()

    def _reset(self):
        self.flushed = 0  # bytes on flash (a multiple of 4096 until finish())
        self.fill = 0  # bytes waiting in the buffer
        self.received = 0  # flushed + fill: where a resumed download continues
        self._limit = min(len(self.buf), self.slot_size)

    # Raises nothing. Starts the image again at block 0 (a 200 answer to a Range request).
    def restart(self):
        self.restarts += 1
        self._reset()

    # The writable rest of the buffer, for readinto(). Raises nothing.
    def free_space(self):
        return self.view if self.fill == 0 else self.view[self.fill:]

    # n bytes were put into free_space(). Raises OtaError too_large (nothing past the slot reaches
    # flash), OSError from the flash.
    def commit(self, n):
        fill = self.fill + n  # a local: this runs once per chunk
        self.fill = fill
        self.received += n
        if fill >= self._limit and fill:
            if fill > self._limit:
                raise OtaError("too_large", "more than the slot's %d bytes" % self.slot_size)
            self._flush(fill)

    def _flush(self, length):
        # length: a multiple of 4096 inside the slot. writeblocks erases, then programs.
        part = self.view if length == len(self.buf) else self.view[:length]
        self.partition.writeblocks(self.flushed // SECTOR, part)
        self.sectors_erased += length // SECTOR
        self.flushed += length
        self.fill = 0
        self._limit = min(len(self.buf), self.slot_size - self.flushed)

    # Writes the partial last block padded with 0xFF (erased flash reads 0xFF anyway; the full-sector
    # write is what erases it). Returns the image bytes written. Raises OSError from the flash.
    def finish(self):
        fill = self.fill
        if fill:
            end = (fill + SECTOR - 1) // SECTOR * SECTOR
            buf = self.buf
            for i in range(fill, end):  # once per update: a loop, not a 4 KiB b"\xff" object
                buf[i] = 0xFF
            self._flush(end)
        self.flushed = self.received
        return self.received

    # SHA-256 digest (bytes) of the first `length` bytes of the slot, read back through the buffer
    # (its contents are lost: call after finish()). feed: the watchdog's, once per buffer read.
    # Raises OSError from the flash.
    def readback_sha256(self, length, feed=None):
        digest = hashlib.sha256()
        self.readback(length, digest.update, feed)
        return digest.digest()

    # The first `length` bytes of the slot, read back through the buffer and handed to sink(view)
    # piece by piece (call after finish(): the buffer's contents are lost). Raises OSError from the
    # flash, ValueError past the slot.
    def readback(self, length, sink, feed=None):
        if length > self.slot_size:
            raise ValueError("read-back past the slot")
        size = len(self.buf)
        block = 0
        while length > 0:
            space = self.slot_size - block * SECTOR
            part = self.view if size <= space else self.view[:space]
            if feed is not None:
                feed()
            self.partition.readblocks(block, part)
            sink(part if length >= len(part) else part[:length])
            length -= len(part)
            block += len(part) // SECTOR

    # Erases the first sector: no magic byte, so neither set_boot() nor the bootloader accepts the
    # half-written slot. Raises OSError from the flash.
    def invalidate(self):
        self.partition.ioctl(_IOCTL_ERASE, 0)
        self.sectors_erased += 1
