"""Folders written whole or not at all (model artifacts read by other processes)."""

import pytest

from assistant.files import staged_file, staged_folder


def test_the_folder_appears_only_when_the_block_ends(tmp_path):
    target = tmp_path / "models" / "pm-1"
    with staged_folder(target) as staging:
        (staging / "weights").write_text("new")
        assert not target.exists()  # a reader meanwhile finds nothing, not half a folder
    assert (target / "weights").read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["pm-1"]  # nothing left beside it


def test_an_error_keeps_the_old_folder_and_leaves_no_temporary_one(tmp_path):
    target = tmp_path / "pm"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with staged_folder(target) as staging:
            (staging / "weights").write_text("half")
            raise RuntimeError("disk full")
    assert (target / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["pm"]


def test_an_existing_folder_is_replaced_whole_or_kept_when_asked(tmp_path):
    target = tmp_path / "lm"
    target.mkdir()
    (target / "stale").write_text("old")
    with staged_folder(target) as staging:
        (staging / "weights").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["weights"]  # no stale file survives
    with staged_folder(target, replace=False) as staging:  # another process got there first
        (staging / "weights").write_text("ours")
    assert (target / "weights").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["lm"]


def test_a_file_appears_whole_or_the_old_one_stays(tmp_path):
    target = tmp_path / "snapshots" / "1" / "judgements.json"
    with staged_file(target) as staging:
        staging.write_bytes(b"new")
        assert not target.exists()  # a reader meanwhile finds nothing, not half a file
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["judgements.json"]
    with pytest.raises(RuntimeError, match="disk full"):
        with staged_file(target) as staging:
            staging.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["judgements.json"]
