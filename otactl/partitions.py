"""partitions.csv: parse and check it as ESP-IDF's gen_esp32part.py does, and convert it to binary.

The binary table (flashed at 0x8000) is a list of 32-byte entries, then an MD5 entry, padded with
0xFF to 0xC00 bytes. The simulator lays its flash out from the same table, and every size check reads
the slot size from here, never from a constant.

gen_esp32part.py's rules (ESP-IDF v5.x, components/partition_table/gen_esp32part.py), followed here:
- only lines that START with '#' are comments (a trailing '# ...' lands in the flags field);
- type: app/data (any case) or a number; app needs a subtype; an empty data subtype is 'undefined' (6);
- offsets: app aligned to 0x10000, every other type to 0x1000; an empty offset follows the previous
  partition, aligned; an explicit offset below the previous partition's end is an overlap, and no
  partition may start below the table's sector end (0x9000);
- sizes: an app size must be a multiple of 0x1000 (0x10000 only with secure boot v1); data sizes have
  no alignment rule; a negative size means "up to that end address";
- names unique; at most one otadata, and it must be exactly 0x2000; otadata/coredump cannot be
  readonly; a read-write nvs needs >= 0x3000; the table (entries + MD5 entry) must stay below 0xC00.
Stricter than gen_esp32part (it silently truncates or accepts these): a name longer than 16 bytes or
empty, a zero size, non-empty fields past the sixth, OTA slots without otadata, an ota_N used twice,
a table that ends past the flash size (gen_esp32part checks that only with --flash-size).

Raises OtaError('bad_partition_table', ...) naming the line and the problem.
"""
import hashlib
import struct

from ota.errors import OtaError

TABLE_OFFSET = 0x8000
TABLE_MAX_LEN = 0xC00
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
FLASH_SECTOR = 0x1000
APP_ALIGN = 0x10000
NVS_MIN_SIZE = 0x3000

TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES = {
    0x00: {"factory": 0x00, "test": 0x20, **{"ota_%d" % i: 0x10 + i for i in range(16)},
           "tee_0": 0x30, "tee_1": 0x31},
    0x01: {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04,
           "efuse": 0x05, "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82,
           "littlefs": 0x83, "tee_ota": 0x90},
}
FLAGS = {"encrypted": 0x1, "readonly": 0x2}


class Partition:
    __slots__ = ("label", "type", "subtype", "offset", "size", "flags", "line")

    def __init__(self, label, type, subtype, offset, size, flags=0, line=0):
        self.label, self.type, self.subtype = label, type, subtype
        self.offset, self.size, self.flags, self.line = offset, size, flags, line

    @property
    def end(self):
        return self.offset + self.size

    def __repr__(self):
        return "Partition(%r, type=%d, subtype=0x%02x, offset=0x%x, size=0x%x)" % (
            self.label, self.type, self.subtype, self.offset, self.size)


def _bad(line, message):
    raise OtaError("bad_partition_table", "line %d: %s" % (line, message) if line else message)


def _number(text, line, what):
    # gen_esp32part's parse_int: int(x, 0) with k/K and m/M suffixes (which may repeat: '1kk')
    text = text.strip()
    multiplier = 1
    while text[-1:].lower() in ("k", "m"):
        multiplier *= 1024 if text[-1:].lower() == "k" else 1024 * 1024
        text = text[:-1]
    try:
        return int(text, 0) * multiplier
    except ValueError:
        _bad(line, "%s %r is not a number" % (what, text))


def _parse_type(text, line):
    text = text.strip()
    if text == "":
        _bad(line, "the type field is empty")
    if text.lower() in TYPES:
        return TYPES[text.lower()]
    if text[:1].isalpha():
        _bad(line, "unknown type %r (app, data or a number)" % text)
    value = _number(text, line, "type")
    if not 0 <= value <= 0xFE:
        _bad(line, "type %r out of range" % text)
    return value


def _parse_subtype(text, type_, line):
    text = text.strip()
    if text == "":
        if type_ == TYPES["app"]:
            _bad(line, "an app partition needs a subtype (factory, ota_0..ota_15, test)")
        return SUBTYPES[TYPES["data"]]["undefined"]
    names = SUBTYPES.get(type_, {})
    if text.lower() in names:
        return names[text.lower()]
    if text[:1].isalpha():
        _bad(line, "unknown subtype %r for type %d" % (text, type_))
    value = _number(text, line, "subtype")
    if not 0 <= value <= 0xFE:
        _bad(line, "subtype %r out of range" % text)
    return value


def parse_csv(text, flash_size=4 * 1024 * 1024, table_offset=TABLE_OFFSET):
    """Parse and validate a partitions.csv text; returns the list of Partition in table order."""
    partitions = []
    first_free = table_offset + FLASH_SECTOR  # the table occupies one sector
    next_offset = first_free
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        fields += [""] * (6 - len(fields))
        if any(fields[6:]):
            _bad(number, "more than 6 fields (name, type, subtype, offset, size, flags): %r" % line)
        label = fields[0]
        if not label:
            _bad(number, "the name field is empty")
        if len(label.encode()) > 16:
            _bad(number, "name %r is longer than 16 bytes" % label)
        type_ = _parse_type(fields[1], number)
        subtype = _parse_subtype(fields[2], type_, number)
        align = APP_ALIGN if type_ == TYPES["app"] else FLASH_SECTOR
        if not fields[4]:
            _bad(number, "%s: the size field is empty" % label)
        if fields[3]:
            offset = _number(fields[3], number, "offset")
            if offset < next_offset:
                if not partitions:
                    _bad(number, "%s at 0x%x overlaps the partition table sector (use 0x%x or higher)"
                         % (label, offset, next_offset))
                previous = partitions[-1]
                _bad(number, "%s at 0x%x overlaps %s (line %d), which ends at 0x%x"
                     % (label, offset, previous.label, previous.line, next_offset))
        else:
            offset = (next_offset + align - 1) // align * align
        size = _number(fields[4], number, "size")
        if size < 0:
            size = -size - offset
        flags = 0
        for flag in filter(None, (f.strip() for f in fields[5].split(":"))):
            if flag not in FLAGS:
                _bad(number, "unknown flag %r" % flag)
            flags |= FLAGS[flag]
        if offset % align:
            _bad(number, "%s offset 0x%x is not aligned to 0x%x" % (label, offset, align))
        if size <= 0:
            _bad(number, "%s size must be positive" % label)
        if type_ == TYPES["app"] and size % FLASH_SECTOR:
            _bad(number, "app partition %s size 0x%x is not a multiple of 0x%x" % (label, size, FLASH_SECTOR))
        if type_ == TYPES["data"] and subtype in (0x00, 0x03) and flags & FLAGS["readonly"]:
            _bad(number, "%s: otadata and coredump partitions are always read-write" % label)
        if type_ == TYPES["data"] and subtype == 0x02 and size < NVS_MIN_SIZE and not flags & FLAGS["readonly"]:
            _bad(number, "%s: a read-write nvs partition needs at least 0x%x bytes, not 0x%x"
                 % (label, NVS_MIN_SIZE, size))
        partitions.append(Partition(label, type_, subtype, offset, size, flags, number))
        next_offset = offset + size
    _check_table(partitions, flash_size, first_free)
    return partitions


def _check_table(partitions, flash_size, first_free=TABLE_OFFSET + FLASH_SECTOR):
    if not partitions:
        _bad(0, "the table is empty")
    seen = {}
    for p in partitions:
        if p.label in seen:
            _bad(p.line, "name %r is used twice (line %d)" % (p.label, seen[p.label]))
        seen[p.label] = p.line
        if p.offset < first_free:
            _bad(p.line, "%s at 0x%x is below 0x%x (bootloader and partition table)" % (p.label, p.offset, first_free))
        if p.end > flash_size:
            _bad(p.line, "%s ends at 0x%x, past the 0x%x bytes of flash" % (p.label, p.end, flash_size))
    ordered = sorted(partitions, key=lambda p: p.offset)
    for a, b in zip(ordered, ordered[1:]):
        if b.offset < a.end:
            _bad(b.line, "%s at 0x%x overlaps %s (0x%x..0x%x)" % (b.label, b.offset, a.label, a.offset, a.end))
    otadata = otadata_partitions(partitions)
    slots = ota_slots(partitions)
    if len(otadata) > 1:
        _bad(otadata[1].line, "more than one otadata partition")
    if otadata and otadata[0].size != 0x2000:
        _bad(otadata[0].line, "otadata must be 0x2000 bytes (two sectors), not 0x%x" % otadata[0].size)
    if slots and not otadata:
        _bad(slots[0].line, "OTA app slots need an otadata partition")
    subtypes = [p.subtype for p in slots]
    if len(set(subtypes)) != len(subtypes):
        _bad(slots[0].line, "an ota_N subtype is used twice")
    if len(partitions) * 32 + 32 >= TABLE_MAX_LEN:
        _bad(0, "too many partitions for a 0x%x-byte table" % TABLE_MAX_LEN)


def load(path, flash_size=4 * 1024 * 1024):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise OtaError("bad_partition_table", "cannot read %s: %s" % (path, e.strerror))
    return parse_csv(text, flash_size)


def to_binary(partitions):
    """The flashed form: entries, the MD5 entry, 0xFF padding to 0xC00 bytes."""
    body = b"".join(
        ENTRY_MAGIC + struct.pack("<BBII", p.type, p.subtype, p.offset, p.size)
        + p.label.encode().ljust(16, b"\0") + struct.pack("<I", p.flags)
        for p in partitions)
    body += MD5_MAGIC + b"\xff" * 14 + hashlib.md5(body).digest()
    return body.ljust(TABLE_MAX_LEN, b"\xff")


def from_binary(blob):
    """Parse the flashed form back, as gen_esp32part does: entries, the MD5 entry (checked), then an
    all-0xFF end marker, which must be there."""
    partitions = []
    md5 = hashlib.md5()
    for pos in range(0, min(len(blob), TABLE_MAX_LEN), 32):
        entry = bytes(blob[pos:pos + 32])
        if len(entry) != 32:
            break
        if entry == b"\xff" * 32:
            if not partitions:
                raise OtaError("bad_partition_table", "no partition entries in the binary table")
            return partitions
        if entry[:2] == MD5_MAGIC:
            if md5.digest() != entry[16:32]:
                raise OtaError("bad_partition_table", "MD5 of the binary table does not match")
            continue
        if entry[:2] != ENTRY_MAGIC:
            raise OtaError("bad_partition_table", "entry at 0x%x has bad magic %r" % (pos, entry[:2]))
        md5.update(entry)
        type_, subtype, offset, size = struct.unpack_from("<BBII", entry, 2)
        label = entry[12:28].split(b"\0", 1)[0].decode()
        flags = struct.unpack_from("<I", entry, 28)[0]
        partitions.append(Partition(label, type_, subtype, offset, size, flags))
    raise OtaError("bad_partition_table", "the binary table has no end-of-table marker")


def ota_slots(partitions):
    return [p for p in partitions if p.type == 0 and 0x10 <= p.subtype <= 0x1F]


def otadata_partitions(partitions):
    return [p for p in partitions if p.type == 1 and p.subtype == 0x00]
