"""counters.jsonl after a process was killed while writing its record (issue 13: `bench diet` printed
thread tracebacks from sim.runner.Device.counters()).

The device appends its record in several writes (simflash.save_counters); the host kills processes at
any moment (power cuts, the bench's heap search). A torn record must not break the reader, must not
be counted as a boot by either side, and must not spoil the record that follows it."""
import importlib.util
import json
import os
import sys

from sim.runner import Device

DEVICE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sim", "device")

GOOD = '{"boot": 1, "exit": "reset", "sector_erases": 3, "bytes_programmed": 0, "dirty_programs": 0, ' \
       '"overprogrammed_bytes": 0, "erase_counts": ""}\n'
TORN = '{"boot": 2, "exit": "power_cut", "sector_erases": 1, "bytes_prog'


def _load(name, monkeypatch):
    # The device modules by file: sim/device also holds socket.py, time.py..., which must not shadow
    # CPython's own on sys.path.
    spec = importlib.util.spec_from_file_location(name, os.path.join(DEVICE, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_reader_skips_a_torn_last_record(tmp_path):
    (tmp_path / "counters.jsonl").write_text(GOOD + TORN)
    boots = Device(str(tmp_path)).counters()["boots"]
    assert [b["boot"] for b in boots] == [1]
    assert boots[0]["sector_erases"] == 3


def test_host_record_after_a_torn_one_starts_a_fresh_line(tmp_path):
    (tmp_path / "counters.jsonl").write_text(GOOD + TORN)
    device = Device(str(tmp_path))
    device._append_counters({"exit": "power_cut", "host_kill": True})
    boots = device.counters()["boots"]
    assert [(b["boot"], b["exit"]) for b in boots] == [(1, "reset"), (2, "power_cut")]
    assert boots[1]["host_kill"] is True


def test_device_record_after_a_torn_one_is_whole_and_numbered_past_it(tmp_path, monkeypatch):
    (tmp_path / "counters.jsonl").write_text(GOOD + TORN)
    simdev = _load("simdev", monkeypatch)
    simflash = _load("simflash", monkeypatch)
    simdev.init(str(tmp_path))
    assert simdev.boot_number == 2  # the torn record is not a boot the device counts
    simflash.counters["sector_erases"] = 7
    simflash._erase_counts = bytearray()  # no flash.bin here to name the sectors' partitions
    simflash.save_counters("exit")
    boots = Device(str(tmp_path)).counters()["boots"]
    assert [(b["boot"], b["exit"], b["sector_erases"]) for b in boots] == [(1, "reset", 3), (2, "exit", 7)]
    lines = (tmp_path / "counters.jsonl").read_text().splitlines()
    assert lines[1] == TORN  # left as it was, on its own line
    json.loads(lines[-1])
