# otactl/partitions.py at every rule's bound, written for mutation testing (issue 15, docs/MUTATION.md).
# Each rule is ESP-IDF's components/partition_table/gen_esp32part.py (v5.x, checked in the esp-idf
# source: parse_int, PartitionDefinition.verify/to_binary/from_binary, PartitionTable.verify) or one
# of the module's own stricter rules named in its docstring; the numbers of the binary form are the
# 32-byte entry '<2sBBLL16sL' with magic AA 50, the MD5 entry EB EB + 14 x FF + MD5, 0xC00 bytes.
import hashlib
import re
import struct

import pytest

from otactl import partitions
from otactl.partitions import Partition
from ota.errors import OtaError

MIB = 1024 * 1024


def parse(text, **kw):
    return partitions.parse_csv(text, **kw)


def refused(text, whole_table=False, **kw):
    with pytest.raises(OtaError) as e:
        partitions.parse_csv(text, **kw)
    assert e.value.reason == "bad_partition_table"
    # a refusal names the line it is about, except the rules of the whole table (empty, too long)
    assert bool(re.match(r"line [1-9][0-9]*: ", e.value.detail)) != whole_table, e.value.detail
    return e.value.detail


def one(text, **kw):
    [p] = parse(text, **kw)
    return p


def rows(table):
    return [(p.label, p.type, p.subtype, p.offset, p.size, p.flags) for p in table]


# --- numbers: gen_esp32part's parse_int ----------------------------------------------------------
@pytest.mark.parametrize("size,value", [("0x3000", 0x3000), ("12288", 0x3000), ("12k", 12 * 1024),
                                        ("12K", 12 * 1024), ("1m", MIB), ("1M", MIB), ("1kk", MIB),
                                        ("0x4K", 0x1000), (" 0x3000 ", 0x3000), ("0o30000", 0o30000)])
def test_sizes_as_gen_esp32part_reads_them(size, value):
    assert one("raw, data, fat, 0x10000, %s\n" % size).size == value


@pytest.mark.parametrize("size", ["k", "m", "0x", "1g", "1.5k"])
def test_sizes_that_are_no_number(size):
    assert "is not a number" in refused("raw, data, fat, 0x10000, %s\n" % size)


def test_number_detail_names_the_field():
    assert refused("raw, data, fat, 0x10000, 0x1zz\n") == "line 1: size '0x1zz' is not a number"
    assert refused("raw, data, fat, 0xzz, 0x1000\n") == "line 1: offset '0xzz' is not a number"
    assert refused("raw, 1z, fat, 0x10000, 0x1000\n") == "line 1: type '1z' is not a number"
    assert refused("raw, data, 1z, 0x10000, 0x1000\n") == "line 1: subtype '1z' is not a number"


# --- type and subtype ---------------------------------------------------------------------------------
def test_type_names_any_case_and_numbers():
    assert one("a, APP, factory, 0x10000, 1M\n").type == 0
    assert one("a, Data, fat, 0x10000, 1M\n").type == 1
    assert one("a, 0x40, 0x05, 0x10000, 0x1000\n").type == 0x40
    assert one("a, 0xFE, 0, 0x10000, 0x1000\n").type == 0xFE  # 0xFF is ESP_PARTITION_TYPE_ANY
    assert one("a, 0, factory, 0x10000, 0x10000\n").type == 0


@pytest.mark.parametrize("field,words", [("", "the type field is empty"), ("date", "unknown type 'date'"),
                                         ("bootloader", "unknown type"), ("0xFF", "type '0xFF' out of range"),
                                         ("-1", "type '-1' out of range")])
def test_bad_types(field, words):
    assert words in refused("a, %s, 0, 0x10000, 0x10000\n" % field)


# the names and values of gen_esp32part's SUBTYPES (app: factory, ota_0..15 from 0x10, tee_0..1 from
# 0x30, test; data: the map itself)
SUBTYPES = [("app", "factory", 0x00), ("app", "test", 0x20), ("app", "ota_0", 0x10), ("app", "ota_1", 0x11),
            ("app", "ota_15", 0x1F), ("app", "tee_0", 0x30), ("app", "tee_1", 0x31),
            ("data", "ota", 0x00), ("data", "phy", 0x01), ("data", "nvs", 0x02), ("data", "coredump", 0x03),
            ("data", "nvs_keys", 0x04), ("data", "efuse", 0x05), ("data", "undefined", 0x06),
            ("data", "esphttpd", 0x80), ("data", "fat", 0x81), ("data", "spiffs", 0x82),
            ("data", "littlefs", 0x83), ("data", "tee_ota", 0x90), ("data", "FAT", 0x81), ("app", "OTA_3", 0x13)]


@pytest.mark.parametrize("type_,name,value", SUBTYPES)
def test_subtype_names(type_, name, value):
    size = "0x2000" if (type_, name) == ("data", "ota") else "0x10000"
    otadata = "o, data, ota, 0xd000, 0x2000\n" if name.lower().startswith("ota_") else ""
    assert parse(otadata + "p, %s, %s, 0x10000, %s\n" % (type_, name, size))[-1].subtype == value


def test_every_ota_slot_name():
    assert [partitions.SUBTYPES[0]["ota_%d" % i] for i in range(16)] == list(range(0x10, 0x20))
    assert "ota_16" not in partitions.SUBTYPES[0]


def test_subtypes_empty_numeric_and_of_another_type():
    assert one("raw, data, , 0x10000, 0x1000\n").subtype == 6  # undefined
    assert one("a, data, 0xFE, 0x10000, 0x1000\n").subtype == 0xFE
    assert one("a, 0x40, 7, 0x10000, 0x1000\n").subtype == 7
    assert "needs a subtype" in refused("a, app, , 0x10000, 0x10000\n")
    assert "unknown subtype 'nvs' for type 64" in refused("a, 0x40, nvs, 0x10000, 0x1000\n")
    assert "unknown subtype 'factory' for type 1" in refused("a, data, factory, 0x10000, 0x1000\n")
    assert "subtype '0xFF' out of range" in refused("a, data, 0xFF, 0x10000, 0x1000\n")
    assert "subtype '-1' out of range" in refused("a, data, -1, 0x10000, 0x1000\n")


# --- lines and fields ---------------------------------------------------------------------------------
def test_comments_blank_lines_bom_and_six_fields():
    text = "\ufeff# a comment\n\n   \n  # indented comment\nnvs, data, nvs, 0x9000, 0x3000, ,\n"
    [p] = parse(text)
    assert (p.label, p.line) == ("nvs", 5)
    assert "more than 6 fields" in refused("nvs, data, nvs, 0x9000, 0x3000, , x\n")


@pytest.mark.parametrize("label,ok", [("a" * 16, True), ("a" * 17, False), ("\u00e9" * 8, True), ("\u00e9" * 9, False)])
def test_names_up_to_16_bytes(label, ok):
    text = "%s, data, fat, 0x10000, 0x1000\n" % label
    if ok:
        assert one(text).label == label
    else:
        assert "longer than 16 bytes" in refused(text)


def test_an_empty_name_is_refused():
    assert refused(", data, fat, 0x10000, 0x1000\n") == "line 1: the name field is empty"


# --- offsets, sizes, alignment ------------------------------------------------------------------------
def test_first_free_offset_is_the_sector_after_the_table():
    assert one("nvs, data, nvs, 0x9000, 0x3000\n").offset == 0x9000
    assert one("nvs, data, nvs, , 0x3000\n").offset == 0x9000
    assert "overlaps the partition table sector (use 0x9000 or higher)" in refused("nvs, data, nvs, 0x8fff, 0x3000\n")
    # a table elsewhere moves the first free sector
    assert one("nvs, data, nvs, , 0x3000\n", table_offset=0x10000).offset == 0x11000
    assert "use 0x11000" in refused("nvs, data, nvs, 0x10000, 0x3000\n", table_offset=0x10000)


def test_empty_offsets_follow_the_previous_partition_aligned():
    table = parse("a, data, fat, , 0x1800\nb, data, fat, , 0x1000\nc, app, factory, , 0x10000\n"
                  "d, data, fat, , 0x1000\nf, app, test, , 0x10000\n")
    assert [(p.offset, p.end) for p in table] == [(0x9000, 0xA800), (0xB000, 0xC000), (0x10000, 0x20000),
                                                 (0x20000, 0x21000), (0x30000, 0x40000)]


def test_an_explicit_offset_may_start_where_the_previous_ends():
    table = parse("a, data, fat, 0x9000, 0x1000\nb, data, fat, 0xA000, 0x1000\n")
    assert [p.offset for p in table] == [0x9000, 0xA000]
    detail = refused("a, data, fat, 0x9000, 0x1000\nb, data, fat, 0x9fff, 0x1000\n")
    assert detail == "line 2: b at 0x9fff overlaps a (line 1), which ends at 0xa000"


def test_negative_size_means_up_to_that_address():
    assert one("a, data, fat, 0x10000, -0x30000\n").size == 0x20000
    assert "size must be positive" in refused("a, data, fat, 0x10000, -0x10000\n")
    assert "size must be positive" in refused("a, data, fat, 0x10000, 0\n")
    assert one("a, data, fat, 0x10000, 1\n").size == 1  # data sizes have no alignment rule


def test_alignment():
    assert one("a, app, factory, 0x20000, 0x1000\n").offset == 0x20000  # app size: 0x1000 multiples
    assert "not aligned to 0x10000" in refused("a, app, factory, 0x21000, 0x10000\n")
    assert "not a multiple of 0x1000" in refused("a, app, factory, 0x20000, 0x1001\n")
    assert "not a multiple of 0x1000" in refused("a, app, factory, 0x20000, 0xfff\n")
    assert one("a, data, fat, 0x21000, 0x10\n").offset == 0x21000
    assert "not aligned to 0x1000" in refused("a, data, fat, 0x21800, 0x1000\n")
    assert "not aligned to 0x1000" in refused("a, 0x40, 0, 0x21001, 0x1000\n")  # any other type: 0x1000


# --- flags and the data subtypes' rules ---------------------------------------------------------------
@pytest.mark.parametrize("flags,value", [("", 0), ("encrypted", 1), ("readonly", 2), ("encrypted:readonly", 3),
                                         (" readonly : encrypted ", 3), ("readonly:", 2)])
def test_flags(flags, value):
    assert one("a, data, fat, 0x10000, 0x1000, %s\n" % flags).flags == value


def test_flags_are_case_sensitive_as_in_gen_esp32part():
    assert "unknown flag 'READONLY'" in refused("a, data, fat, 0x10000, 0x1000, READONLY\n")


@pytest.mark.parametrize("subtype,size", [("ota", "0x2000"), ("coredump", "0x10000")])
def test_otadata_and_coredump_are_always_read_write(subtype, size):
    assert "always read-write" in refused("a, data, %s, 0x10000, %s, readonly\n" % (subtype, size))
    assert one("a, data, %s, 0x10000, %s, encrypted\n" % (subtype, size)).flags == 1


def test_read_only_phy_and_numeric_type_are_fine():
    assert one("a, data, phy, 0x10000, 0x1000, readonly\n").flags == 2
    assert one("a, 0x40, 0, 0x10000, 0x1000, readonly\n").flags == 2  # subtype 0 of another type
    assert one("a, 0x40, 2, 0x10000, 0x1000\n").size == 0x1000  # "nvs" rule: only type data


def test_nvs_size_bound():
    assert one("nvs, data, nvs, 0x9000, 0x3000\n").size == 0x3000
    detail = refused("nvs, data, nvs, 0x9000, 0x2fff\n")
    assert detail == "line 1: nvs: a read-write nvs partition needs at least 0x3000 bytes, not 0x2fff"
    assert one("nvs, data, nvs, 0x9000, 0x1000, readonly\n").flags == 2
    assert "at least 0x3000" in refused("nvs, data, nvs, 0x9000, 0x1000, encrypted\n")


# --- the whole table ----------------------------------------------------------------------------------
def test_an_empty_table():
    assert refused("# only a comment\n", whole_table=True) == "the table is empty"


def test_table_end_at_the_flash_size_exactly():
    assert one("a, data, fat, 0x10000, 0x10000\n", flash_size=0x20000).end == 0x20000
    detail = refused("a, data, fat, 0x10000, 0x10001\n", flash_size=0x20000)
    assert detail == "line 1: a ends at 0x20001, past the 0x20000 bytes of flash"
    assert parse("a, data, fat, 0x3F0000, 0x10000\n")[0].end == 4 * MIB  # the default: 4 MB


def test_duplicate_names_name_both_lines():
    assert refused("a, data, fat, , 0x1000\nb, data, fat, , 0x1000\na, data, fat, , 0x1000\n") == \
        "line 3: name 'a' is used twice (line 1)"


def test_otadata_rules():
    ok = parse("otadata, data, ota, 0xd000, 0x2000\nota_0, app, ota_0, 0x10000, 0x10000\n"
               "ota_1, app, ota_1, 0x20000, 0x10000\n")
    assert [p.label for p in partitions.ota_slots(ok)] == ["ota_0", "ota_1"]
    assert [p.label for p in partitions.otadata_partitions(ok)] == ["otadata"]
    assert refused("o, data, ota, 0xd000, 0x3000\n") == "line 1: otadata must be 0x2000 bytes (two sectors), not 0x3000"
    assert "more than one otadata" in refused("o1, data, ota, 0xd000, 0x2000\no2, data, ota, 0xf000, 0x2000\n")
    assert refused("a, app, ota_0, 0x10000, 0x10000\n") == "line 1: OTA app slots need an otadata partition"
    detail = refused("otadata, data, ota, 0xd000, 0x2000\na, app, ota_0, 0x10000, 0x10000\n"
                     "b, app, ota_1, 0x20000, 0x10000\nc, app, ota_0, 0x30000, 0x10000\n")
    assert detail == "line 2: an ota_N subtype is used twice"
    # a factory app alone needs no otadata
    assert one("f, app, factory, 0x10000, 0x10000\n").subtype == 0


def test_ota_slots_are_app_subtypes_0x10_to_0x1f():
    table = [Partition("f", 0, 0x00, 0x10000, 0x10000), Partition("s0", 0, 0x10, 0x20000, 0x10000),
             Partition("s15", 0, 0x1F, 0x30000, 0x10000), Partition("t", 0, 0x20, 0x40000, 0x10000),
             Partition("x", 1, 0x10, 0x50000, 0x1000), Partition("o", 1, 0x00, 0x51000, 0x2000),
             Partition("o2", 0, 0x00, 0x60000, 0x10000), Partition("p", 2, 0x00, 0x70000, 0x1000)]
    assert [p.label for p in partitions.ota_slots(table)] == ["s0", "s15"]
    assert [p.label for p in partitions.otadata_partitions(table)] == ["o"]


def table_of(n):
    return "".join("p%d, data, fat, , 0x1000\n" % i for i in range(n))


def test_at_most_94_entries_with_the_md5_entry_below_0xc00():
    # gen_esp32part's to_binary: entries + the MD5 entry must stay below MAX_PARTITION_LENGTH (0xC00)
    assert len(parse(table_of(94))) == 94
    assert refused(table_of(95), whole_table=True) == "too many partitions for a 0xc00-byte table"


def test_the_table_checks_alone():
    # rules parse_csv already keeps (in order, above the table) hold in the table check too
    with pytest.raises(OtaError) as e:
        partitions._check_table([Partition("a", 1, 0x81, 0x8000, 0x1000, line=3)], 4 * MIB)
    assert e.value.detail == "line 3: a at 0x8000 is below 0x9000 (bootloader and partition table)"
    partitions._check_table([Partition("a", 1, 0x81, 0x9000, 0x1000)], 4 * MIB)
    with pytest.raises(OtaError) as e:
        partitions._check_table([Partition("b", 1, 0x81, 0xA000, 0x1000, line=2),
                                 Partition("a", 1, 0x81, 0x9000, 0x1001, line=1)], 4 * MIB)
    assert e.value.detail == "line 2: b at 0xa000 overlaps a (0x9000..0xa001)"
    partitions._check_table([Partition("b", 1, 0x81, 0xA000, 0x1000), Partition("a", 1, 0x81, 0x9000, 0x1000)],
                            4 * MIB)


def test_load_names_an_unreadable_file(tmp_path):
    with pytest.raises(OtaError) as e:
        partitions.load(str(tmp_path / "missing.csv"))
    assert e.value.reason == "bad_partition_table" and "cannot read" in e.value.detail
    path = tmp_path / "p.csv"
    path.write_text("a, data, fat, 0x10000, 0x20000\n")
    assert partitions.load(str(path))[0].size == 0x20000
    with pytest.raises(OtaError):
        partitions.load(str(path), flash_size=0x20000)


def test_partition_repr_and_end():
    p = Partition("nvs", 1, 2, 0x9000, 0x3000)
    assert p.end == 0xC000 and (p.flags, p.line) == (0, 0)
    assert repr(p) == "Partition('nvs', type=1, subtype=0x02, offset=0x9000, size=0x3000)"


def test_line_numbers_in_details():
    assert refused("\n\nnvs, data, nvs, 0x9000, 0x1000\n").startswith("line 3: ")


# --- the binary form ----------------------------------------------------------------------------------
def entry(type_, subtype, offset, size, label, flags):
    return b"\xaa\x50" + struct.pack("<BBII", type_, subtype, offset, size) + label.ljust(16, b"\0") + \
        struct.pack("<I", flags)


def test_to_binary_bytes():
    table = parse("nvs, data, nvs, 0x9000, 0x3000, readonly\nfactory, app, factory, 0x10000, 0x10000, encrypted\n"
                  + "a" * 16 + ", data, fat, , 0x1000\n")
    body = entry(1, 2, 0x9000, 0x3000, b"nvs", 2) + entry(0, 0, 0x10000, 0x10000, b"factory", 1) + \
        entry(1, 0x81, 0x20000, 0x1000, b"a" * 16, 0)
    blob = partitions.to_binary(table)
    assert blob == body + b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(body).digest() + b"\xff" * (0xC00 - 128)
    assert rows(partitions.from_binary(blob)) == rows(table)


def test_from_binary_stops_at_the_end_marker_and_checks_md5():
    body = entry(1, 2, 0x9000, 0x3000, b"nvs", 0)
    assert rows(partitions.from_binary(body + b"\xff" * 32 + b"junk")) == [("nvs", 1, 2, 0x9000, 0x3000, 0)]
    md5 = b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(body).digest()
    assert rows(partitions.from_binary(body + md5 + b"\xff" * 32)) == [("nvs", 1, 2, 0x9000, 0x3000, 0)]
    two = body + entry(1, 1, 0xC000, 0x1000, b"phy", 0)
    bad_md5 = b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(body).digest()  # of the first entry only
    with pytest.raises(OtaError) as e:
        partitions.from_binary(two + bad_md5 + b"\xff" * 32)
    assert e.value.reason == "bad_partition_table" and "MD5" in e.value.detail


def test_flags_are_unsigned_32_bit():
    # gen_esp32part packs and unpacks the flags word as '<L'
    high = Partition("x", 1, 0x81, 0x10000, 0x1000, flags=0x80000002)
    blob = partitions.to_binary([high])
    assert blob[28:32] == b"\x02\x00\x00\x80"
    assert partitions.from_binary(blob)[0].flags == 0x80000002


@pytest.mark.parametrize("blob,words", [
    (b"", "no end-of-table marker"),
    (b"\xff" * 0xC00, "no partition entries"),
    (entry(1, 2, 0x9000, 0x3000, b"nvs", 0), "no end-of-table marker"),
    (entry(1, 2, 0x9000, 0x3000, b"nvs", 0) + b"\xff" * 31, "no end-of-table marker"),  # a torn entry
    (entry(1, 2, 0x9000, 0x3000, b"nvs", 0) + b"\x00" * 32, "entry at 0x20 has bad magic"),
    (b"\xaa\x51" + b"\x00" * 30, "entry at 0x0 has bad magic"),
    (entry(1, 2, 0x9000, 0x3000, b"nvs", 0) * 96 + b"\xff" * 32, "no end-of-table marker"),  # past 0xC00
])
def test_from_binary_refuses(blob, words):
    with pytest.raises(OtaError) as e:
        partitions.from_binary(blob)
    assert e.value.reason == "bad_partition_table" and words in e.value.detail


def test_from_binary_reads_a_bytearray_and_the_whole_label():
    blob = bytearray(entry(1, 0x81, 0x10000, 0x1000, b"x" * 16, 3) + b"\xff" * 32)
    assert rows(partitions.from_binary(blob)) == [("x" * 16, 1, 0x81, 0x10000, 0x1000, 3)]
    assert partitions.from_binary(entry(1, 0x81, 0x10000, 0x1000, b"ab\0cd", 0) + b"\xff" * 32)[0].label == "ab"


def test_a_name_starting_with_a_letter_is_a_name_not_a_number():
    assert "unknown type 'x1'" in refused("a, x1, 0, 0x10000, 0x1000\n")
    assert "unknown subtype 'n1' for type 1" in refused("a, data, n1, 0x10000, 0x1000\n")


def test_only_a_bom_is_stripped_from_the_start():
    assert one("XA, data, fat, 0x10000, 0x1000\n").label == "XA"
    assert one("\ufeffXA, data, fat, 0x10000, 0x1000\n").label == "XA"


def test_an_empty_offset_after_an_odd_end_rounds_up():
    table = parse("a, data, fat, 0x10000, 1\nb, data, fat, , 0x1000\nc, app, factory, , 0x10000\n")
    assert [p.offset for p in table] == [0x10000, 0x11000, 0x20000]


def test_the_table_offset_moves_the_first_free_sector_both_ways():
    # CONFIG_PARTITION_TABLE_OFFSET: the first partition may start in the sector after the table
    assert one("nvs, data, nvs, 0x7000, 0x3000\n", table_offset=0x6000).offset == 0x7000
    assert "use 0x7000" in refused("nvs, data, nvs, 0x6000, 0x3000\n", table_offset=0x6000)
