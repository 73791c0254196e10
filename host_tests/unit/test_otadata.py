# ota.otadata.read() on the fake NOR partitions of fakes.py, and what health.classify makes of it: the
# double power cut (after set_boot, then during the new image's first boot) is reported rolled_back.
import pytest

import fakes
from ota import health, otadata


def _device(**kw):
    return fakes.make_device(otadata=True, **kw)


def test_no_otadata_partition_means_rollback_unsupported():
    assert otadata.read(fakes.make_device()) == {}


def test_blank_otadata_names_no_slot():
    assert otadata.read(_device()) == {"ota_0": None, "ota_1": None}


def test_first_boot_entry():
    # The bootloader's first write on blank otadata: seq 1 -> ota_0.
    esp = _device()
    fakes.write_otadata(esp, 0, 1, "VALID")
    assert otadata.read(esp) == {"ota_0": "VALID", "ota_1": None}


def test_both_entries_after_an_update():
    esp = _device()
    assert fakes.otadata_after(esp, (1, "VALID"), (2, "PENDING_VERIFY")) == (
        {"ota_0": "VALID", "ota_1": "PENDING_VERIFY"})


def test_aborted_entry_still_names_its_slot():
    # Not "valid" for booting (docs/CHIP.md §2), but its seq and crc are intact: ota_1 was aborted.
    esp = _device()
    assert fakes.otadata_after(esp, (1, "VALID"), (2, "ABORTED")) == {"ota_0": "VALID", "ota_1": "ABORTED"}
    fakes.write_otadata(esp, 1, 2, "INVALID")
    assert otadata.read(esp)["ota_1"] == "INVALID"


def test_bad_crc_names_nothing():
    # A torn write (power cut mid-entry) leaves a crc that does not match: ignored, as the bootloader does.
    esp = _device()
    assert fakes.otadata_after(esp, (1, "VALID"), (2, "ABORTED", fakes.otadata_crc(2) ^ 1)) == (
        {"ota_0": "VALID", "ota_1": None})


def test_seq_zero_and_erased_seq_name_nothing():
    esp = _device()
    assert fakes.otadata_after(esp, (0, "VALID"), (0xFFFFFFFF, "VALID")) == {"ota_0": None, "ota_1": None}


def test_larger_seq_wins_when_both_name_one_slot():
    # seq 3 and 1 both name ota_0 ((seq - 1) % 2 == 0): the later set_boot (3) is the news.
    esp = _device()
    assert fakes.otadata_after(esp, (3, "ABORTED"), (1, "VALID")) == {"ota_0": "ABORTED", "ota_1": None}
    assert fakes.otadata_after(esp, (1, "VALID"), (3, "NEW")) == {"ota_0": "NEW", "ota_1": None}


def test_later_seqs_wrap_over_the_slots():
    esp = _device()
    # seq 5: (5 - 1) % 2 -> ota_0; seq 6 UNDEFINED: rollback off, set_boot writes UNDEFINED
    assert fakes.otadata_after(esp, (5, "VALID"), (6, "UNDEFINED")) == (
        {"ota_0": "VALID", "ota_1": "UNDEFINED"})
    fakes.write_otadata(esp, 1, 6, 9)
    assert otadata.read(esp)["ota_1"] == "UNKNOWN"


def test_slots_are_indexed_by_subtype_not_table_order():
    # The bootloader indexes the slots by subtype (ota_N = 0x10 + N): a table listing ota_1 first
    # still means seq 1 -> ota_0.
    esp = _device()
    esp.order = ["otadata", "ota_1", "ota_0"]
    fakes.write_otadata(esp, 0, 1, "VALID")
    assert otadata.read(esp) == {"ota_0": "VALID", "ota_1": None}


def test_read_never_writes():
    esp = _device()
    fakes.write_otadata(esp, 0, 1, "VALID")
    before = bytes(esp.slots["otadata"].data)
    erases = esp.slots["otadata"].total_erases
    otadata.read(esp)
    assert bytes(esp.slots["otadata"].data) == before and esp.slots["otadata"].total_erases == erases


# ---------------------------------------------------------------- health.classify

def _record(state, **fields):
    record = {"id": "job-1", "type": "ota_trigger", "state": state, "from_slot": "ota_0", "to_slot": "ota_1"}
    record.update(fields)
    return record


def test_double_cut_with_aborted_target_is_rolled_back():
    kind, reason, detail = health.classify(_record("downloading", to_otadata=None), "ota_0",
                                           {"ota_0": "VALID", "ota_1": "ABORTED"})
    assert (kind, reason) == ("rolled_back", "boot_failed")
    assert "ota_1" in detail and "ABORTED" in detail


@pytest.mark.parametrize("before", [None, "VALID", "INVALID", "NEW"])
def test_double_cut_whatever_the_target_was_before_unless_aborted(before):
    kind, reason, _ = health.classify(_record("downloading", to_otadata=before), "ota_0",
                                      {"ota_0": "VALID", "ota_1": "ABORTED"})
    assert (kind, reason) == ("rolled_back", "boot_failed")


@pytest.mark.parametrize("record,states", [
    (_record("downloading", to_otadata=None), None),  # otadata not read
    (_record("downloading", to_otadata=None), {}),  # no otadata: rollback unsupported
    (_record("downloading", to_otadata=None), {"ota_0": "VALID", "ota_1": None}),  # never set_boot
    (_record("downloading", to_otadata="VALID"), {"ota_0": "VALID", "ota_1": "VALID"}),
    # An earlier job's ABORTED entry: set_boot to ota_1 would rewrite the very same seq, so the flash
    # cannot say whether this job got that far. The cut job stays "interrupted".
    (_record("downloading", to_otadata="ABORTED"), {"ota_0": "VALID", "ota_1": "ABORTED"}),
    (_record("downloading"), {"ota_0": "VALID", "ota_1": "ABORTED"}),  # older record: no to_otadata
])
def test_cut_during_download_stays_interrupted(record, states):
    assert health.classify(record, "ota_0", states)[:2] == ("interrupted", "interrupted")


def test_other_kinds_unchanged_by_otadata():
    aborted = {"ota_0": "VALID", "ota_1": "ABORTED"}
    assert health.classify(None, "ota_0", aborted) == ("normal", None, None)
    assert health.classify(_record("downloading", to_otadata=None), "ota_1", aborted) == ("update", None, None)
    assert health.classify(_record("rebooting"), "ota_0", aborted)[:2] == ("rolled_back", "boot_failed")
    assert health.classify(_record("rolling_back", reason="selftest_failed"), "ota_0", aborted)[:2] == \
        ("rolled_back", "selftest_failed")
    assert health.classify(_record("ok"), "ota_0", aborted) == ("normal", None, None)


@pytest.mark.parametrize("cause,words", [(3, "hung: the watchdog"), (2, "reset itself"), (1, "lost power"),
                                         (None, "reset cause None")])
def test_new_image_gone_without_a_reason_is_named_by_the_reset_cause(cause, words):
    # The old firmware boots after the new image's reset; machine.reset_cause() says what it was.
    kind, reason, detail = health.classify(_record("rebooting"), "ota_0", reset_cause=cause)
    assert (kind, reason) == ("rolled_back", "boot_failed") and words in detail, detail
    kept = health.classify(_record("rebooting", reason="selftest_failed", detail="d"), "ota_0", reset_cause=3)
    assert kept == ("rolled_back", "selftest_failed", "d")
