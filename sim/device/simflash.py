# The simulated SPI NOR flash: DEVDIR/flash.bin (4 MiB) with NOR semantics and instruments.
#
# NOR: erase_sector() sets a 4 KiB sector to 0xFF; program() stores old AND new (bits only go 1 -> 0).
# Instruments (this process = this boot), as sim.runner.Device.counters() reports them:
#   sector_erases           every erase_sector() call
#   erases_by_partition     {label: erases} (labels from the partition table, '-' outside any)
#   erased_sectors          {"0x1e0000": n} per sector address (n > 1 means the sector was erased again)
#   bytes_programmed        bytes passed to program() (and applied)
#   dirty_programs          1 KiB pieces of program() calls whose target bytes were not all 0xFF
#                           (programming over data: legal on NOR, a writer that erases first never does)
#   overprogrammed_bytes    bytes whose stored value differs from the value asked for (a 1 bit that
#                           could not be set over a 0: silent corruption, write verification is off)
# DEVDIR/counters.jsonl: one line per boot, appended at every process end (die() or normal exit),
# with the per-sector erase counts as one hex string that the runner expands into the two dicts.
# The in-process counters are in `counters`; erased sectors live in a 1 KiB bytearray (no dict growth
# in the device's GC heap while it writes).
import binascii

import simdev

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

SECTOR = const(4096)
FLASH_SIZE = const(0x400000)
CHUNK = const(1024)  # scratch size: small on purpose, the sim shares the device's GC heap

counters = {"sector_erases": 0, "bytes_programmed": 0, "dirty_programs": 0, "overprogrammed_bytes": 0}
_erase_counts = bytearray(FLASH_SIZE // SECTOR)  # saturates at 255
# 1 for a sector erased in this process and not programmed since: programming it needs no read-back
# check (the common writeblocks path: erase, then program the whole sector). Speed only; the
# semantics are the same either way.
_clean = bytearray(FLASH_SIZE // SECTOR)
_ERASED = b"\xff" * CHUNK  # what an erase writes, made once
scratch = bytearray(CHUNK)  # shared with simimage and simboot (never used by two at once)
_scratch_view = memoryview(scratch)

if simdev.IS_MICROPYTHON:
    import micropython

    # Native loops: no allocation and no per-byte bytecode (they run inside every program() call).
    @micropython.viper
    def all_erased(buf, n: int) -> bool:
        p = ptr8(buf)  # noqa: F821 (viper builtin)
        i = 0
        while i < n:
            if p[i] != 0xFF:
                return False
            i += 1
        return True

    @micropython.viper
    def and_into(old, new, n: int) -> int:
        # old[i] &= new[i]; returns how many bytes end up different from new.
        p = ptr8(old)  # noqa: F821
        q = ptr8(new)  # noqa: F821
        bad = 0
        i = 0
        while i < n:
            v = p[i] & q[i]
            if v != q[i]:
                bad += 1
            p[i] = v
            i += 1
        return bad

    @micropython.viper
    def xor_bytes(buf, n: int, checksum: int) -> int:
        p = ptr8(buf)  # noqa: F821
        i = 0
        while i < n:
            checksum ^= p[i]
            i += 1
        return checksum
else:
    def all_erased(buf, n):
        return bytes(buf[:n]) == b"\xff" * n

    def and_into(old, new, n):
        bad = 0
        for i in range(n):
            v = old[i] & new[i]
            if v != new[i]:
                bad += 1
            old[i] = v
        return bad

    def xor_bytes(buf, n, checksum):
        for b in bytes(buf[:n]):
            checksum ^= b
        return checksum

_file = None
_regions = []          # (start, end, label) of the partition table, for the per-partition report
_otadata = (0, 0)      # otadata range: its erases and writes are named points
_slots = []            # app slot ranges: their erases are the 'slot_erase' point
_saved = False


def open_flash():
    # Opens DEVDIR/flash.bin for the process; simdev.init() must have run. Raises OSError.
    global _file
    if simdev.IS_MICROPYTHON:
        _file = open(simdev.path("flash.bin"), "r+b")  # unbuffered on the Unix port
    else:
        _file = open(simdev.path("flash.bin"), "r+b", buffering=0)  # tests read it from the host
    simdev._exit_hooks.append(save_counters)


def set_layout(regions, otadata, slots):
    # Told by simtable once the partition table is parsed: names for the counters and points.
    global _regions, _otadata, _slots
    _regions, _otadata, _slots = regions, otadata, slots


def _in(ranges, addr):
    for start, end in ranges:
        if start <= addr < end:
            return True
    return False


def read(addr, buf):
    # Fills buf (any writable buffer) from flash at addr.
    _file.seek(addr)
    _file.readinto(buf)


def erase_sector(addr):
    # addr must be 4096-aligned (the callers check ranges and raise the ESP errors).
    simdev.point("erase")
    _file.seek(addr)
    for _ in range(SECTOR // CHUNK):
        _file.write(_ERASED)
    counters["sector_erases"] += 1
    index = addr // SECTOR
    _clean[index] = 1
    if _erase_counts[index] < 255:
        _erase_counts[index] += 1
    if _otadata[0] <= addr < _otadata[1]:
        simdev.point("otadata_erase")
    elif _in(_slots, addr):
        simdev.point("slot_erase")


def program(addr, data):
    # NOR program of data (bytes-like) at addr; may die part-way when a cut_after_bytes fault fires.
    # Allocates nothing when the target is erased and len(data) is a multiple of 1 KiB.
    if _otadata[0] <= addr < _otadata[1]:
        simdev.point("otadata_write")
    simdev.point("program")
    total = len(data)
    allowed = simdev.bytes_allowed(counters["bytes_programmed"], total)
    index = addr // SECTOR
    if allowed == total and ((_clean[index] and addr % SECTOR + total <= SECTOR) or _erased(addr, total)):
        _file.seek(addr)
        _file.write(data)
    else:
        view = memoryview(data)
        done = 0
        while done < allowed:
            n = min(CHUNK, allowed - done)
            _program_chunk(addr + done, view[done:done + n], n)
            done += n
    for i in range(index, (addr + max(allowed, 1) - 1) // SECTOR + 1):
        _clean[i] = 0
    counters["bytes_programmed"] += allowed
    if allowed < total:
        simdev.cut_now()


def _erased(addr, length):
    # True when every byte of flash[addr:addr+length] is 0xFF (read through the scratch buffer).
    done = 0
    while done < length:
        n = min(CHUNK, length - done)
        old = _scratch_view if n == CHUNK else _scratch_view[:n]
        _file.seek(addr + done)
        _file.readinto(old)
        if not all_erased(old, n):
            return False
        done += n
    return True


def _program_chunk(addr, chunk, n):
    # Slow path, one chunk of at most 1 KiB: NOR stores old AND new.
    old = _scratch_view[:n]
    _file.seek(addr)
    _file.readinto(old)
    _file.seek(addr)
    if all_erased(old, n):
        _file.write(chunk)
        return
    counters["dirty_programs"] += 1
    counters["overprogrammed_bytes"] += and_into(old, chunk, n)
    _file.write(old)


def erases_by_partition():
    result = {}
    for i, n in enumerate(_erase_counts):
        if n:
            label = "-"
            for start, end, name in _regions:
                if start <= i * SECTOR < end:
                    label = name
            result[label] = result.get(label, 0) + n
    return result


def save_counters(exit_reason="exit"):
    # Appends this boot's record as one line to DEVDIR/counters.jsonl, once per process. It runs at a
    # reset, when the device code may have left little heap: so it builds no dict of sectors and
    # never rereads earlier boots. The erase count of every sector goes out as one hex string
    # ("erase_counts"); the host runner turns it into erased_sectors / erases_by_partition.
    global _saved
    if _saved or simdev.devdir is None:
        return
    _saved = True
    if _file is not None:
        _file.flush()
    with open(simdev.path("counters.jsonl"), "a") as f:
        # The record begins on a fresh line: a process killed while writing its record leaves a torn
        # line without its newline, and this record must not be glued to it (readers skip blank lines).
        f.write('\n{"boot": %d, "exit": "%s"' % (simdev.boot_number, exit_reason))
        for name in counters:
            f.write(', "%s": %d' % (name, counters[name]))
        f.write(', "erase_counts": "')
        f.write(binascii.hexlify(_erase_counts).decode())
        f.write('"}\n')
