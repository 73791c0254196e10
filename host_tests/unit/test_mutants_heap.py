"""ota.heap at its bounds: exactly the bytes needed is enough, one fewer is low_memory, on both heaps
(pinned after `make mutate`). CPython has no gc.mem_free, so a fake one stands in for MicroPython's."""
import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import heap
from ota.errors import OtaError


class GcFree:
    # gc.mem_free() that answers from a list (the last value repeats) and counts gc.collect().
    def __init__(self, monkeypatch, *answers):
        self.answers = list(answers)
        self.collects = 0
        monkeypatch.setattr(heap.gc, "mem_free", self.mem_free, raising=False)
        monkeypatch.setattr(heap.gc, "collect", self.collect)

    def mem_free(self):
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def collect(self):
        self.collects += 1


class Idf:
    # esp32 with idf_heap_info: the regions are given for HEAP_DATA only (other capabilities: none).
    HEAP_DATA = 4

    def __init__(self, *largest_blocks):
        self.regions = [(200000, 100000, largest, 50000) for largest in largest_blocks]
        self.asked = []

    def idf_heap_info(self, capabilities):
        self.asked.append(capabilities)
        return self.regions if capabilities == self.HEAP_DATA else []


def _reason(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except OtaError as e:
        return e.reason
    return None


def test_stream_check_passes_at_exactly_the_bytes_needed_without_collecting(monkeypatch):
    gc = GcFree(monkeypatch, 5000)
    assert _reason(heap.check_stream, 5000) is None
    assert gc.collects == 0  # no gc.collect() in the copy loop when there is room


def test_stream_check_collects_once_when_short_and_goes_on_if_that_was_garbage(monkeypatch):
    gc = GcFree(monkeypatch, 4999, 5000)
    assert _reason(heap.check_stream, 5000) is None
    assert gc.collects == 1


def test_stream_check_is_low_memory_when_still_short_after_collecting(monkeypatch):
    gc = GcFree(monkeypatch, 4999)
    with pytest.raises(OtaError) as e:
        heap.check_stream(5000)
    assert e.value.reason == "low_memory" and "4999 < 5000" in e.value.detail and gc.collects == 1


class NoIdf:  # a port without an IDF heap to ask about (the Unix port, CPython)
    HEAP_DATA = 4


def test_check_gc_heap_bound(monkeypatch):
    GcFree(monkeypatch, 8000)
    assert _reason(heap.check, 8000, esp32=NoIdf()) is None
    assert _reason(heap.check, 8001, esp32=NoIdf()) == "low_memory"


def test_check_collects_before_each_connection(monkeypatch):
    # check() runs before a connection, where a collection is cheap and frees the last one's buffers.
    gc = GcFree(monkeypatch, 8000)
    heap.check(100, esp32=NoIdf())
    assert gc.collects == 1
    heap.check(100, esp32=NoIdf())
    assert gc.collects == 2


def test_tls_needs_one_block_of_tls_bytes_in_the_data_heap(monkeypatch):
    GcFree(monkeypatch, 10 ** 6)
    esp = Idf(heap.TLS_BYTES)
    assert _reason(heap.check, 100, esp32=esp) is None
    assert esp.asked == [Idf.HEAP_DATA]
    assert _reason(heap.check, 100, esp32=Idf(heap.TLS_BYTES - 1)) == "low_memory"


def test_tls_looks_at_the_largest_block_of_any_region(monkeypatch):
    # Free bytes spread over regions do not add up to one TLS block; the largest block counts,
    # wherever it is in the list.
    GcFree(monkeypatch, 10 ** 6)
    assert _reason(heap.check, 100, esp32=Idf(heap.TLS_BYTES, 1000)) is None
    assert _reason(heap.check, 100, esp32=Idf(1000, heap.TLS_BYTES, 2000)) is None
    assert _reason(heap.check, 100, esp32=Idf(30000, 30000)) == "low_memory"
    assert _reason(heap.check, 100, esp32=Idf()) == "low_memory"


def test_tls_check_is_skipped_when_the_port_has_no_idf_heap(monkeypatch):
    GcFree(monkeypatch, 10 ** 6)
    assert _reason(heap.check, 100, esp32=NoIdf()) is None


def test_tls_bytes_is_one_verified_session():
    # docs/CHIP.md §5: about 42 KB of IDF heap per verified TLS session.
    assert heap.TLS_BYTES == 43008


# ---- the esp32 port: the GC heap grows into the IDF heap (session 21) ---------------------------
# There gc.mem_free() counts the largest free IDF block too (heap.check's comment): the GC heap's own
# free bytes are what is left without it, and what they lack must fit in that block beside the TLS
# session. CPython's heap._GROWS is False: each test sets it as the chip has it.

def test_growing_heap_own_bytes_exactly_enough(monkeypatch):
    monkeypatch.setattr(heap, "_GROWS", True)
    GcFree(monkeypatch, 5000 + 60000)  # 5000 of its own, the 60000-byte IDF block counted in
    assert _reason(heap.check, 5000, esp32=Idf(60000)) is None


def test_growing_heap_borrows_from_the_idf_block_up_to_what_tls_leaves(monkeypatch):
    monkeypatch.setattr(heap, "_GROWS", True)
    spare = 60000 - heap.TLS_BYTES  # what the block holds beside one TLS session
    GcFree(monkeypatch, 5000 + 60000)
    assert _reason(heap.check, 5000 + spare, esp32=Idf(60000)) is None  # the block exactly shared
    with pytest.raises(OtaError) as e:
        heap.check(5000 + spare + 1, esp32=Idf(60000))
    assert e.value.reason == "low_memory"
    assert e.value.detail == "gc free 65000 (60000 of it the largest idf block) < %d needed + %d for TLS" % (
        5000 + spare + 1, heap.TLS_BYTES)


def test_growing_heap_counts_the_idf_block_once_not_twice(monkeypatch):
    # 50000 free in all, 45000 of it the IDF block: the GC heap has 5000 of its own. Asking 6000
    # takes 1000 from the block, leaving 44000 >= TLS: fine. Asking 7000 leaves 43000 < 43008: short,
    # although 50000 "free" looks like plenty for both.
    monkeypatch.setattr(heap, "_GROWS", True)
    GcFree(monkeypatch, 50000)
    assert _reason(heap.check, 6000, esp32=Idf(45000)) is None
    assert _reason(heap.check, 7000, esp32=Idf(45000)) == "low_memory"


def test_growing_heap_without_an_idf_heap_to_ask_is_the_plain_bound(monkeypatch):
    monkeypatch.setattr(heap, "_GROWS", True)
    GcFree(monkeypatch, 8000)
    assert _reason(heap.check, 8000, esp32=NoIdf()) is None
    with pytest.raises(OtaError) as e:
        heap.check(8001, esp32=NoIdf())
    assert (e.value.reason, e.value.detail) == ("low_memory", "gc free 8000 < 8001 needed")


def test_a_heap_that_does_not_grow_never_counts_the_idf_block_as_its_own(monkeypatch):
    # the Unix port and the simulator (fixed heap): gc.mem_free() is the GC heap alone, whatever
    # block the IDF heap has
    monkeypatch.setattr(heap, "_GROWS", False)
    GcFree(monkeypatch, 8000)
    assert _reason(heap.check, 8000, esp32=Idf(60000)) is None
    with pytest.raises(OtaError) as e:
        heap.check(8001, esp32=Idf(60000))
    assert (e.value.reason, e.value.detail) == ("low_memory", "gc free 8000 < 8001 needed")


def test_a_port_without_gc_mem_free_skips_the_gc_bound(monkeypatch):
    # CPython (host tools, otactl's inspector) has no gc.mem_free: only the IDF block is checked
    # (mutants check _8, check_stream _6 asked getattr without its default)
    monkeypatch.delattr(heap.gc, "mem_free", raising=False)
    assert _reason(heap.check, 10 ** 9, esp32=NoIdf()) is None
    assert _reason(heap.check_stream, 10 ** 9) is None
    assert _reason(heap.check, 10 ** 9, esp32=Idf(heap.TLS_BYTES - 1)) == "low_memory"


def test_the_largest_block_of_an_exhausted_heap_is_zero():
    # telemetry samples largest_idf_block(): a heap with no free block, or no region, says 0 bytes
    # (mutant largest_idf_block _12 started from 1)
    assert heap.largest_idf_block(Idf(0, 0)) == 0
    assert heap.largest_idf_block(Idf()) == 0
    assert heap.largest_idf_block(Idf(0, 7, 3)) == 7
