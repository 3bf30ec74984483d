"""Discovering files after a restart, without a broker: where rotation moved what we had not
finished, rotations written while we were down, and what is not ours to ship."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import pytest

from producer.discover import TailSet
from tests.unit.test_follow import drain, following, lost, make_tails, read_all


def stopped(tails: TailSet) -> None:
    """The producer stops (or is killed) after its last checkpoint write."""
    tails._checkpoint.save()
    tails.close()
    time.sleep(0.01)  # files written from now on are newer than the checkpoint


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def test_copytruncate_while_down_reads_the_unread_part_from_the_copy(tmp_path: Path) -> None:
    path, tails = following(tmp_path, b"line 1\n")
    stopped(tails)
    append(path, b"line 2 unread\n")
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    append(path, b"after 1\n")
    assert drain(make_tails(tmp_path)) == b"line 2 unread\nafter 1\n"


def test_copytruncate_while_down_of_a_file_opened_but_not_read_ships_the_copy(
    tmp_path: Path,
) -> None:
    """Issue 11, model seed 60000: opened (fingerprinted, 1 KiB) but nothing read yet when the
    producer stopped; copytruncated while down. The copy was taken for known (a copy of ours)
    by the scan for new rotations but refused as ours (no check near an offset of 0): shipped
    by nobody, and the whole file reported lost."""
    path = tmp_path / "in.txt"
    first = b"".join(b"line %04d of the first kilobyte and more\n" % i for i in range(40))
    path.write_bytes(first)
    tails = make_tails(tmp_path)
    tails.check()  # opened, not read
    stopped(tails)
    append(path, b"written while down\n")
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    append(path, b"after 1\n")
    assert drain(make_tails(tmp_path)) == first + b"written while down\nafter 1\n"


def test_a_shorter_rewrite_with_our_first_kilobyte_copied_while_down_is_shipped(
    tmp_path: Path,
) -> None:
    """Model seed 60014: rewritten in place while down, its first line (longer than the 1 KiB
    fingerprint) unchanged but shorter than what we had confirmed, then copytruncated. The copy
    passed for a copy of ours made before we read further, and was shipped by nobody."""
    banner = b"=" * 1100 + b"\n"
    path, tails = following(tmp_path, banner + b"old line 1\nold line 2\nold line 3\n")
    stopped(tails)
    rewrite = banner + b"new 1\n"
    path.write_bytes(rewrite)
    (tmp_path / "in.txt.1").write_bytes(rewrite)
    os.truncate(path, 0)
    append(path, b"after\n")
    assert drain(make_tails(tmp_path)) == rewrite + b"after\n"


def test_a_shorter_rewrite_with_our_first_kilobyte_renamed_while_down_is_shipped(
    tmp_path: Path,
) -> None:
    """Model seed 70032: as above, but the rewrite renamed away: on the old source's inode and
    with its first KiB, it passed for that source (known) though shorter than what we read."""
    banner = b"=" * 1100 + b"\n"
    path, tails = following(tmp_path, banner + b"old line 1\nold line 2\nold line 3\n")
    stopped(tails)
    rewrite = banner + b"new 1\n"
    with path.open("r+b") as handle:
        handle.write(rewrite)
        handle.truncate()
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"after\n")
    assert drain(make_tails(tmp_path)) == rewrite + b"after\n"


def test_two_rotations_while_down_ship_every_file_oldest_first(tmp_path: Path) -> None:
    """in.txt → in.txt.1 → in.txt.2, with a new in.txt.1 written in between: the known file's
    rest, then the file nobody saw, then the current one."""
    path, tails = following(tmp_path, b"a 1\n")
    stopped(tails)
    append(path, b"a 2\n")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"b 1\nb 2\n")
    (tmp_path / "in.txt.1").rename(tmp_path / "in.txt.2")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"c 1\n")
    assert drain(make_tails(tmp_path)) == b"a 2\nb 1\nb 2\nc 1\n"


def test_dated_rotations_written_while_down_are_shipped_in_order(tmp_path: Path) -> None:
    path, tails = following(tmp_path, b"a 1\n")
    stopped(tails)
    path.rename(tmp_path / "in.txt-20261201")
    for name, body in (("in.txt-20261202", b"b\n"), ("in.txt-20261203", b"c\n")):
        path.write_bytes(body)
        path.rename(tmp_path / name)
        time.sleep(0.01)
    path.write_bytes(b"d\n")
    assert drain(make_tails(tmp_path)) == b"b\nc\nd\n"


def test_a_fully_read_rotated_file_and_its_copy_are_not_shipped_again(tmp_path: Path) -> None:
    path, tails = following(tmp_path, b"a 1\na 2\n")
    stopped(tails)
    (tmp_path / "in.txt.2").write_bytes(path.read_bytes())  # a copy of what we shipped
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"b 1\n")
    assert drain(make_tails(tmp_path)) == b"b 1\n"


def test_first_run_ships_only_the_input_and_unrelated_files_never(tmp_path: Path) -> None:
    (tmp_path / "in.txt.1").write_bytes(b"rotated before we ever ran\n")
    path, tails = following(tmp_path, b"current\n")
    stopped(tails)
    for name in ("in.txt.bak", "in.txt.1.tmp", "other.txt.1", "in.txt.swp"):
        (tmp_path / name).write_bytes(b"not a rotation of in.txt\n")
    append(path, b"more\n")
    assert drain(make_tails(tmp_path)) == b"more\n"


def test_a_rotated_file_deleted_while_down_is_counted_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, tails = following(tmp_path, b"read 1\n")
    append(path, b"seen, not read\n")
    tails.check()  # the size is seen, and saved
    stopped(tails)
    path.rename(tmp_path / "in.txt.1")
    (tmp_path / "in.txt.1").unlink()
    path.write_bytes(b"new\n")  # may well reuse the deleted file's inode
    again = make_tails(tmp_path)
    assert drain(again) == b"new\n"
    assert lost(caplog) == [(7, 22, 15, "deleted")]
    stopped(again)
    caplog.clear()
    assert drain(make_tails(tmp_path)) == b"", "counted once, not at every start"
    assert lost(caplog) == []


def test_a_file_read_to_its_end_and_deleted_while_down_is_reported_as_a_possible_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11, model seeds 20038 and 12018: written to after we stopped, then deleted (or its
    copy pushed off the last rotation) before we came back. How much was written we cannot know;
    that something may have been is reported (bytes 0, at_least), once."""
    path, tails = following(tmp_path, b"read 1\n")
    stopped(tails)
    append(path, b"written while down\n")
    path.unlink()
    path.write_bytes(b"new\n")
    assert drain(make_tails(tmp_path)) == b"new\n"
    assert lost(caplog) == [(7, 7, 0, "deleted")]
    assert [r.at_least for r in caplog.records if r.msg == "bytes_lost"] == [True]  # type: ignore[attr-defined]


def test_a_rotated_file_compressed_while_down_is_counted_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, tails = following(tmp_path, b"read 1\n")
    append(path, b"seen, not read\n")
    tails.check()
    stopped(tails)
    path.rename(tmp_path / "in.txt.1")
    (tmp_path / "in.txt.1.gz").write_bytes(gzip.compress((tmp_path / "in.txt.1").read_bytes()))
    (tmp_path / "in.txt.1").unlink()
    path.write_bytes(b"new\n")
    assert drain(make_tails(tmp_path)) == b"new\n"
    assert lost(caplog) == [(7, 22, 15, "copy_compressed")]


def test_a_crash_while_draining_a_rotation_found_at_start_resumes_it(tmp_path: Path) -> None:
    path, tails = following(tmp_path, b"a 1\n")
    stopped(tails)
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"b 1\nb 2\n")
    path.rename(tmp_path / "in.txt.2")
    path.write_bytes(b"c 1\n")
    again = make_tails(tmp_path)
    again.check()
    batch = again.read()  # b's batch: sent, never confirmed; then SIGKILL
    assert batch is not None and bytes(batch.body) == b"b 1\nb 2\n"
    again._checkpoint.save()
    again.close()
    assert drain(make_tails(tmp_path)) == b"b 1\nb 2\nc 1\n"


def test_a_file_read_nothing_of_and_emptied_while_down_is_reported_as_a_possible_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11, model seeds 50011 and 50017: the producer had an empty file open (no
    fingerprint yet); while it was down the file was written, then cut (its copytruncate copy
    since deleted). Found empty but changed since our last look: reported, once."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    stopped(tails)
    append(path, b"written while down\n")
    os.truncate(path, 0)
    assert drain(make_tails(tmp_path)) == b""
    assert lost(caplog) == [(0, 0, 0, "truncated")]
    caplog.clear()
    assert drain(make_tails(tmp_path)) == b""
    assert lost(caplog) == []


def test_an_empty_file_untouched_while_down_is_no_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    stopped(tails)
    assert drain(make_tails(tmp_path)) == b""
    append(path, b"later\n")
    assert drain(make_tails(tmp_path)) == b"later\n"
    assert lost(caplog) == []


def test_a_file_written_while_down_longer_than_a_finished_source_it_starts_like_is_shipped(
    tmp_path: Path,
) -> None:
    """Model chaos seed 677473004: a finished source whose fingerprint is all of it (a short
    file, 2 bytes in the model: the start of a line) took every later file starting with those
    bytes for a copy of it. A rewrite copytruncated while down was shipped by nobody. A finished
    source ends where it ends: a file holding more than that is no copy of it."""
    path, tails = following(tmp_path, b"ab\n")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"c 1\n")
    assert drain(tails) == b"c 1\n"
    stopped(tails)
    (tmp_path / "in.txt.1").rename(tmp_path / "in.txt.2")
    rewrite = b"ab\nnew 2\n"
    path.write_bytes(rewrite)  # rewritten in place, then copytruncated
    (tmp_path / "in.txt.1").write_bytes(rewrite)
    os.truncate(path, 0)
    append(path, b"after\n")
    assert drain(make_tails(tmp_path)) == rewrite + b"after\n"


def test_a_half_line_renamed_while_down_and_finished_there_is_shipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Model chaos seed 677473302: the producer was killed holding a file of which it had seen
    only half a line (nothing read, so no fingerprint); while it was down the file was renamed
    to a rotation name and the writer finished the line there. Its inode alone proves nothing,
    so the line was counted lost and shipped by nobody. The first bytes seen are kept in the
    checkpoint and tell the renamed file."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    append(path, b"half a li")
    assert drain(tails) == b""
    stopped(tails)
    path.rename(tmp_path / "in.txt.1")
    append(tmp_path / "in.txt.1", b"ne\n")
    path.write_bytes(b"next\n")
    assert drain(make_tails(tmp_path)) == b"half a line\nnext\n"
    assert lost(caplog) == []


def test_a_half_line_copytruncated_while_down_and_finished_in_the_copy_is_shipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Model chaos seed 677473453: as above, but copytruncated while down: the copy starts with
    the first bytes seen and holds the line."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    append(path, b"half a li")
    assert drain(tails) == b""
    stopped(tails)
    append(path, b"ne\n")
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    append(path, b"next\n")
    assert drain(make_tails(tmp_path)) == b"half a line\nnext\n"
    assert lost(caplog) == []


def test_a_half_line_cut_while_running_and_finished_in_the_copy_is_shipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A running producer saw half a line (fingerprinted, not read); the file was
    copytruncated and the writer finished the line in the truncated file: the half ships from
    the copy, the rest from the file, nothing counted lost."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    append(path, b"half a li")
    assert drain(tails) == b""
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    append(path, b"ne\n")
    out = drain(tails)
    assert out in (b"half a line\n", b"half a li\nne\n"), out
    assert lost(caplog) == []


def test_waiting_for_names_the_input_path_only_while_nothing_of_it_is_left_to_read(
    tmp_path: Path,
) -> None:
    """Missing at start: waited for. Renamed away: not while the old file is drained, again once
    it is (nothing at the path). Never for a glob, whose paths come and go."""
    tails = make_tails(tmp_path)
    tails.check()
    assert tails.waiting_for() == [str(tmp_path / "in.txt")]
    append(tmp_path / "in.txt", b"one\n")
    assert drain(tails) == b"one\n"
    assert tails.waiting_for() == []
    append(tmp_path / "in.txt", b"two\n")
    (tmp_path / "in.txt").rename(tmp_path / "in.txt.1")
    tails.check()
    assert tails.waiting_for() == [], "the rotated file still holds a line"
    assert drain(tails) == b"two\n"
    assert tails.waiting_for() == [str(tmp_path / "in.txt")]
    (tmp_path / "g").mkdir()
    globbed = make_tails(tmp_path / "g", "*.log")
    globbed.check()
    assert globbed.waiting_for() == []


def sent_not_checkpointed(tmp_path: Path, content: bytes) -> str:
    """The producer read `content` and published it; the confirms came, but it was killed
    before its next checkpoint write: the checkpoint says offset 0. Returns the source id."""
    path = tmp_path / "in.txt"
    path.write_bytes(content)
    tails = make_tails(tmp_path)
    tails.check()  # the identity is saved before anything is published
    batches = read_all(tails)
    assert b"".join(b[3] for b in batches) == content
    tails.close()  # killed: no checkpoint write after the batches went out
    return batches[0][0]


BANNER_1K = b"=" * 1100 + b"\n"  # longer than the fingerprint


def test_a_rewrite_while_down_of_bytes_sent_after_the_last_checkpoint_is_a_new_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Model chaos seed 332410027: bytes published after the last checkpoint write (the
    consumer had them) were rewritten in place while the producer was down, keeping the first
    kilobyte. Taken for the same source from offset 0, the new bytes fell under ranges the
    consumer already had and were dropped downstream. The journal of published ends tells the
    rewrite: the new content is a new source, the old unread rest is counted lost."""
    old_source = sent_not_checkpointed(tmp_path, BANNER_1K + b"old 1\nold 2\n")
    path = tmp_path / "in.txt"
    path.write_bytes(BANNER_1K + b"new\n")  # same inode, shorter, same first 1101 bytes
    tails = make_tails(tmp_path)
    tails.check()
    batches = read_all(tails)
    assert b"".join(b[3] for b in batches) == BANNER_1K + b"new\n"
    assert all(source != old_source for source, *_ in batches)
    assert [reason for *_, reason in lost(caplog)] != []


def test_a_copy_of_such_a_rewrite_is_shipped_as_a_new_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same seed's exact course: the rewrite was then copytruncated (the copy at a rotation
    name) before the producer came back: the copy is no copy of ours, and ships as new."""
    old_source = sent_not_checkpointed(tmp_path, BANNER_1K + b"old 1\nold 2\n")
    path = tmp_path / "in.txt"
    rewrite = BANNER_1K + b"new\n"
    path.write_bytes(rewrite)
    (tmp_path / "in.txt.1").write_bytes(rewrite)
    os.truncate(path, 0)
    tails = make_tails(tmp_path)
    tails.check()
    batches = read_all(tails)
    assert b"".join(b[3] for b in batches) == rewrite
    assert all(source != old_source for source, *_ in batches)


def test_bytes_sent_after_the_last_checkpoint_are_resumed_when_the_file_is_unchanged(
    tmp_path: Path,
) -> None:
    """The usual crash: the checkpoint lags what was sent, the file is the same: resumed under
    the same source from the confirmed offset (the consumer drops what it already has)."""
    content = BANNER_1K + b"old 1\nold 2\n"
    old_source = sent_not_checkpointed(tmp_path, content)
    append(tmp_path / "in.txt", b"more\n")
    tails = make_tails(tmp_path)
    tails.check()
    batches = read_all(tails)
    assert b"".join(b[3] for b in batches) == content + b"more\n"
    assert {source for source, *_ in batches} == {old_source}


def test_rotations_found_at_start_keep_their_order_after_another_kill(tmp_path: Path) -> None:
    """Model chaos seed 332410094: at start, the current file got its source before the scan
    found an older rotation written while we were down (a newer sequence number for the older
    file). Both were read in the right order, then the producer was killed before a confirm;
    the next start resumed unfinished sources by sequence number: the newer file first."""
    path, tails = following(tmp_path, b"a\n")
    stopped(tails)
    path.write_bytes(b"c 1\nc 2\n")  # rewritten in place: a new file...
    path.rename(tmp_path / "in.txt.1")  # ...rotated away while we were down
    path.write_bytes(b"d 1\n")
    tails = make_tails(tmp_path)
    tails.check()
    read = []
    while (batch := tails.read()) is not None:  # published, never confirmed
        read.append(bytes(batch.body))
    assert b"".join(read) == b"c 1\nc 2\nd 1\n"
    tails.close()  # killed, then both rotated on while down
    (tmp_path / "in.txt.1").rename(tmp_path / "in.txt.2")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"e 1\n")
    assert drain(make_tails(tmp_path)) == b"c 1\nc 2\nd 1\ne 1\n"


def test_a_half_line_fingerprint_does_not_claim_a_longer_rotation_as_its_copy(
    tmp_path: Path,
) -> None:
    """Model chaos seed 332410130: at start the current file held 5 bytes, the first of a
    half line, and became a source fingerprinted by them; a file rotated away while we were
    down started with the same 5 bytes (every line of that log starts alike) and was taken
    for a copy of it: shipped by nobody. A copy of a file we hold is no longer than it."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    stopped(tails)
    append(path, b"s3324 g1 n1\n")
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    append(path, b"s3324 g3 n2\n")
    path.rename(tmp_path / "in.txt.1")  # the copy of g1 is gone: that loss nobody can prevent
    path.write_bytes(b"s3324")
    assert drain(make_tails(tmp_path)) == b"s3324 g3 n2\n"


def test_lines_written_before_a_stop_that_did_not_look_again_are_found_after_rotation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Model chaos seed 332410214: the producer held an empty file (no fingerprint); lines were
    written and it was stopped before its next look, then the file was rotated away while it
    was down. Older than the checkpoint, the rotation was no scan's business, and its inode
    alone was not trusted: shipped by nobody."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    append(path, b"g1 a\ng1 b\n")
    stopped(tails)  # the checkpoint is written after the lines were
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"g2 a\n")
    assert drain(make_tails(tmp_path)) == b"g1 a\ng1 b\ng2 a\n"
    assert lost(caplog) == []


def test_rotations_written_while_down_that_start_alike_are_all_shipped_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Model chaos seed 304082028: the producer had seen half a line ("s3 g") of a file when
    it was killed; while it was down the file was copytruncated (the copy holds the half line,
    the rest went to the truncated file, then deleted) and a later file, starting with the same
    bytes, was rotated away too. The copy, shipped first, took the later file for a copy of
    itself (its fingerprint is those few bytes): shipped by nobody. The half line is shipped as
    it is, its rest lost with a file nobody saw."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    append(path, b"s3 g")
    assert drain(tails) == b""
    stopped(tails)
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    append(path, b"1 rest\n")
    path.unlink()
    path.write_bytes(b"s3 g3 a\ns3 g3 b\n")
    (tmp_path / "in.txt.1").rename(tmp_path / "in.txt.2")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"s3 g5\n")
    assert drain(make_tails(tmp_path)) == b"s3 gs3 g3 a\ns3 g3 b\ns3 g5\n"
    assert lost(caplog) == []


def test_a_rotated_file_gone_while_down_is_not_found_again_in_a_file_starting_alike(
    tmp_path: Path,
) -> None:
    """Model chaos seed 501464164: the producer had shipped a copytruncate copy holding a half
    line ("s5014", which was all its fingerprint) and kept it open for late writes; while it
    was down the copy was replaced by the next rotation, starting with the same bytes, which
    was taken for a copy of the copy and read from the old offset: a line shipped without its
    first bytes. Nobody copies a rotated file: after a restart it is found by its inode or not
    at all."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    tails = make_tails(tmp_path, rotation_grace=60.0)
    assert drain(tails) == b""
    append(path, b"s5014")
    assert drain(tails) == b""  # seen, not read: a half line
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    append(path, b"s5015 g5 a\n")
    # the copy's half line ships once the writer has moved on; the copy is kept for late writes
    assert drain(tails) == b"s5014s5015 g5 a\n"
    stopped(tails)
    path.write_bytes(b"s5014 g6 b\n")  # rewritten in place, then rotated over the copy
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"")
    assert drain(make_tails(tmp_path)) == b"s5014 g6 b\n"
