# The partition table as the chip sees it: the binary table at flash 0x8000 (32-byte entries
# 0xAA 0x50 | type | subtype | offset u32 | size u32 | label[16] | flags u32, ended by the MD5 entry
# 0xEB 0xEB or erased bytes). Parsed once per process; entries are tuples in table order:
#   (type, subtype, address, size, label, flags)
import struct

import simflash

TABLE_OFFSET = 0x8000
TYPE_APP = 0
TYPE_DATA = 1
SUBTYPE_FACTORY = 0x00
SUBTYPE_OTA_0 = 0x10
SUBTYPE_DATA_OTA = 0x00

entries = []


def load():
    # Reads the table from flash; raises ValueError when there is none (a board that cannot boot).
    entries.clear()
    entry = bytearray(32)
    for pos in range(TABLE_OFFSET, TABLE_OFFSET + 0xC00, 32):
        simflash.read(pos, entry)
        if entry[0] != 0xAA or entry[1] != 0x50:
            break
        type_, subtype, address, size = struct.unpack_from("<BBII", entry, 2)
        label = bytes(entry[12:28]).split(b"\0")[0].decode()
        flags = struct.unpack_from("<I", entry, 28)[0]
        entries.append((type_, subtype, address, size, label, flags))
    if not entries:
        raise ValueError("no partition table at 0x8000")
    otadata = find(TYPE_DATA, SUBTYPE_DATA_OTA)
    simflash.set_layout(
        [(e[2], e[2] + e[3], e[4]) for e in entries],
        (otadata[2], otadata[2] + otadata[3]) if otadata else (0, 0),
        [(e[2], e[2] + e[3]) for e in ota_slots()])


def find(type_, subtype=0xFF, label=None):
    # First entry of that type (and subtype unless 0xFF, and label unless None), else None.
    for e in entries:
        if e[0] == type_ and (subtype == 0xFF or e[1] == subtype) and (label is None or e[4] == label):
            return e
    return None


def ota_slots():
    # OTA app slots ordered ota_0, ota_1, ... (stops at the first missing one, as IDF counts them).
    slots = []
    while True:
        e = find(TYPE_APP, SUBTYPE_OTA_0 + len(slots))
        if e is None or len(slots) == 16:
            return slots
        slots.append(e)


def by_label(label):
    for e in entries:
        if e[4] == label:
            return e
    return None
