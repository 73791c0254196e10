"""ota.replay's file at its edges (pinned after `make mutate`): which stored numbers count, how the
two copies merge, the FAT way of replacing the file. CPython on a temporary directory."""
import json
import os

import fakes  # (also puts lib/ on sys.path)
from ota import replay
from ota.replay import Replay


def _write(path, data):
    with open(path, "w") as f:
        json.dump(data, f)


def test_key_id_is_the_first_8_bytes_in_hex():
    key = bytes(range(32))
    assert replay.key_id(key) == "0001020304050607"


def test_only_positive_integer_seqs_under_string_keys_are_read(tmp_path):
    path = str(tmp_path / "ota_seq.json")
    _write(path, {"a": 1, "b": 0, "c": -5, "d": True, "e": 2.5, "f": "7", "g": 2 ** 53})
    assert Replay(path).seqs == {"a": 1, "g": 2 ** 53}
    assert Replay(path).highest("a") == 1 and Replay(path).highest("b") == 0


def test_the_higher_of_both_copies_counts_per_key(tmp_path):
    path = str(tmp_path / "ota_seq.json")
    _write(path, {"a": 5, "b": 9})
    _write(path + ".tmp", {"a": 7, "b": 3, "c": 1})
    store = Replay(path)
    assert store.seqs == {"a": 7, "b": 9, "c": 1}
    assert os.path.exists(path + ".tmp")  # PATH exists: the tmp copy is left for accept() to replace


def test_a_tmp_copy_alone_becomes_the_file(tmp_path):
    path = str(tmp_path / "ota_seq.json")
    _write(path + ".tmp", {"a": 4})
    assert Replay(path).seqs == {"a": 4}
    assert not os.path.exists(path + ".tmp")
    with open(path) as f:
        assert json.load(f) == {"a": 4}


def test_no_file_at_all_is_created_by_reading(tmp_path):
    path = str(tmp_path / "ota_seq.json")
    assert Replay(path).seqs == {}
    assert os.listdir(str(tmp_path)) == []


def test_accept_writes_the_file_and_leaves_no_tmp(tmp_path):
    path = str(tmp_path / "ota_seq.json")
    store = Replay(path)
    store.accept("a", 3)
    store.accept("b", 8)
    assert os.listdir(str(tmp_path)) == ["ota_seq.json"]
    with open(path) as f:
        assert json.load(f) == {"a": 3, "b": 8}
    assert Replay(path).highest("b") == 8


def test_accept_on_fat_removes_then_renames(tmp_path, monkeypatch):
    path = str(tmp_path / "ota_seq.json")
    store = Replay(path)
    store.accept("a", 1)
    fakes.fat_rename(monkeypatch, replay.os)
    store.accept("a", 2)
    assert os.listdir(str(tmp_path)) == ["ota_seq.json"]
    with open(path) as f:
        assert json.load(f) == {"a": 2}


def test_a_cut_before_the_rename_leaves_the_new_number_where_the_reader_looks(tmp_path, monkeypatch):
    # accept() writes the copy the constructor merges: the same PATH.tmp on both sides.
    path = str(tmp_path / "ota_seq.json")
    Replay(path).accept("a", 1)

    class PowerCut(Exception):
        pass

    def cut(src, dst):
        raise PowerCut()

    monkeypatch.setattr(replay.os, "rename", cut)
    try:
        Replay(path).accept("a", 2)
    except PowerCut:
        pass
    monkeypatch.undo()
    assert Replay(path).highest("a") == 2


def test_a_tmp_copy_that_cannot_be_renamed_still_counts_and_says_so(tmp_path, monkeypatch, capsys):
    # The only copy is PATH.tmp and the rename fails (a read-only or full filesystem): the numbers in
    # it still count for this boot, and the console says why the file was not restored.
    path = str(tmp_path / "ota_seq.json")
    _write(path + ".tmp", {"a": 7})

    def refuse(src, dst):
        raise OSError(30, "EROFS")

    monkeypatch.setattr(replay.os, "rename", refuse)
    store = Replay(path)
    assert store.highest("a") == 7 and not os.path.exists(path)
    assert "replay: could not restore %s: [Errno 30] EROFS" % path in capsys.readouterr().out
