"""ota.jobs.Jobs: what the job file holds after each step and what a damaged file reads as (pinned
after `make mutate`: the agent tests reach this code but do not look at the file). CPython."""
import json
import os

import fakes  # (also puts lib/ on sys.path)
from ota import jobs
from ota.jobs import MAX_SEEN, Jobs

TRIGGER = {"type": "ota_trigger", "url": "https://fw.example/a.bin", "version": "1.2.0", "id": "job-1"}


def _file(path):
    with open(path) as f:
        return json.load(f)


def test_start_writes_the_record_and_the_id_before_anything_else(tmp_path):
    path = str(tmp_path / "ota_job.json")
    j = Jobs(path)
    j.start(TRIGGER, "downloading", from_version="1.1.0", from_slot="ota_0")
    record = {"id": "job-1", "type": "ota_trigger", "url": "https://fw.example/a.bin", "state": "downloading",
              "to_version": "1.2.0", "reason": None, "detail": None, "from_version": "1.1.0",
              "from_slot": "ota_0"}
    assert _file(path) == {"current": record, "seen": ["job-1"]}
    assert not os.path.exists(path + ".tmp")
    again = Jobs(path)
    assert again.current == record and again.seen == ["job-1"] and again.seen_before("job-1")
    assert not again.seen_before("job-2")


def test_update_changes_only_the_named_fields_and_saves(tmp_path):
    path = str(tmp_path / "ota_job.json")
    j = Jobs(path)
    j.start(TRIGGER, "downloading")
    j.update(state="failed", reason="bad_sha256")
    current = _file(path)["current"]
    assert current["state"] == "failed" and current["reason"] == "bad_sha256" and current["id"] == "job-1"


def test_an_id_is_remembered_once_and_only_when_asked(tmp_path):
    path = str(tmp_path / "ota_job.json")
    j = Jobs(path)
    j.start(TRIGGER, "downloading")
    j.start(TRIGGER, "failed")  # the same id again (a redelivery that got this far)
    assert j.seen == ["job-1"]
    j.start(dict(TRIGGER, id="job-2"), "downloading", remember=False)  # signed: judged by its seq
    assert j.seen == ["job-1"] and j.current["id"] == "job-2"
    j.start(dict(TRIGGER, id=None), "downloading")  # no id: nothing to remember
    assert j.seen == ["job-1"] and _file(path)["seen"] == ["job-1"]


def test_seen_keeps_the_newest_ids_in_order(tmp_path):
    path = str(tmp_path / "ota_job.json")
    j = Jobs(path)
    ids = ["job-%d" % i for i in range(MAX_SEEN + 3)]
    for i in ids:
        j.start(dict(TRIGGER, id=i), "ok")
    assert j.seen == ids[-MAX_SEEN:] and _file(path)["seen"] == ids[-MAX_SEEN:]
    assert j.seen_before(ids[-1]) and j.seen_before(ids[-MAX_SEEN]) and not j.seen_before(ids[-MAX_SEEN - 1])


def test_a_file_with_a_long_seen_list_is_cut_to_the_newest_at_load(tmp_path):
    # Written by an older firmware or by hand: loaded whole at boot, only the last MAX_SEEN count.
    path = tmp_path / "ota_job.json"
    ids = ["job-%d" % i for i in range(40)]
    path.write_text(json.dumps({"current": None, "seen": ids}))
    assert Jobs(str(path)).seen == ids[-MAX_SEEN:]


def test_seen_ids_that_are_not_strings_are_dropped(tmp_path):
    path = tmp_path / "ota_job.json"
    path.write_text(json.dumps({"current": None, "seen": ["a", 1, None, ["b"], "c", True]}))
    assert Jobs(str(path)).seen == ["a", "c"]


def test_a_file_without_seen_reads_as_none_seen(tmp_path):
    path = tmp_path / "ota_job.json"
    path.write_text(json.dumps({"current": {"id": "x", "state": "ok"}}))
    j = Jobs(str(path))
    assert j.seen == [] and j.current == {"id": "x", "state": "ok"}


def test_damaged_files_read_as_empty(tmp_path):
    path = tmp_path / "ota_job.json"
    for text in ('{"current": {"id": "x"', "[1, 2]", '"text"', '{"current": null, "seen": 5}', "\xff\xfe"):
        path.write_text(text, encoding="latin-1")
        j = Jobs(str(path))
        assert (j.current, j.seen) == (None, []), text


def test_a_record_of_anything_but_json_scalars_is_dropped(tmp_path):
    path = tmp_path / "ota_job.json"
    good = {"id": "x", "state": "ok", "started": 5, "reason": None, "flag": True}
    for current, kept in ((good, good), ({"id": "x", "n": 1.5}, None), ({"id": ["x"]}, None),
                          ({"id": {"a": 1}}, None), ([good], None), ("ok", None), (None, None)):
        path.write_text(json.dumps({"current": current, "seen": ["s"]}))
        j = Jobs(str(path))
        assert j.current == kept and j.seen == ["s"], current


def test_save_on_fat_removes_the_old_file_then_renames(tmp_path, monkeypatch):
    # FAT's rename refuses an existing target: the second way must leave the new content in place.
    path = str(tmp_path / "ota_job.json")
    j = Jobs(path)
    j.start(TRIGGER, "downloading")
    fakes.fat_rename(monkeypatch, jobs.os)
    j.update(state="ok")
    assert _file(path)["current"]["state"] == "ok" and not os.path.exists(path + ".tmp")
