"""ota.otadata.read() on partition tables other than the project's two slots (found by `make mutate`:
with two slots, several wrong readings of the bootloader's rules give the same answer). CPython,
fakes.py's NOR partitions; the rules are docs/CHIP.md §2 (ESP-IDF bootloader_common_get_active_otadata,
esp_ota_ops.c: slot = (seq - 1) % number of OTA app partitions; the crc is crc32 of the seq, initial
value 0xFFFFFFFF)."""
import fakes  # puts lib/ on sys.path
from fakes import SECTOR, FakeEsp32, Slot, add_otadata, write_otadata
from ota import otadata


def _table(*subtypes, otadata_partition=True):
    # OTA app slots of the given subtypes (0x10 + N is ota_N; 0x00 factory; 0x20 test).
    names = {0x00: "factory", 0x20: "test"}
    slots = []
    for i, subtype in enumerate(subtypes):
        label = names.get(subtype, "ota_%d" % (subtype - 0x10))
        slots.append(Slot(label, 4 * SECTOR, 0x10000 + i * 4 * SECTOR, subtype))
    esp = FakeEsp32(slots, running=slots[0].label)
    if otadata_partition:
        add_otadata(esp)
    return esp


def test_three_slots_count_seq_modulo_three():
    # seq 3 names the third slot (ota_2), seq 4 wraps to ota_0; with two slots (seq - 1) % 2 hides
    # an off-by-two.
    esp = _table(0x10, 0x11, 0x12)
    write_otadata(esp, 0, 3, "VALID")
    write_otadata(esp, 1, 4, "PENDING_VERIFY")
    assert otadata.read(esp) == {"ota_0": "PENDING_VERIFY", "ota_1": None, "ota_2": "VALID"}


def test_slots_are_indexed_by_subtype_not_table_order():
    # ota_1 listed before ota_0: seq 1 still names ota_0, as the bootloader indexes by subtype.
    esp = _table(0x11, 0x10)
    write_otadata(esp, 0, 1, "VALID")
    assert otadata.read(esp) == {"ota_0": "VALID", "ota_1": None}


def test_factory_and_test_apps_are_not_ota_slots():
    # The subtype range is ota_0 (0x10) .. ota_15 (0x1F): factory (0x00) and test (0x20) are apps
    # the seq never names, so seq 2 is ota_1 in a table factory, ota_0, ota_1, test.
    esp = _table(0x00, 0x10, 0x11, 0x20)
    write_otadata(esp, 0, 2, "VALID")
    assert otadata.read(esp) == {"ota_0": None, "ota_1": "VALID"}


def test_ota_15_is_an_ota_slot():
    esp = _table(0x10, 0x1F)
    write_otadata(esp, 0, 2, "VALID")
    assert otadata.read(esp) == {"ota_0": None, "ota_15": "VALID"}


def test_otadata_without_ota_slots_names_nothing():
    assert otadata.read(_table(0x00)) == {}


def test_no_otadata_partition_is_an_empty_answer_even_with_slots():
    assert otadata.read(_table(0x10, 0x11, otadata_partition=False)) == {}


def test_every_state_name_and_the_unknown_ones():
    # States 0..4 by name; 0xFFFFFFFF (never written) is UNDEFINED; any other number UNKNOWN.
    for number, name in ((0, "NEW"), (1, "PENDING_VERIFY"), (2, "VALID"), (3, "INVALID"), (4, "ABORTED"),
                         (5, "UNKNOWN"), (0xFFFFFFFE, "UNKNOWN"), (0xFFFFFFFF, "UNDEFINED")):
        esp = _table(0x10, 0x11)
        write_otadata(esp, 0, 1, number)
        assert otadata.read(esp) == {"ota_0": name, "ota_1": None}, number


def test_seq_zero_and_erased_seq_name_nothing_even_with_a_matching_crc():
    for seq in (0, 0xFFFFFFFF):
        esp = _table(0x10, 0x11)
        write_otadata(esp, 0, seq, "VALID")  # write_otadata computes the matching crc
        assert otadata.read(esp) == {"ota_0": None, "ota_1": None}, seq


def test_a_crc_off_by_one_names_nothing():
    esp = _table(0x10, 0x11)
    write_otadata(esp, 0, 1, "VALID", crc=fakes.otadata_crc(1) ^ 1)
    write_otadata(esp, 1, 2, "VALID", crc=fakes.otadata_crc(2) + 1)
    assert otadata.read(esp) == {"ota_0": None, "ota_1": None}


def test_the_largest_seq_seen_names_the_slot_even_when_later_seqs_are_small():
    # seq 3 (sector 0) and seq 1 (sector 1) both name ota_0 of two: the larger wins wherever it is.
    esp = _table(0x10, 0x11)
    write_otadata(esp, 0, 3, "VALID")
    write_otadata(esp, 1, 1, "ABORTED")
    assert otadata.read(esp) == {"ota_0": "VALID", "ota_1": None}
    esp = _table(0x10, 0x11)
    write_otadata(esp, 0, 1, "ABORTED")
    write_otadata(esp, 1, 3, "VALID")
    assert otadata.read(esp) == {"ota_0": "VALID", "ota_1": None}


def test_otadata_is_found_by_its_subtype_behind_nvs():
    # A real table lists nvs (data, subtype 0x02) before otadata (data, 0x00), as partitions.csv does.
    esp = _table(0x10, 0x11)
    esp.slots["nvs"] = Slot("nvs", 6 * SECTOR, 0x9000, 0x02, type_=1)
    esp.order.insert(0, "nvs")
    write_otadata(esp, 0, 1, "VALID")
    assert otadata.read(esp) == {"ota_0": "VALID", "ota_1": None}


def test_a_blank_sector_0_does_not_hide_sector_1():
    esp = _table(0x10, 0x11)
    write_otadata(esp, 1, 2, "PENDING_VERIFY")
    assert otadata.read(esp) == {"ota_0": None, "ota_1": "PENDING_VERIFY"}


def test_a_tie_of_seqs_is_sector_0s_entry():
    # Both entries with one seq name one slot: the bootloader takes sector 0's (bootloader_common_
    # select_otadata: MAX(seq0, seq1) == seq0 -> entry 0), so its state is the slot's (mutant read _77
    # let sector 1 win).
    esp = _table(0x10, 0x11)
    assert fakes.otadata_after(esp, (2, "VALID"), (2, "ABORTED")) == {"ota_0": None, "ota_1": "VALID"}
    esp = _table(0x10, 0x11)
    assert fakes.otadata_after(esp, (2, "ABORTED"), (2, "VALID")) == {"ota_0": None, "ota_1": "ABORTED"}


def test_an_entry_with_the_top_bit_of_its_seq_set_is_read_not_a_crash():
    # seq is an unsigned 32-bit count: 0x80000000 and up are seqs (or a torn write's garbage) like any
    # other. A good crc names its slot, a bad one names nothing; neither raises (mutant read _71 packed
    # the seq as a signed int to check the crc: struct.error).
    esp = _table(0x10, 0x11)
    assert fakes.otadata_after(esp, (0x80000002, "VALID"), (None, None)) == {"ota_0": None, "ota_1": "VALID"}
    esp = _table(0x10, 0x11)
    write_otadata(esp, 0, 0xFFFFFFFE, "VALID", crc=0x12345678)  # torn: the crc does not match
    assert otadata.read(esp) == {"ota_0": None, "ota_1": None}
