"""The checkpoint: identities and confirmed offsets survive a reload; a corrupt one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.checkpoint import Checkpoint, CheckpointError


def test_save_and_load_round_trip_and_identity(tmp_path: Path) -> None:
    path = tmp_path / "ck"
    cp = Checkpoint.load(path)
    entry = cp.new_source("in.txt", 7, 9, b"first bytes of the file", 0)
    cp.advance(entry.id, 5)
    cp.save()
    again = Checkpoint.load(path)
    found = again.find(7, 9, b"first bytes of the file and more")
    assert found is not None and found.id == entry.id and found.offset == 5
    assert again.find(7, 9, b"other content, same inode") is None, "inode reuse must not match"
    assert again.find(7, 10, b"first bytes of the file") is None


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ck"
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        Checkpoint.load(path)


def test_save_is_atomic_no_temp_left(tmp_path: Path) -> None:
    cp = Checkpoint.load(tmp_path / "ck")
    cp.new_source("in.txt", 1, 2, b"", 0)
    cp.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
