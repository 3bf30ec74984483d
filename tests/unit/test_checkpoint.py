"""The checkpoint: identities and confirmed offsets survive a reload; a corrupt one is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from producer.checkpoint import Checkpoint, CheckpointError
from producer.identity import digest


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


@pytest.mark.parametrize(
    "content",
    [
        "null",
        "[]",
        '"text"',
        '{"version": 1, "sources": null}',
        '{"version": 1, "sources": [null]}',
        '{"version": 1, "sources": [{"id": "a"}]}',
        '{"version": 1, "sources": [{"id": "a", "path": "p", "dev": "1", "ino": 2, "head_len": 0,'
        ' "head_sha": "", "offset": 0, "seq": 1}]}',
        '{"version": 1, "sources": [{"id": "a", "path": "p", "dev": 1, "ino": 2, "head_len": 0,'
        ' "head_sha": "", "offset": true, "seq": 1}]}',
        '{"version": 1, "sources": [{"id": "a", "path": "p", "dev": 1, "ino": 2, "head_len": 0,'
        ' "head_sha": "", "offset": -5, "seq": 1}]}',
        '{"version": 1, "sources": [{"id": "a", "path": "p", "dev": 1, "ino": 2, "head_len": 0,'
        ' "head_sha": "", "offset": 0, "seq": 1, "finished": "yes"}]}',
        '{"version": 1, "sources": [{"id": "a", "path": "p", "dev": 1, "ino": 2, "head_len": 0,'
        ' "head_sha": "", "offset": 0, "seq": 1, "colour": "red"}]}',
    ],
)
def test_checkpoint_of_the_wrong_shape_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ck"
    path.write_text(content)
    with pytest.raises(CheckpointError, match="unreadable"):
        Checkpoint.load(path)


def test_checkpoint_of_the_previous_version_loads(tmp_path: Path) -> None:
    """Written before the check near the offset and the size were recorded."""
    path = tmp_path / "ck"
    path.write_text(
        '{"version":1,"sources":[{"id":"a","path":"in.txt","dev":1,"ino":2,"head_len":4,'
        '"head_sha":"x","offset":10,"seq":3,"finished":false,"updated":1.5,"end":null}]}'
    )
    entry = Checkpoint.load(path).entries["a"]
    assert (entry.offset, entry.check_len, entry.size) == (10, 0, 0)


def test_the_bytes_before_the_confirmed_offset_are_recorded(tmp_path: Path) -> None:
    """Saved with the offset: the bytes just before it, as read (not those of a later batch
    that is not confirmed yet)."""
    cp = Checkpoint.load(tmp_path / "ck")
    entry = cp.new_source("in.txt", 1, 2, b"head", 0)
    for end in (10, 20):
        cp.read_up_to(entry, end, b"%d" % end)
    cp.advance(entry.id, 10)  # the first batch confirmed, the second not yet
    cp.save()
    again = Checkpoint.load(tmp_path / "ck").entries[entry.id]
    assert (again.offset, again.check_end, again.check_len) == (10, 10, 2)
    assert again.check_sha == digest(b"10") and again.size == 20


def test_a_source_with_no_fingerprint_is_only_an_empty_file_on_its_inode(tmp_path: Path) -> None:
    """Issue 11: an inode number reused by any new file was taken for a source read nothing of
    (its empty fingerprint matched every file); its first fingerprint is on disk before a batch
    of it can be published."""
    path = tmp_path / "ck"
    cp = Checkpoint.load(path)
    entry = cp.new_source("in.txt", 7, 9, b"", 0)
    assert cp.find(7, 9, b"") is entry
    assert cp.find(7, 9, b"a new file on the reused inode\n") is None
    cp.widen_head(entry, b"first line\n")
    again = Checkpoint.load(path)  # saved by the widening itself, no save() in between
    assert again.entries[entry.id].head_len == len(b"first line\n")
    assert again.find(7, 9, b"first line\nmore") is not None
    assert again.find(7, 9, b"other line\n") is None


def test_a_finished_source_nothing_of_which_was_shipped_claims_no_file(tmp_path: Path) -> None:
    """Model seed 60013: a source finished after a 4-byte fingerprint (the start of a half-written
    line) and nothing shipped took every later file starting with those bytes for known (a copy
    of it): rotations written while the producer was down were shipped by nobody."""
    cp = Checkpoint.load(tmp_path / "ck")
    short = cp.new_source("in.txt", 1, 2, b"s600", 0)
    cp.finish(short, 0)
    other = tmp_path / "in.txt.1"
    other.write_bytes(b"s60013 a whole other file\n")
    with other.open("rb") as handle:
        assert not cp.knows_file(handle.fileno(), os.fstat(handle.fileno()))
    assert cp.find(1, 2, b"s60013 on the reused inode\n") is None


def test_only_a_source_with_bytes_left_is_resumed(tmp_path: Path) -> None:
    """Model seed 60033: a new file on the inode of a finished source, starting with its 1-byte
    fingerprint, was resumed at that source's offset: its first byte never shipped."""
    cp = Checkpoint.load(tmp_path / "ck")
    done = cp.new_source("in.txt", 1, 2, b"s", 0)
    cp.advance(done.id, 1)
    cp.finish(done, 1)
    assert cp.find(1, 2, b"s60033 new file\n") is done  # still a copy's evidence, for the scan
    assert cp.find(1, 2, b"s60033 new file\n", resumable=True) is None


def test_published_ends_survive_a_kill_through_the_journal(tmp_path: Path) -> None:
    """Each batch's end is journalled before it is published; a reload without a checkpoint
    write in between knows it (a torn last line and unknown sources are skipped); a checkpoint
    write takes it over and empties the journal."""
    path = tmp_path / "ck"
    cp = Checkpoint.load(path)
    entry = cp.new_source("in.txt", 7, 9, b"first bytes", 0)
    cp.read_up_to(entry, 100, b"x" * 100)
    cp.read_up_to(entry, 250, b"y" * 128)
    journal = cp.own_files()[2]
    with journal.open("ab") as handle:
        handle.write(b"gone-source 999 1 " + b"0" * 64 + b"\n" + entry.id.encode() + b" 9999 12")
    again = Checkpoint.load(path).entries[entry.id]
    assert (again.offset, again.sent_end, again.sent_sha) == (0, 250, digest(b"y" * 128))
    assert again.size == 250
    cp.save()
    assert journal.read_bytes() == b""
    saved = Checkpoint.load(path).entries[entry.id]
    assert (saved.sent_end, saved.sent_len) == (250, 128)
    cp.close()


def test_a_file_shorter_than_what_was_published_is_not_the_source(tmp_path: Path) -> None:
    data = b"line one\nline two\n"
    log = tmp_path / "in.txt"
    log.write_bytes(data)
    cp = Checkpoint.load(tmp_path / "ck")
    st = log.stat()
    entry = cp.new_source(str(log), st.st_dev, st.st_ino, data[:9], 0)
    cp.read_up_to(entry, len(data), data)
    fd = os.open(log, os.O_RDONLY)
    try:
        assert entry.same_bytes_before(fd)
        os.truncate(log, 9)
        assert not entry.same_bytes_before(fd)
        assert entry.same_bytes_before(fd, shorter_ok=True), "a copy made before we read on"
        log.write_bytes(b"line one\nline 2!!\n")  # as long, other bytes
        assert not entry.same_bytes_before(fd, shorter_ok=True)
    finally:
        os.close(fd)
        cp.close()
