# Simulated `esp32` module: Partition with the API and errors of MicroPython's esp32_partition.c on
# ESP-IDF (docs/CHIP.md §1), over the simulated flash. Errors are OSError(-esp_err, 'ESP_ERR_x');
# ESP_FAIL is OSError(1, 'ESP_FAIL'). idf_heap_info() reports the numbers of sim.json "idf_heap".
import simdev
import simflash
import simimage
import simotadata
import simtable

HEAP_DATA = 4   # MALLOC_CAP_8BIT
HEAP_EXEC = 1   # MALLOC_CAP_EXEC
_NATIVE_BLOCK = 4096
_DEFAULT_IDF_HEAP = [[245760, 191872, 180224, 176128]]


def _esp_error(code, name):
    return OSError(-code, name)


_ERR_INVALID_ARG = (0x102, "ESP_ERR_INVALID_ARG")
_ERR_INVALID_SIZE = (0x104, "ESP_ERR_INVALID_SIZE")
_ERR_NOT_FOUND = (0x105, "ESP_ERR_NOT_FOUND")
_ERR_VALIDATE = (0x1503, "ESP_ERR_OTA_VALIDATE_FAILED")


def idf_heap_info(capabilities):
    # -> [(total, free, largest_free_block, min_free), ...] per IDF heap region with those caps. The
    # open TLS sessions (simssl, with "tls_accounting") are carved out of the largest block.
    regions = [list(region) for region in simdev.config.get("idf_heap", _DEFAULT_IDF_HEAP)]
    taken = simdev.idf_taken
    if taken:
        region = max(regions, key=lambda r: r[2])
        region[1] -= taken
        region[2] = max(0, region[2] - taken)
        region[3] = min(region[3], region[1])
    return [tuple(region) for region in regions]


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, *args):
        # Partition(id, block_size=4096, /): positional only, as the C type (keywords -> TypeError).
        # Raises ValueError for an int other than BOOT/RUNNING, OSError(ENOENT) for an unknown label.
        if not 1 <= len(args) <= 2:
            raise TypeError("function takes 1 or 2 positional arguments")
        id = args[0]
        block_size = args[1] if len(args) == 2 else 4096
        if isinstance(id, tuple):  # internal: a table entry
            entry = id
        elif isinstance(id, int):
            if id == Partition.BOOT:
                entry = _boot_partition()
            elif id == Partition.RUNNING:
                entry = simtable.by_label(simdev.running)
            else:
                raise ValueError()
        else:
            entry = simtable.find(simtable.TYPE_APP, 0xFF, id) or simtable.find(simtable.TYPE_DATA, 0xFF, id)
        if entry is None:
            raise OSError(2)  # MP_ENOENT
        self._entry = entry
        self._block_size = block_size

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=4096):
        return [Partition(e, block_size) for e in simtable.entries
                if e[0] == type and (subtype == 0xFF or e[1] == subtype) and (label is None or e[4] == label)]

    def info(self):
        e = self._entry
        return (e[0], e[1], e[2], e[3], e[4], bool(e[5] & 1))

    def __repr__(self):
        e = self._entry
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=%u>" % (
            e[0], e[1], e[2], e[3], e[4], e[5] & 1)

    def _check(self, offset, length):
        # esp_partition_read/write range checks. Raises OSError INVALID_ARG / INVALID_SIZE.
        size = self._entry[3]
        if offset > size:
            raise _esp_error(*_ERR_INVALID_ARG)
        if length > size - offset:
            raise _esp_error(*_ERR_INVALID_SIZE)

    def readblocks(self, block, buf, offset=0):
        start = block * self._block_size + offset
        self._check(start, len(buf))
        simflash.read(self._entry[2] + start, buf)

    def _guard(self):
        # ESP-IDF's default CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS: esp_flash_write/erase_region
        # check the range against the running app (esp_partition_main_flash_region_safe) and abort()
        # BEFORE touching flash: a panic, the board reboots (docs/CHIP.md). Not an OSError the code
        # could catch. Partitions are whole and never overlap, so "touches the running app" is "is it".
        if self._entry[4] == simdev.running and self._entry[0] == simtable.TYPE_APP:
            print("abort() was called: flash operation on the running app (0x%x)" % self._entry[2])
            simdev.die("panic")

    def writeblocks(self, block, buf, offset=None):
        # 2 args: erase the covered range first (len must be a multiple of 4096); 3 args: never erase.
        # Touching the running app panics (_guard), after the range checks as in esp_partition_write.
        start = block * self._block_size
        if offset is None:
            if self._block_size < _NATIVE_BLOCK:
                raise OSError(95)  # not simulated: sub-4096 block sizes (read-modify-write cache)
            self._erase(start, len(buf))
        else:
            start += offset
        self._check(start, len(buf))
        self._guard()
        simflash.program(self._entry[2] + start, buf)

    def _erase(self, offset, length):
        # esp_partition_erase_range: raises OSError INVALID_ARG / INVALID_SIZE, erases nothing then.
        self._check(offset, length)  # the range checks of read/write, in the same order
        if length % _NATIVE_BLOCK:
            raise _esp_error(*_ERR_INVALID_SIZE)
        if offset % _NATIVE_BLOCK:
            raise _esp_error(*_ERR_INVALID_ARG)
        self._guard()
        address = self._entry[2] + offset
        end = address + length
        while address < end:  # no range object: this runs inside the device's measured copy loop
            simflash.erase_sector(address)
            address += _NATIVE_BLOCK

    def ioctl(self, cmd, arg):
        if cmd in (1, 2, 3):
            return 0
        if cmd == 4:
            return self._entry[3] // self._block_size
        if cmd == 5:
            return self._block_size
        if cmd == 6:
            if self._block_size != _NATIVE_BLOCK:
                return -22
            self._erase(arg * _NATIVE_BLOCK, _NATIVE_BLOCK)
            return 0
        return None

    def get_next_update(self):
        # factory/other -> ota_0, ota_N -> ota_N+1 (wrapping). Raises OSError(ENOENT) without OTA slots.
        bytearray(4096)  # the real call allocates a 4 KiB buffer in the GC heap (MP issue #8382)
        slots = simtable.ota_slots()
        if not slots:
            raise OSError(2)
        for i, e in enumerate(slots):
            if e[2] == self._entry[2] and i + 1 < len(slots):
                return Partition(slots[i + 1], self._block_size)
        return Partition(slots[0], self._block_size)

    def set_boot(self):
        # esp_ota_set_boot_partition. Raises OSError VALIDATE_FAILED for an image the chip rejects,
        # NOT_FOUND without otadata, INVALID_ARG for a data partition.
        e = self._entry
        try:
            simimage.verify(e[2], e[3])
        except ValueError:
            raise _esp_error(*_ERR_VALIDATE)
        if e[0] != simtable.TYPE_APP:
            raise _esp_error(*_ERR_INVALID_ARG)
        otadata = simotadata.partition()
        if otadata is None:
            raise _esp_error(*_ERR_NOT_FOUND)
        simdev.point("set_boot")
        if e[1] == simtable.SUBTYPE_FACTORY:
            for i in range(2):
                simflash.erase_sector(otadata[2] + 4096 * i)
        else:
            slots = simtable.ota_slots()
            index = e[1] - simtable.SUBTYPE_OTA_0
            if index >= len(slots):
                raise _esp_error(*_ERR_INVALID_ARG)
            sector, seq = simotadata.next_seq(simotadata.read(), index, len(slots))
            simotadata.write(sector, seq, simotadata.NEW)
        simdev.point("set_boot_done")

    @staticmethod
    def mark_app_valid_cancel_rollback():
        # esp_ota_mark_app_valid_cancel_rollback. Raises OSError NOT_FOUND without otadata,
        # OSError(1, 'ESP_FAIL') when no otadata entry is active ("running firmware is factory").
        if simotadata.partition() is None:
            raise _esp_error(*_ERR_NOT_FOUND)
        entries = simotadata.read()
        active = simotadata.active(entries)
        if active == -1 or not simtable.ota_slots():
            raise OSError(1, "ESP_FAIL")
        if entries[active][1] != simotadata.VALID:
            simdev.point("mark_valid")
            simotadata.write(active, entries[active][0], simotadata.VALID)


def _boot_partition():
    # esp_ota_get_boot_partition: what the bootloader would pick next (ignores image validity).
    if simotadata.partition() is None:
        return None
    slots = simtable.ota_slots()
    entries = simotadata.read()
    active = simotadata.active(entries)
    if active == -1 or not slots:
        return simtable.find(simtable.TYPE_APP, simtable.SUBTYPE_FACTORY) or (slots[0] if slots else None)
    return slots[(entries[active][0] - 1) % len(slots)]
