# otadata, read only: the state the bootloader last left each OTA slot in (docs/CHIP.md §2).
#
# ESP-IDF keeps two 32-byte entries in the data/ota partition, one at the start of each 4 KiB sector:
#   +0 ota_seq u32 | +4 seq_label[20] | +24 ota_state u32 | +28 crc u32, little endian,
#   crc = crc32 of the 4 seq bytes only. States: NEW, PENDING_VERIFY, VALID, INVALID, ABORTED, UNDEFINED.
# The bootloader boots the "valid" entry with the larger seq (seq != 0xFFFFFFFF, crc matches, state
# not INVALID/ABORTED). We ask another question: how did each slot's last boot attempt end? So an
# INVALID or ABORTED entry is kept here: it is exactly the news (ABORTED = the bootloader found the slot
# still PENDING_VERIFY at a reset: it booted and never confirmed). The bootloader rewrites that state
# in place with the same seq and crc, so the entry still names its slot. Our interpretation:
#   - an entry NAMES a slot when its seq is not 0xFFFFFFFF (erased) nor 0 (never written by IDF, whose
#     seqs start at 1) and its crc matches (a power cut mid-write leaves a bad crc: it names nothing);
#   - slot = (seq - 1) % number of OTA slots, slots indexed by subtype (ota_N = 0x10 + N), as the
#     bootloader indexes them: the same as table order in any sane table;
#   - when both entries name one slot, the larger seq (the later set_boot) wins; sector 0 on a tie,
#     as in bootloader_common_get_active_otadata.
# Never writes: otadata belongs to the bootloader and esp32.Partition (set_boot, mark_app_valid...).
import struct
from binascii import crc32

_ERASED = 0xFFFFFFFF
_NAMES = ("NEW", "PENDING_VERIFY", "VALID", "INVALID", "ABORTED")
_entry = bytearray(32)  # one entry at a time; allocated once, at import


def _name(state):
    if state < len(_NAMES):
        return _NAMES[state]
    return "UNDEFINED" if state == _ERASED else "UNKNOWN"


# -> {"ota_0": "VALID", "ota_1": "ABORTED"}: each OTA slot's latest entry state, None when no entry
# names it (blank otadata, or only a torn entry). {} when there is no otadata partition: this build
# has no rollback. Raises OSError only from the flash read.
def read(esp32_module=None):
    if esp32_module is None:
        import esp32 as esp32_module
    Partition = esp32_module.Partition
    found = Partition.find(Partition.TYPE_DATA, subtype=0x00)
    if not found:
        return {}
    slots = []
    for p in Partition.find(Partition.TYPE_APP):
        info = p.info()
        if 0x10 <= info[1] <= 0x1F:
            slots.append((info[1], info[4]))
    slots.sort()
    states = {}
    for _, label in slots:
        states[label] = None
    if not slots:
        return states
    newest = [0] * len(slots)  # seq of the entry that named each slot so far
    for sector in (0, 1):
        found[0].readblocks(sector, _entry)
        seq, = struct.unpack_from("<I", _entry, 0)
        state, crc = struct.unpack_from("<II", _entry, 24)
        if seq == 0 or seq == _ERASED or crc != crc32(struct.pack("<I", seq), _ERASED):
            continue
        index = (seq - 1) % len(slots)
        if seq > newest[index]:
            newest[index] = seq
            states[slots[index][1]] = _name(state)
    return states
