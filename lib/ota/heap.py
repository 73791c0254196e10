# Heap checks before (and during) a download: fail early with `low_memory` and the numbers, rather
# than with a MemoryError or an `OSError: [Errno 12] ENOMEM` from deep inside the TLS handshake.
#
# Two heaps matter on the ESP32-C3 (docs/CHIP.md §5): the MicroPython GC heap (our buffer, objects) and
# the ESP-IDF heap where mbedTLS allocates its session. gc.collect() cannot free the second one, and a
# TLS session needs one large contiguous block of it, so we check its largest free block.
import gc
import sys

try:
    from micropython import const
except ImportError:  # CPython (host tests)
    def const(x):
        return x

from ota.errors import OtaError

# One verified HTTPS session: about 42 KB from the IDF heap (ESP-IDF mbedtls docs, docs/CHIP.md §5;
# MP #6065 counts ~20 KB of buffers alone). Checked against the largest free HEAP_DATA block.
TLS_BYTES = const(43008)


# During the stream, every _STREAM_CHECK_BYTES: the GC heap only (gc.mem_free() allocates nothing; the
# TLS session is already open). Raises OtaError low_memory: a clean failure, slot invalidated, instead
# of a MemoryError half-way through a flash write. Returns nothing.
# Garbage is not shortage: MQTT messages taken in between chunks (refusals, busy answers) leave
# garbage behind, and a flood of them failed the download with low_memory (issue 10's adversarial
# suite). So a failed check collects once and looks again; a collect only then, not per chunk.
def check_stream(required_bytes):
    mem_free = getattr(gc, "mem_free", None)  # MicroPython only
    if mem_free is not None and mem_free() < required_bytes:
        gc.collect()
        if mem_free() < required_bytes:
            raise OtaError("low_memory", "gc free %d < %d during the download" % (mem_free(), required_bytes))


# Before a connection: collects, then checks the GC heap and the IDF heap's largest block for a TLS
# session. Raises OtaError low_memory (detail: the numbers). Allocates only esp32.idf_heap_info's
# small list. esp32: the module (tests inject a fake); None imports it, absent on the Unix port and
# CPython. During the stream check_stream() is the check: no gc.collect() in the copy loop.
# required_bytes: free GC heap the rest of the job needs (ota.min_free, docs/MEMORY.md). On the chip
# gc.mem_free() is the GC heap's own free bytes plus the largest free IDF block, which the GC heap
# may grow into (MP v1.28.0 py/modgc.c: info.free + info.max_new_split; ports/esp32/gccollect.c
# gc_get_max_new_split = heap_caps_get_largest_free_block): the block the TLS session needs too. So
# what the GC heap lacks must fit in that block beside the session, not be counted twice.
def check(required_bytes, esp32=None):
    gc.collect()
    largest = largest_idf_block(esp32)
    mem_free = getattr(gc, "mem_free", None)  # MicroPython only
    if mem_free is not None:
        free = mem_free()
        own = free - largest if _GROWS and largest is not None else free
        if own < required_bytes:
            if not _GROWS or largest is None:
                raise OtaError("low_memory", "gc free %d < %d needed" % (free, required_bytes))
            if largest - TLS_BYTES < required_bytes - own:
                raise OtaError("low_memory", "gc free %d (%d of it the largest idf block) < %d needed + %d for TLS"
                               % (free, largest, required_bytes, TLS_BYTES))
    if largest is not None and largest < TLS_BYTES:
        raise OtaError("low_memory", "largest idf block %d < %d for TLS" % (largest, TLS_BYTES))


# The GC heap grows into the IDF heap on demand (MICROPY_GC_SPLIT_HEAP_AUTO: the esp32 port; the
# simulator's fixed -X heapsize does not).
_GROWS = sys.platform == "esp32"


# The largest free block of the IDF data heap, None where there is none to ask about (also the
# telemetry's lowest-block sample, telemetry.py).
def largest_idf_block(esp32):
    if esp32 is None:
        try:
            import esp32
        except ImportError:  # CPython / Unix port: TLS comes from malloc
            return None
    info = getattr(esp32, "idf_heap_info", None)
    if info is None:
        return None
    largest = 0
    for region in info(esp32.HEAP_DATA):  # (total, free, largest_free_block, min_free)
        if region[2] > largest:
            largest = region[2]
    return largest
