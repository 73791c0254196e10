"""The health gate (ota.health) and the self-test (ota.selftest), branch by branch (pinned after
`make mutate`: the agent tests pass through the common paths only). CPython, fakes for esp32, machine
and the job store; docs/CHIP.md §2 for the boot/rollback sequence."""
import sys

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import health, selftest


def _record(state, **fields):
    record = {"id": "job-1", "state": state, "from_slot": "ota_0", "to_slot": "ota_1", "reason": None,
              "detail": None}
    record.update(fields)
    return record


# ---------------------------------------------------------------- classify

def test_no_record_or_a_finished_one_is_a_normal_boot():
    assert health.classify(None, "ota_0") == ("normal", None, None)
    for state in ("ok", "failed", "rolled_back"):
        assert health.classify(_record(state), "ota_1") == ("normal", None, None), state


def test_downloading_on_the_new_slot_is_the_update_boot():
    # A power cut between set_boot() and the "rebooting" write.
    assert health.classify(_record("downloading"), "ota_1") == ("update", None, None)


def test_downloading_on_the_old_slot_is_interrupted():
    assert health.classify(_record("downloading"), "ota_0") == ("interrupted", "interrupted",
                                                                "reset during download")
    # otadata unknown, or the target not aborted: still interrupted
    assert health.classify(_record("downloading", to_otadata="VALID"), "ota_0",
                           {"ota_1": "VALID"})[0] == "interrupted"


def test_downloading_with_the_target_aborted_since_the_job_started_is_boot_failed():
    kind, reason, detail = health.classify(_record("downloading", to_otadata="VALID"), "ota_0",
                                           {"ota_0": "VALID", "ota_1": "ABORTED"})
    assert (kind, reason) == ("rolled_back", "boot_failed") and detail.startswith("ota_1 ABORTED")


def test_an_abort_older_than_the_job_is_no_news():
    # to_otadata ABORTED: the entry was already there when the job started (same seq rewritten).
    record = _record("downloading", to_otadata="ABORTED")
    assert health.classify(record, "ota_0", {"ota_1": "ABORTED"})[0] == "interrupted"
    # A record without to_otadata (older firmware) counts as "was aborted": stays interrupted.
    record = _record("downloading")
    assert health.classify(record, "ota_0", {"ota_1": "ABORTED"})[0] == "interrupted"


def test_rebooting_on_the_new_slot_is_the_update_boot():
    assert health.classify(_record("rebooting"), "ota_1") == ("update", None, None)


def test_rebooting_back_on_the_old_slot_reports_the_recorded_reason():
    record = _record("rebooting", reason="selftest_failed", detail="import ota.x")
    assert health.classify(record, "ota_0") == ("rolled_back", "selftest_failed", "import ota.x")


@pytest.mark.parametrize("cause, words", [(2, "crashed"), (3, "watchdog"), (1, "lost power"),
                                          (5, "reset cause 5"), (None, "reset cause None")])
def test_rebooting_back_without_a_reason_names_the_reset_cause(cause, words):
    kind, reason, detail = health.classify(_record("rebooting"), "ota_0", reset_cause=cause)
    assert (kind, reason) == ("rolled_back", "boot_failed")
    assert detail.startswith("the new image ") and words in detail, detail


def test_rolling_back_reports_rolled_back_or_no_rollback():
    record = _record("rolling_back", reason="health_timeout", detail="no broker")
    assert health.classify(record, "ota_0") == ("rolled_back", "health_timeout", "no broker")
    kind, reason, detail = health.classify(record, "ota_1")
    assert (kind, reason) == ("no_rollback", "health_timeout") and "ota_1" in detail


# ---------------------------------------------------------------- Gate

def test_gate_counts_down_from_its_creation_and_expires_at_zero(monkeypatch):
    now = {"ms": 1000}
    monkeypatch.setattr(health, "ticks_ms", lambda: now["ms"])
    gate = health.Gate(2.5)
    assert gate.remaining_ms() == 2500 and not gate.expired()
    now["ms"] = 3499
    assert gate.remaining_ms() == 1 and not gate.expired()
    now["ms"] = 3500
    assert gate.remaining_ms() == 0 and gate.expired()
    now["ms"] = 9000
    assert gate.remaining_ms() == 0 and gate.expired()


# ---------------------------------------------------------------- confirm and roll_back

class Esp32:
    def __init__(self, error=None):
        self.marked = 0
        esp = self

        class Partition:
            @staticmethod
            def mark_app_valid_cancel_rollback():
                esp.marked += 1
                if error is not None:
                    raise OSError(error, "esp_err %d" % error)

        self.Partition = Partition


def test_confirm_marks_the_slot_valid_after_a_passing_selftest():
    esp = Esp32()
    seen = []
    assert health.confirm(lambda cfg: (seen.append(cfg) or True, None), {"ota": {}}, esp) == ("ok", None, None)
    assert esp.marked == 1 and seen == [{"ota": {}}]


def test_confirm_never_marks_valid_when_the_selftest_fails_or_crashes():
    esp = Esp32()
    assert health.confirm(lambda cfg: (False, "no wifi"), {}, esp) == ("failed", "selftest_failed", "no wifi")

    def crash(cfg):
        raise RuntimeError("boom")

    state, reason, detail = health.confirm(crash, {}, esp)
    assert (state, reason) == ("failed", "selftest_failed") and "boom" in detail and detail.startswith("crashed")
    assert esp.marked == 0


@pytest.mark.parametrize("errno, expected", [(-261, ("ok", "rollback_unsupported")),
                                             (1, ("ok", "rollback_unsupported")),
                                             (-260, ("failed", "mark_valid_failed")),
                                             (2, ("failed", "mark_valid_failed"))])
def test_confirm_tells_a_build_without_rollback_from_a_failure(errno, expected):
    state, reason, detail = health.confirm(lambda cfg: (True, None), {}, Esp32(errno))
    assert (state, reason) == expected and str(errno) in detail


def test_roll_back_records_the_reason_before_it_resets():
    events = []

    class Jobs:
        def update(self, **fields):
            events.append(("update", fields))

    class Machine:
        def reset(self):
            events.append(("reset",))

    health.roll_back(Jobs(), Machine(), "health_timeout", "no broker in 60 s")
    assert events == [("update", {"state": "rolling_back", "reason": "health_timeout",
                                  "detail": "no broker in 60 s"}), ("reset",)]


# ---------------------------------------------------------------- selftest

class Heap:
    def __init__(self, monkeypatch, free):
        monkeypatch.setattr(selftest.gc, "mem_free", lambda: free, raising=False)


def test_selftest_heap_floor_is_inclusive(monkeypatch):
    Heap(monkeypatch, 32768)
    assert selftest.run() == (True, None)
    Heap(monkeypatch, 32767)
    ok, why = selftest.run()
    assert not ok and why == "heap 32767 < 32768"


def test_selftest_floor_comes_from_the_config(monkeypatch):
    Heap(monkeypatch, 20000)
    assert selftest.run({"ota": {"selftest_min_heap": 20000}}) == (True, None)
    assert selftest.run({"ota": {"selftest_min_heap": 20001}})[0] is False
    assert selftest.run({"wifi": {}})[0] is False  # no ota section: the default floor
    assert selftest.run({"ota": {}})[0] is False


def test_selftest_fails_when_a_module_of_the_data_path_cannot_import(monkeypatch):
    for name in ("ota.config", "ota.writer", "ota.version"):
        with monkeypatch.context() as m:  # puts the real module back (its identity matters to others)
            m.setitem(sys.modules, name, None)  # import raises ImportError
            ok, why = selftest.run()
        assert not ok and why.startswith("import %s: " % name), why


def test_selftest_without_mem_free_passes_on_imports_alone(monkeypatch):
    monkeypatch.delattr(selftest.gc, "mem_free", raising=False)
    assert selftest.run({"ota": {"selftest_min_heap": 10 ** 9}}) == (True, None)


# ---------------------------------------------------------------- session 21: the details said

def test_the_details_an_operator_reads_for_a_silent_new_image_and_a_missing_rollback():
    # Published on the state topic (not an OtaError, so the message catalogue does not see them).
    assert health.classify(_record("rebooting"), "ota_0", reset_cause=9) == (
        "rolled_back", "boot_failed", "the new image reset before it confirmed (reset cause 9)")
    assert health.classify(_record("rolling_back", reason="selftest_failed"), "ota_1") == (
        "no_rollback", "selftest_failed", "still on ota_1: no rollback")
