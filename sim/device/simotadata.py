# otadata as ESP-IDF keeps it (esp_ota_ops.c, bootloader_common.c, bootloader_utility.c):
# two 4 KiB sectors, one 32-byte entry at the start of each:
#   +0 ota_seq u32 | +4 seq_label[20] (0xFF) | +24 ota_state u32 | +28 crc u32 (crc32 of ota_seq only)
# An entry is valid when seq != 0xFFFFFFFF, state is not INVALID/ABORTED and the crc matches; the
# active entry is the valid one with the larger seq (index 0 on a tie). Slot = (seq - 1) % slots.
import binascii
import struct

import simflash
import simtable

NEW = 0
PENDING_VERIFY = 1
VALID = 2
INVALID = 3
ABORTED = 4
UNDEFINED = 0xFFFFFFFF
STATE_NAMES = {0: "NEW", 1: "PENDING_VERIFY", 2: "VALID", 3: "INVALID", 4: "ABORTED",
               0xFFFFFFFF: "UNDEFINED"}
_entry = bytearray(32)


def crc(seq):
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


def partition():
    return simtable.find(simtable.TYPE_DATA, simtable.SUBTYPE_DATA_OTA)


def read():
    # -> [[seq, state, crc], [seq, state, crc]] for sectors 0 and 1. Needs an otadata partition.
    base = partition()[2]
    result = []
    for i in range(2):
        simflash.read(base + 4096 * i, _entry)
        seq, = struct.unpack_from("<I", _entry, 0)
        state, stored_crc = struct.unpack_from("<II", _entry, 24)
        result.append([seq, state, stored_crc])
    return result


def is_valid(entry):
    return entry[0] != 0xFFFFFFFF and entry[1] not in (INVALID, ABORTED) and entry[2] == crc(entry[0])


def active(entries):
    # Index of the active entry, or -1 (bootloader_common_get_active_otadata).
    v0, v1 = is_valid(entries[0]), is_valid(entries[1])
    if v0 and v1:
        return 0 if entries[0][0] >= entries[1][0] else 1
    return 0 if v0 else (1 if v1 else -1)


def is_blank(entry):
    # bootloader_common_ota_select_invalid: no usable seq or a dead state (crc not looked at).
    return entry[0] == 0xFFFFFFFF or entry[1] in (INVALID, ABORTED)


def write(index, seq, state, stored_crc=None):
    # Erase the sector, then program the 32-byte entry (rewrite_ota_seq / write_otadata). The
    # bootloader rewrites an entry with its stored crc (stored_crc); the app recomputes it.
    address = partition()[2] + 4096 * index
    simflash.erase_sector(address)
    entry = _entry
    struct.pack_into("<I", entry, 0, seq)
    for i in range(4, 24):
        entry[i] = 0xFF
    struct.pack_into("<II", entry, 24, state, crc(seq) if stored_crc is None else stored_crc)
    simflash.program(address, entry)


def next_seq(entries, slot_index, slot_count):
    # esp_rewrite_ota_data: -> (sector index, seq) for set_boot(ota_<slot_index>).
    current = active(entries)
    if current == -1:
        return 0, slot_index + 1
    seq = entries[current][0]
    i = 0
    while seq > (slot_index + 1) % slot_count + i * slot_count:
        i += 1
    return 1 - current, (slot_index + 1) % slot_count + i * slot_count
