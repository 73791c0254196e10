"""ota.writer.SlotWriter: the bytes on flash and the erase count at the slot's and the buffer's edges
(pinned after `make mutate`, issue 15). CPython on the fake NOR partition of host_tests/fakes.py."""
import hashlib

import pytest

import fakes
from fakes import put
from ota.errors import OtaError
from ota.writer import SlotWriter

SECTOR = 4096


def writer(slot_size, buf_size, block_size=4096):
    esp = fakes.make_device(slot_size)
    running = esp.Partition(esp.Partition.RUNNING)
    part = esp.Partition("ota_1", block_size)
    return esp, SlotWriter(part, bytearray(buf_size), running.info())


def test_a_partition_whose_block_size_is_not_a_sector_is_refused():
    esp = fakes.make_device(8 * SECTOR)
    running = esp.Partition(esp.Partition.RUNNING).info()
    for block_size in (512, 8192):
        with pytest.raises(ValueError):
            SlotWriter(esp.Partition("ota_1", block_size), bytearray(SECTOR), running)
    assert SlotWriter(esp.Partition("ota_1", SECTOR), bytearray(SECTOR), running).label == "ota_1"


def test_identity_of_the_slot():
    esp, w = writer(8 * SECTOR, SECTOR)
    assert (w.label, w.slot_size, w.received, w.flushed, w.fill, w.restarts, w.sectors_erased) == \
        ("ota_1", 8 * SECTOR, 0, 0, 0, 0, 0)


def test_a_slot_smaller_than_the_buffer():
    # one sector of slot, two of buffer: the slot's 4096 bytes are flushed as they fill it, one more
    # byte is too_large and never reaches flash
    esp, w = writer(SECTOR, 2 * SECTOR)
    data = fakes.pattern(SECTOR, seed=4)
    put(w, data)
    assert w.flushed == SECTOR and w.fill == 0  # flushed at once: the slot is full
    assert bytes(esp.slots["ota_1"].data) == data
    with pytest.raises(OtaError) as e:
        put(w, b"x")
    assert e.value.reason == "too_large"
    assert esp.slots["ota_1"].total_erases == 1  # (after too_large the job ends: no finish())


def test_a_full_slot_takes_an_empty_commit_without_writing():
    esp, w = writer(2 * SECTOR, SECTOR)
    put(w, bytes(2 * SECTOR))
    calls = list(esp.slots["ota_1"].writeblocks_calls)
    w.commit(0)
    assert esp.slots["ota_1"].writeblocks_calls == calls and w.received == 2 * SECTOR
    assert w.finish() == 2 * SECTOR and esp.slots["ota_1"].total_erases == 2


def test_free_space_after_a_flush_is_the_whole_buffer_again():
    esp, w = writer(8 * SECTOR, 2 * SECTOR)
    whole = w.free_space()
    assert len(whole) == 2 * SECTOR
    w.commit(100)
    assert len(w.free_space()) == 2 * SECTOR - 100
    w.commit(2 * SECTOR - 100)
    assert w.fill == 0 and w.flushed == 2 * SECTOR and w.free_space() is whole


def test_one_commit_past_the_slot_is_refused_before_any_write():
    # a commit that ends past the slot's last byte: too_large, and that buffer is never flushed
    esp, w = writer(2 * SECTOR, 2 * SECTOR)
    w.commit(SECTOR)
    with pytest.raises(OtaError) as e:
        w.commit(SECTOR + 1)
    assert e.value.reason == "too_large"
    assert esp.slots["ota_1"].writeblocks_calls == []
    esp, w = writer(2 * SECTOR, 2 * SECTOR)
    w.commit(2 * SECTOR)  # exactly the slot
    assert w.flushed == 2 * SECTOR


def test_finish_pads_and_counts():
    esp, w = writer(8 * SECTOR, 2 * SECTOR)
    data = fakes.pattern(SECTOR + 1, seed=2)
    put(w, data)
    assert w.finish() == SECTOR + 1
    slot = esp.slots["ota_1"]
    assert bytes(slot.data[:SECTOR + 1]) == data
    assert bytes(slot.data[SECTOR + 1:2 * SECTOR]) == b"\xff" * (SECTOR - 1)
    assert (w.flushed, w.received, w.sectors_erased) == (SECTOR + 1, SECTOR + 1, 2)
    assert slot.writeblocks_calls == [(0, 2 * SECTOR, None)]
    # nothing waiting: finish writes nothing
    esp, w = writer(8 * SECTOR, SECTOR)
    put(w, bytes(SECTOR))
    assert w.finish() == SECTOR and esp.slots["ota_1"].writeblocks_calls == [(0, SECTOR, None)]


def test_readback_at_the_slot_size_and_past_it():
    esp, w = writer(3 * SECTOR, 2 * SECTOR)  # the slot is not a multiple of the buffer
    data = fakes.pattern(3 * SECTOR, seed=6)
    put(w, data)
    w.finish()
    pieces, fed = [], []
    w.readback(3 * SECTOR, lambda view: pieces.append(bytes(view)), lambda: fed.append(1))
    assert [len(p) for p in pieces] == [2 * SECTOR, SECTOR] and b"".join(pieces) == data
    assert len(fed) == 2  # the watchdog once per buffer read
    assert w.readback_sha256(3 * SECTOR) == hashlib.sha256(data).digest()
    with pytest.raises(ValueError):
        w.readback(3 * SECTOR + 1, lambda view: None)


def test_readback_of_a_length_inside_a_buffer():
    esp, w = writer(8 * SECTOR, 2 * SECTOR)
    data = fakes.pattern(SECTOR + 10, seed=8)
    put(w, data)
    w.finish()
    pieces = []
    w.readback(SECTOR + 10, lambda view: pieces.append(bytes(view)))
    assert pieces == [data]
    pieces = []
    w.readback(2 * SECTOR, lambda view: pieces.append(bytes(view)))  # a whole buffer: the padding too
    assert pieces == [data + b"\xff" * (SECTOR - 10)]
    assert w.readback_sha256(0) == hashlib.sha256(b"").digest()


def test_invalidate_counts_one_more_erase():
    esp, w = writer(8 * SECTOR, SECTOR)
    put(w, fakes.pattern(3 * SECTOR))
    w.finish()
    w.invalidate()
    assert w.sectors_erased == 4
    assert esp.slots["ota_1"].erases[:3] == [2, 1, 1]


def test_restart_keeps_the_counters_of_the_job():
    esp, w = writer(8 * SECTOR, SECTOR)
    put(w, bytes(2 * SECTOR + 5))
    w.restart()
    assert (w.restarts, w.sectors_erased, w.received, w.flushed, w.fill) == (1, 2, 0, 0, 0)
    assert len(w.free_space()) == SECTOR
    w.restart()
    assert w.restarts == 2


def test_readback_sha256_feeds_the_watchdog_once_per_buffer_read():
    # a caller with a watchdog: reading back a 1.5 MB slot takes seconds, so the feed it passes must
    # reach every buffer read, as readback()'s does (mutants readback_sha256 _4, _7 dropped it)
    esp = fakes.make_device(8 * SECTOR)
    running = esp.Partition(esp.Partition.RUNNING).info()
    w = SlotWriter(esp.Partition("ota_1"), bytearray(SECTOR), running)
    data = fakes.pattern(3 * SECTOR + 7, seed=21)
    put(w, data)
    w.finish()
    fed = []
    assert w.readback_sha256(len(data), lambda: fed.append(1)) == hashlib.sha256(data).digest()
    assert len(fed) == 4  # 3 whole buffers and the one holding the last 7 bytes


def test_readback_hands_over_the_buffer_itself_for_every_whole_buffer():
    # The read-back of a 1.5 MB slot is 384 buffer reads: each whole one goes to the sink as the
    # writer's own memoryview, no slice made per read (the data path allocates nothing per chunk);
    # only a last, partial piece is a slice. Mutants readback _16 (the slot's last buffer, ending
    # exactly at the slot's end), _23, _25 (a slice every time, or for a length of exactly a buffer)
    # made one per read.
    esp, w = writer(2 * SECTOR, SECTOR)
    data = fakes.pattern(2 * SECTOR, seed=12)
    put(w, data)
    w.finish()
    pieces = []
    w.readback(2 * SECTOR, lambda view: pieces.append((view is w.view, bytes(view))))
    assert pieces == [(True, data[:SECTOR]), (True, data[SECTOR:])]
    pieces = []
    w.readback(SECTOR + 5, lambda view: pieces.append((view is w.view, bytes(view))))
    assert pieces == [(True, data[:SECTOR]), (False, data[SECTOR:SECTOR + 5])]


def test_a_caller_error_says_which_rule_it_broke():
    # ValueError is for the caller's mistakes (not an OtaError: never a device's state), and the
    # message catalogue does not see it: its words are pinned here (mutants __init__ _4.._6, _11.._13,
    # readback _2.._4)
    esp = fakes.make_device(8 * SECTOR)
    running = esp.Partition(esp.Partition.RUNNING).info()
    with pytest.raises(ValueError) as e:
        SlotWriter(esp.Partition("ota_1"), bytearray(SECTOR + 1), running)
    assert str(e.value) == "buffer must be a multiple of 4096 bytes"
    with pytest.raises(ValueError) as e:
        SlotWriter(esp.Partition("ota_1", 512), bytearray(SECTOR), running)
    assert str(e.value) == "partition block size must be 4096"
    esp, w = writer(2 * SECTOR, SECTOR)
    with pytest.raises(ValueError) as e:
        w.readback(2 * SECTOR + 1, lambda view: None)
    assert str(e.value) == "read-back past the slot"


def test_a_whole_buffer_is_flushed_as_the_buffer_itself(monkeypatch):
    # Each flush of a full buffer hands writeblocks the writer's own memoryview: no slice per 4 KiB
    # block on the download's path (mutant _flush _2 sliced every time); the padded last block,
    # shorter than the buffer, is the one slice.
    esp, w = writer(8 * SECTOR, 2 * SECTOR)
    part_cls = type(w.partition)
    real = part_cls.writeblocks
    handed = []

    def writeblocks(self, block, buf, offset=None):
        handed.append((block, len(buf), buf is w.view))
        return real(self, block, buf, offset)

    monkeypatch.setattr(part_cls, "writeblocks", writeblocks)
    put(w, fakes.pattern(5 * SECTOR, seed=3))
    w.finish()
    assert handed == [(0, 2 * SECTOR, True), (2, 2 * SECTOR, True), (4, SECTOR, False)]
