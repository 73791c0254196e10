# The second-stage bootloader's choice of app (IDF bootloader_utility.c, rollback enabled as in every
# MicroPython ESP32 build since v1.21):
#  1. every PENDING_VERIFY otadata entry becomes ABORTED (the app before did not confirm itself);
#  2. both entries blank/dead (or no OTA slots) -> factory if present, else ota_0; otherwise the active
#     entry's slot, and an active NEW entry becomes PENDING_VERIFY; no active entry -> try all;
#  3. the chosen image is verified; if it is invalid, try the slots below it down to factory, then the
#     ones above it (bootloader_utility_load_boot_image); otadata is not changed by that fallback;
#  4. booting ota_N from blank otadata (no factory) writes seq N+1, VALID into sector 0
#     (set_actual_ota_seq).
import simimage
import simotadata
import simtable


def _index_to_partition(index, slots):
    if index < 0:
        return simtable.find(simtable.TYPE_APP, simtable.SUBTYPE_FACTORY)
    return slots[index] if index < len(slots) else None


def select():
    # -> (start index, initial contents flag); index -1 means factory.
    slots = simtable.ota_slots()
    if simotadata.partition() is None:
        return -1, False
    entries = simotadata.read()
    for i in range(2):
        if entries[i][1] == simotadata.PENDING_VERIFY:
            entries[i][1] = simotadata.ABORTED
            simotadata.write(i, entries[i][0], simotadata.ABORTED, entries[i][2])
    if (simotadata.is_blank(entries[0]) and simotadata.is_blank(entries[1])) or not slots:
        if _index_to_partition(-1, slots) is not None:
            return -1, False

        def unset(e):
            return e[0] == 0xFFFFFFFF or e[2] != simotadata.crc(e[0])
        return 0, unset(entries[0]) and unset(entries[1])
    active = simotadata.active(entries)
    if active == -1:
        return -1, False
    seq, state, stored_crc = entries[active]
    if state == simotadata.NEW:
        simotadata.write(active, seq, simotadata.PENDING_VERIFY, stored_crc)
    return (seq - 1) % len(slots), False


def boot():
    # -> dict describing the boot: slot, address, size, version, state, seq, fallback.
    # Raises ValueError('no bootable app') when no app partition holds a valid image.
    slots = simtable.ota_slots()
    start, initial = select()
    order = list(range(start, -2, -1)) + list(range(start + 1, len(slots)))
    for index in order:
        part = _index_to_partition(index, slots)
        if part is None:
            continue
        try:
            simimage.verify(part[2], part[3], boot=True)
        except ValueError as e:
            print("E (boot) %s is not bootable: %s" % (part[4], e))
            continue
        if initial and index >= 0:
            simotadata.write(0, index + 1, simotadata.VALID)
        return _describe(part, index, start)
    raise ValueError("no bootable app")


def _describe(part, index, start):
    state = None
    seq = None
    if simotadata.partition() is not None and index >= 0:
        entries = simotadata.read()
        active = simotadata.active(entries)
        slot_count = len(simtable.ota_slots())
        if active != -1 and (entries[active][0] - 1) % slot_count == index:
            seq = entries[active][0]
            state = simotadata.STATE_NAMES.get(entries[active][1], "0x%x" % entries[active][1])
    return {"slot": part[4], "address": part[2], "size": part[3], "version": simimage.app_version(part[2]),
            "state": state, "seq": seq, "fallback": index != start}
