# SlotWriter on a fake NOR partition: exact bytes, each sector erased exactly once, never the
# running slot, never past the slot.
import hashlib
import os
import subprocess

import pytest

import fakes
from fakes import put
from paths import DRIVERS, LIB, MICROPYTHON
from ota.errors import OtaError
from ota.writer import SlotWriter

SLOT = 0x20000  # 32 sectors


def target(esp):
    running = esp.Partition(esp.Partition.RUNNING)
    return running.get_next_update(), running.info()


def written(esp, label="ota_1"):
    return esp.slots[label]


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 50000, 3 * 4096, SLOT])
@pytest.mark.parametrize("buf_size", [4096, 8192])
@pytest.mark.parametrize("chunk", [1000, 4096, 5000])
def test_exact_bytes_and_erase_once(size, buf_size, chunk):
    esp = fakes.make_device(SLOT)
    part, running = target(esp)
    data = fakes.pattern(size, seed=3)
    w = SlotWriter(part, bytearray(buf_size), running)
    for i in range(0, size, chunk):
        put(w, data[i:i + chunk])
    assert w.finish() == size
    slot = written(esp)
    sectors = (size + 4095) // 4096
    assert slot.data[:size] == data
    assert slot.data[size:sectors * 4096] == b"\xff" * (sectors * 4096 - size)  # padded last block
    assert slot.data[sectors * 4096:] == fakes.pattern(SLOT, seed=7)[sectors * 4096:]  # untouched
    assert slot.total_erases == sectors == w.sectors_erased
    assert slot.erases[:sectors] == [1] * sectors
    assert slot.dirty_programs == 0 and slot.overprogrammed_bytes == 0
    assert all(offset is None for _, _, offset in slot.writeblocks_calls)  # only the erasing form
    assert w.readback_sha256(size) == hashlib.sha256(data).digest()
    assert esp.slots["ota_0"].total_erases == 0


@pytest.mark.parametrize("reads", [[4096] * 5, [100, 3996, 4096, 7], [1] * 300 + [5000]])
def test_zero_copy_free_space_commit(reads):
    esp = fakes.make_device(SLOT)
    part, running = target(esp)
    w = SlotWriter(part, bytearray(8192), running)
    data = fakes.pattern(sum(reads), seed=5)
    pos = 0
    first_free = w.free_space()
    assert first_free is w.free_space()  # the same object while the buffer is empty: no allocation
    for r in reads:
        free = w.free_space()
        n = min(r, len(free))
        free[:n] = data[pos:pos + n]
        w.commit(n)
        pos += n
    assert w.received == pos
    w.finish()
    assert written(esp).data[:pos] == data[:pos]
    assert written(esp).total_erases == (pos + 4095) // 4096


def test_flushes_in_order_one_block_at_a_time():
    esp = fakes.make_device(SLOT)
    part, running = target(esp)
    w = SlotWriter(part, bytearray(4096), running)
    put(w, bytes(4096 * 3 + 10))
    w.finish()
    assert [c[0] for c in written(esp).writeblocks_calls] == [0, 1, 2, 3]
    assert [c[1] for c in written(esp).writeblocks_calls] == [4096] * 4


def test_oversize_is_too_large_and_nothing_past_the_slot():
    esp = fakes.make_device(SLOT)
    part, running = target(esp)
    w = SlotWriter(part, bytearray(4096), running)
    put(w, bytes(SLOT - 10))
    with pytest.raises(OtaError) as e:
        put(w, bytes(11))
    assert e.value.reason == "too_large"
    # zero-copy path: a commit past the slot end is refused before any flush
    esp2 = fakes.make_device(SLOT)
    part2, _ = target(esp2)
    w2 = SlotWriter(part2, bytearray(4096), running)
    for _ in range(SLOT // 4096):
        w2.commit(len(w2.free_space()))
    with pytest.raises(OtaError) as e:
        w2.commit(1)
    assert e.value.reason == "too_large"
    assert written(esp2).total_erases == SLOT // 4096
    assert esp2.slots["ota_0"].total_erases == 0


def test_slot_not_a_multiple_of_the_buffer():
    # 5 sectors with an 8 KiB buffer: the last flush is one sector, inside the slot.
    esp = fakes.make_device(5 * 4096)
    part, running = target(esp)
    w = SlotWriter(part, bytearray(8192), running)
    data = fakes.pattern(5 * 4096)
    put(w, data)
    assert w.finish() == len(data)
    assert written(esp).data == data
    with pytest.raises(OtaError):
        put(w, b"x")


def test_running_slot_refused():
    esp = fakes.make_device(SLOT)
    running = esp.Partition(esp.Partition.RUNNING)
    same = esp.Partition("ota_0")  # a new object for the same slot
    with pytest.raises(OtaError) as e:
        SlotWriter(same, bytearray(4096), running.info())
    assert e.value.reason == "running_slot"
    assert esp.slots["ota_0"].total_erases == 0


def test_bad_buffer_sizes():
    esp = fakes.make_device(SLOT)
    part, running = target(esp)
    for size in (0, 100, 4097, 6144):
        with pytest.raises(ValueError):
            SlotWriter(part, bytearray(size), running)


def test_invalidate_erases_sector_zero():
    esp = fakes.make_device(SLOT)
    part, running = target(esp)
    w = SlotWriter(part, bytearray(4096), running)
    put(w, fakes.build_image(payload_size=9000))
    w.finish()
    assert written(esp).data[0] == 0xE9
    w.invalidate()
    assert written(esp).data[:4096] == b"\xff" * 4096
    assert written(esp).erases[0] == 2


def test_restart_rewrites_from_block_zero():
    esp = fakes.make_device(SLOT)
    part, running = target(esp)
    w = SlotWriter(part, bytearray(4096), running)
    put(w, bytes(10000))
    w.restart()
    data = fakes.pattern(9000, seed=9)
    put(w, data)
    w.finish()
    assert written(esp).data[:9000] == data
    assert w.restarts == 1
    assert written(esp).erases[:3] == [2, 2, 1]  # sectors 0, 1 again; the restart is counted
    assert written(esp).dirty_programs == 0


def test_nor_fake_ands_without_erase():
    # The fake itself: the 3-argument form programs over data (old AND new), silently.
    esp = fakes.make_device(SLOT)
    part = esp.Partition("ota_1")
    part.writeblocks(0, b"\x0f" * 4096)
    part.writeblocks(0, b"\xf0\xff", 0)
    assert bytes(esp.slots["ota_1"].data[:3]) == b"\x00\x0f\x0f"
    assert esp.slots["ota_1"].overprogrammed_bytes == 2 and esp.slots["ota_1"].dirty_programs == 1
    with pytest.raises(OSError) as e:
        part.writeblocks(0, bytes(100))
    assert e.value.args[0] == -260
    with pytest.raises(OSError) as e:
        part.readblocks(SLOT // 4096 + 1, bytearray(1))
    assert e.value.args[0] == -258




def run_mp_alloc(tmp_path, mode, heap="64wK"):
    # Runs mp_alloc.py under the real MicroPython: GC bytes allocated per 4 KiB chunk, steady state.
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no .venv/bin/micropython")
    from devkit.images import build_image

    img = tmp_path / "img.bin"
    img.write_bytes(build_image("1.2.0", size=1024 * 1024))
    slot = tmp_path / "slot.bin"
    slot.write_bytes(b"\xff" * 0x1D0000)
    driver = os.path.join(DRIVERS, "mp_alloc.py")
    out = subprocess.run([MICROPYTHON, "-X", "heapsize=" + heap, driver, LIB,
                          str(img), str(slot), mode],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    fields = dict(item.split("=") for item in out.stdout.split()[1:])
    assert fields["ok"] == "1"
    assert slot.read_bytes()[:1024 * 1024] == img.read_bytes()
    return fields


def test_micropython_writer_allocates_nothing_per_chunk(tmp_path):
    fields = run_mp_alloc(tmp_path, "commit")
    assert int(fields["chunks"]) == 257
    assert fields["steady_max"] == "0" and fields["total"] == "0"
