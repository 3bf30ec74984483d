"""Following files without a broker: rotation, truncation, inode reuse, restart from checkpoint."""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from producer.batcher import cut_batch
from producer.checkpoint import Checkpoint
from producer.discover import TailSet
from producer.follow import TailOptions
from producer.metrics import ProducerMetrics


def make_tails(tmp_path: Path, pattern: str = "in.txt", **options: Any) -> TailSet:
    opts = {
        "max_bytes": 1 << 16,
        "max_lines": 1 << 20,
        "rotation_grace": 0.0,
        "read_from_end": False,
        **options,
    }
    return TailSet(
        str(tmp_path / pattern),
        Checkpoint.load(tmp_path / "ck"),
        TailOptions(**opts),
        ProducerMetrics(),
    )


def drain(tails: TailSet) -> bytes:
    """Read everything available, confirming each batch (as the publisher would)."""
    out = b""
    for _ in range(1000):
        tails.check()
        batch = tails.read()
        if batch is None:
            batch = tails.read()
            if batch is None:
                return out
        tails._checkpoint.advance(batch.source, batch.end)
        out += bytes(batch.body)
    raise AssertionError("never ran dry")


def following(tmp_path: Path, first: bytes, **options: Any) -> tuple[Path, TailSet]:
    """in.txt holding `first`, followed and shipped up to its end."""
    path = tmp_path / "in.txt"
    path.write_bytes(first)
    tails = make_tails(tmp_path, **options)
    assert drain(tails) == first
    return path, tails


def test_rename_rotation_drains_old_file_first(tmp_path: Path) -> None:
    path, tails = following(tmp_path, b"old 1\n")
    with path.open("ab") as handle:
        handle.write(b"old 2\n")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"new 1\n")
    with (tmp_path / "in.txt.1").open("ab") as handle:
        handle.write(b"old 3\n")
    assert drain(tails) == b"old 2\nold 3\nnew 1\n"


def test_copytruncate_starts_over_with_a_new_source(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"before\n")
    tails = make_tails(tmp_path)
    first = drain(tails)
    source_before = next(iter(tails.tails.values())).files[-1].source.id
    os.truncate(path, 0)
    path.write_bytes(b"after\n")
    assert first + drain(tails) == b"before\nafter\n"
    assert next(iter(tails.tails.values())).files[-1].source.id != source_before


def test_truncate_and_rewrite_past_old_offset_is_detected_by_content(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"aaaa\n")
    tails = make_tails(tmp_path)
    drain(tails)
    path.write_bytes(b"bbbbbbbbbb\ncc\n")  # truncated and refilled beyond the old offset
    assert drain(tails) == b"bbbbbbbbbb\ncc\n"


def test_restart_resumes_from_checkpoint_and_not_on_inode_reuse(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"one\n")
    tails = make_tails(tmp_path)
    drain(tails)
    tails._checkpoint.save()
    tails.close()
    with path.open("ab") as handle:
        handle.write(b"two\n")
    assert drain(make_tails(tmp_path)) == b"two\n"
    path.unlink()
    path.write_bytes(b"another file\n")  # may well get the same inode number
    assert drain(make_tails(tmp_path)) == b"another file\n"


def test_read_from_end_starts_at_the_line_being_written(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"history\nin progr")
    tails = make_tails(tmp_path, read_from_end=True)
    assert drain(tails) == b""
    with path.open("ab") as handle:
        handle.write(b"ess\nnew\n")
    assert drain(tails) == b"in progress\nnew\n"


def test_glob_follows_several_files(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"a1\n")
    (tmp_path / "b.log").write_bytes(b"b1\n")
    tails = make_tails(tmp_path, "*.log")
    assert sorted(drain(tails).splitlines()) == [b"a1", b"b1"]
    (tmp_path / "c.log").write_bytes(b"c1\n")
    assert drain(tails) == b"c1\n"


def test_oversized_line_is_split_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"y" * 250 + b"\nshort\n")
    tails = make_tails(tmp_path, max_bytes=100)
    assert drain(tails) == b"y" * 250 + b"\nshort\n"
    assert tails._metrics.oversized_lines._value.get() == 1


def read_all(tails: TailSet) -> list[tuple[str, int, int, bytes]]:
    """Every batch read now, without looking for rotation first (as the read loop does while
    data keeps coming), confirmed as the publisher would."""
    batches = []
    while (batch := tails.read()) is not None:
        tails._checkpoint.advance(batch.source, batch.end)
        batches.append((batch.source, batch.start, batch.end, bytes(batch.body)))
    return batches


def test_rewrite_past_old_offset_between_reads_is_a_new_source(tmp_path: Path) -> None:
    """Truncated and refilled while reading goes on (no check in between): the new bytes are a
    new source from offset 0, never the old source's range."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"aaaa\n")
    tails = make_tails(tmp_path)
    tails.check()
    [(old_source, _, _, _)] = read_all(tails)
    with path.open("r+b") as handle:  # same inode, as copytruncate leaves it
        handle.truncate(0)
        handle.write(b"bbbbbbbbbb\ncc\n")
    [(source, start, end, body)] = read_all(tails)
    assert (start, end, body) == (0, 14, b"bbbbbbbbbb\ncc\n") and source != old_source


def rotate_and_crash_unconfirmed(tmp_path: Path, *, rotation_grace: float) -> None:
    """Rename rotation; the old file's last line and the new file's first are read and sent,
    neither confirmed; the checkpointer runs; then SIGKILL."""
    path, tails = following(tmp_path, b"old 1\n", rotation_grace=rotation_grace)
    with path.open("ab") as handle:
        handle.write(b"old 2\n")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"new 1\n")
    tails.check()
    unconfirmed = [tails.read(), tails.read()]
    assert [bytes(b.body) for b in unconfirmed if b] == [b"old 2\n", b"new 1\n"]
    tails._checkpoint.save()
    tails.close()


def test_rotated_file_unconfirmed_at_a_crash_is_resumed(tmp_path: Path) -> None:
    """Retired (renamed away, writer moved on) while its last batch awaited a confirm, then a
    crash: the next start drains it from the confirmed offset before the new file."""
    rotate_and_crash_unconfirmed(tmp_path, rotation_grace=60.0)
    assert drain(make_tails(tmp_path, rotation_grace=60.0)) == b"old 2\nnew 1\n"


def test_read_from_end_only_on_a_first_run(tmp_path: Path) -> None:
    """A file that replaced a known one while we were down, or that appears after the start, is
    read from its beginning: only what was there on the very first run is skipped."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"history\n")
    tails = make_tails(tmp_path, read_from_end=True)
    assert drain(tails) == b""
    tails._checkpoint.save()
    tails.close()
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"written while down\n")
    assert drain(make_tails(tmp_path, read_from_end=True)) == b"written while down\n"

    late = tmp_path / "late"
    late.mkdir()
    tails = make_tails(late, read_from_end=True)
    assert drain(tails) == b""
    (late / "in.txt").write_bytes(b"first line after start\n")
    assert drain(tails) == b"first line after start\n"


def test_late_write_to_a_file_retired_early_is_shipped(tmp_path: Path) -> None:
    """Two writers: one moved to the new file (the old one retires early), the other still
    appends to the old one within the grace. Its line comes late, but it comes."""
    path, tails = following(tmp_path, b"old 1\n", rotation_grace=60.0)
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"new 1\n")
    assert drain(tails) == b"new 1\n"
    with (tmp_path / "in.txt.1").open("ab") as handle:
        handle.write(b"old 2 late\n")
    assert drain(tails) == b"old 2 late\n"


def test_glob_resumes_a_file_renamed_away_before_its_successor_exists(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"x1\n")
    tails = make_tails(tmp_path, "*.log")
    assert drain(tails) == b"x1\n"
    tails._checkpoint.save()
    tails.close()
    with path.open("ab") as handle:
        handle.write(b"x2 unread\n")
    path.rename(tmp_path / "app.log.1")  # then a restart, before app.log is created again
    assert drain(make_tails(tmp_path, "*.log")) == b"x2 unread\n"


def copytruncate(path: Path, copy: Path, *, preserve_mtime: bool) -> None:
    """What logrotate's copytruncate does: copy the file, then truncate it in place."""
    copy.write_bytes(path.read_bytes())
    if preserve_mtime:
        st = path.stat()
        os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.truncate(path, 0)


def test_copytruncate_while_behind_drains_the_copy_first(tmp_path: Path) -> None:
    """Lines written after our last read, then copytruncate: they are in the copy only. The copy
    is read from our offset, under the same source, before the truncated file starts over."""
    for preserve in (False, True):
        workdir = tmp_path / str(preserve)
        workdir.mkdir()
        path = workdir / "in.txt"
        path.write_bytes(b"line 1\n")
        old = workdir / "in.txt.0"
        old.write_bytes(b"line 1\nfrom an older rotation\n")  # same head, older: not the copy
        os.utime(old, ns=(0, 0))
        tails = make_tails(workdir, rotation_grace=60.0)
        tails.check()
        [(source, _, _, _)] = read_all(tails)
        with path.open("ab") as handle:
            handle.write(b"line 2 unread\nline 3 unread\n")
        copytruncate(path, workdir / "in.txt.1", preserve_mtime=preserve)
        with path.open("ab") as handle:
            handle.write(b"after 1\n")
        batches = read_all(tails)
        assert b"".join(body for *_, body in batches) == (
            b"line 2 unread\nline 3 unread\nafter 1\n"
        )
        assert batches[0][:3] == (source, 7, 35) and batches[-1][0] != source


def test_copy_of_a_truncated_file_is_found_again_after_a_crash(tmp_path: Path) -> None:
    path, tails = following(tmp_path, b"line 1\n", rotation_grace=60.0)
    with path.open("ab") as handle:
        handle.write(b"line 2 unread\n")
    copytruncate(path, tmp_path / "in.txt.1", preserve_mtime=False)
    with path.open("ab") as handle:
        handle.write(b"after 1\n")
    assert tails.read() is not None  # the copy's batch, sent but never confirmed
    tails._checkpoint.save()  # then SIGKILL
    assert drain(make_tails(tmp_path, rotation_grace=60.0)) == b"line 2 unread\nafter 1\n"


def test_copy_is_found_though_we_read_between_its_copy_and_the_truncate(tmp_path: Path) -> None:
    """logrotate copies, the application writes on, we read a little, then the truncate: the
    copy is recognised by its content, not by times (bytes written after the copy are lost by
    copytruncate itself, for everyone)."""
    path, tails = following(tmp_path, b"line 1\n", max_bytes=32, rotation_grace=60.0)
    unread = b"".join(b"line %02d unread\n" % i for i in range(10))
    with path.open("ab") as handle:
        handle.write(unread)
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())  # the copy
    with path.open("ab") as handle:
        handle.write(b"window\n")  # after the copy, before the truncate
    [(_, _, _, some)] = _one(tails)  # we read a little in that window
    os.truncate(path, 0)
    with path.open("ab") as handle:
        handle.write(b"after\n")
    assert some + drain(tails) == unread + b"after\n"


def _one(tails: TailSet) -> list[tuple[str, int, int, bytes]]:
    batch = tails.read()
    assert batch is not None
    tails._checkpoint.advance(batch.source, batch.end)
    return [(batch.source, batch.start, batch.end, bytes(batch.body))]


def test_a_glob_that_names_the_copy_reads_it_once(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"a1\n")
    tails = make_tails(tmp_path, "in.txt*", rotation_grace=60.0)
    assert drain(tails) == b"a1\n"
    with path.open("ab") as handle:
        handle.write(b"a2 unread\n")
    copytruncate(path, tmp_path / "in.txt.1", preserve_mtime=False)
    with path.open("ab") as handle:
        handle.write(b"after\n")
    assert drain(tails) == b"a2 unread\nafter\n"


def test_the_unterminated_end_of_a_rotated_file_ships_before_the_successor(
    tmp_path: Path,
) -> None:
    """Issue 11, model seed 4011 (split_partial): the writer left a line half written in the old
    file and moved on to the new one. The half ships at once, before the new file's lines (it
    waited for the grace and came after them: torn and out of order); a completion of it by
    another writer still comes, as a late write."""
    path, tails = following(tmp_path, b"old 1\n", rotation_grace=60.0)
    with path.open("ab") as handle:
        handle.write(b"half a line")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"new 1\n")
    assert drain(tails) == b"half a line" + b"new 1\n"
    with (tmp_path / "in.txt.1").open("ab") as handle:
        handle.write(b" finished late\n")
    assert drain(tails) == b" finished late\n"


def test_a_source_resumed_long_after_it_was_finished_is_kept(tmp_path: Path) -> None:
    """Finished (grace over) with its last batch unconfirmed, then the producer stays down for
    days: the next start resumes it, and the first checkpoint write does not prune it."""
    rotate_and_crash_unconfirmed(tmp_path, rotation_grace=0.0)  # finished at once
    checkpoint = json.loads((tmp_path / "ck").read_text())
    for entry in checkpoint["sources"]:
        entry["updated"] -= 3 * 24 * 3600  # the producer stayed down for days
    (tmp_path / "ck").write_text(json.dumps(checkpoint))
    again = make_tails(tmp_path, rotation_grace=60.0)
    again.check()
    again._checkpoint.save()  # prunes what is stale
    resumed = [f.source.id for t in again.tails.values() for f in t.files]
    assert len(resumed) == 2 and all(s in again._checkpoint.entries for s in resumed)
    assert drain(again) == b"old 2\nnew 1\n"


BANNER = b"".join(b"banner line %04d of the application's start\n" % i for i in range(300))


def lost(caplog: pytest.LogCaptureFixture) -> list[tuple[int, int, int, str]]:
    """Every bytes_lost warning: (start, end, bytes, reason)."""
    return [
        (r.start, r.end, r.bytes, r.reason)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "bytes_lost"
    ]


def test_rewrite_in_place_with_the_same_banner_is_a_new_file(tmp_path: Path) -> None:
    """`cat new > in.txt`: same inode, same first 12 KB, other bytes before our offset. The
    new content is shipped whole, from its first byte, not from the old offset."""
    path, tails = following(tmp_path, BANNER + b"old run 1\n")
    new = BANNER + b"new run 1\n" + b"new run 2 is longer than the old\n"
    with path.open("r+b") as handle:
        handle.truncate(0)
        handle.write(new)
    assert drain(tails) == new


def test_rewrite_while_down_with_the_same_banner_is_a_new_file(tmp_path: Path) -> None:
    path, tails = following(tmp_path, BANNER + b"old run 1\n")
    tails._checkpoint.save()
    tails.close()
    new = BANNER + b"new run 1\n" + b"new run 2 is longer than the old\n"
    with path.open("r+b") as handle:
        handle.truncate(0)
        handle.write(new)
    assert drain(make_tails(tmp_path)) == new


def test_a_half_line_seen_then_cut_and_refilled_is_counted_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file opened empty (no fingerprint), a half line seen but not shipped, then finished,
    cut and written again longer, all between two looks: its first bytes tell the change, and
    the half line we saw is reported lost (model seeds 561634123, 561634132, 561634135)."""
    path, tails = following(tmp_path, b"")
    with path.open("ab") as handle:
        handle.write(b"half of a li")
    tails.check()  # seen (12 bytes), not shipped: no newline yet
    with path.open("ab") as handle:
        handle.write(b"ne\n")
    os.truncate(path, 0)
    path.write_bytes(b"another file, longer than the first one\n")
    assert drain(tails) == b"another file, longer than the first one\n"
    assert lost(caplog) == [(0, 12, 12, "truncated")]


def test_truncate_that_outran_the_reader_is_counted_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, tails = following(tmp_path, b"read 1\n")
    with path.open("ab") as handle:
        handle.write(b"unread 2\n")
    tails.check()  # seen (size 16), not read
    os.truncate(path, 0)
    with path.open("ab") as handle:
        handle.write(b"after\n")
    assert drain(tails) == b"after\n"
    assert lost(caplog) == [(7, 16, 9, "truncated")]
    assert tails._metrics.bytes_lost.labels("truncated")._value.get() == 9


def test_copy_compressed_before_it_was_read_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, tails = following(tmp_path, b"read 1\n")
    with path.open("ab") as handle:
        handle.write(b"unread 2\n")
    (tmp_path / "in.txt.1.gz").write_bytes(gzip.compress(path.read_bytes() + b"unseen 3\n"))
    os.truncate(path, 0)
    assert drain(tails) == b""
    # the compressed copy says how much it held, beyond what we saw
    assert lost(caplog) == [(7, 25, 18, "copy_compressed")]


def test_copytruncate_before_anything_was_read_finds_the_copy(tmp_path: Path) -> None:
    """Opened empty after a rotation; the writer fills it, copytruncate copies and truncates
    it, the writer fills it again, all before our next look: nothing we read names the copy,
    but it is a new rotation of our path and not where our file starts. Read it first."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    (tmp_path / "in.txt.1").write_bytes(b"older rotation\n")  # there before: not our copy
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    time.sleep(0.02)  # file times tick in jiffies
    path.write_bytes(b"first 1\nfirst 2\n")
    (tmp_path / "in.txt.2").write_bytes(path.read_bytes())  # the copy
    with path.open("r+b") as handle:
        handle.truncate(0)
        handle.write(b"second 1\nsecond 2\nsecond 3\n")
    assert drain(tails) == b"first 1\nfirst 2\nsecond 1\nsecond 2\nsecond 3\n"


def test_a_plain_copy_of_a_file_never_read_is_not_a_truncation(tmp_path: Path) -> None:
    path, tails = following(tmp_path, b"")
    path.write_bytes(b"one\n")
    (tmp_path / "in.txt.1").write_bytes(b"one\n")  # logrotate `copy`: nothing truncated
    with path.open("ab") as handle:
        handle.write(b"two\n")
    assert drain(tails) == b"one\ntwo\n"


def test_fifo_at_the_input_path_is_refused_once_and_never_blocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.mkfifo(tmp_path / "in.txt")
    tails = make_tails(tmp_path)
    for _ in range(3):
        assert drain(tails) == b""
    refused = [r for r in caplog.records if r.getMessage() == "input_not_readable"]
    assert [(r.kind, r.levelname) for r in refused] == [("FIFO", "ERROR")]  # type: ignore[attr-defined]
    (tmp_path / "in.txt").unlink()
    (tmp_path / "in.txt").write_bytes(b"a regular file again\n")
    assert drain(tails) == b"a regular file again\n"


def test_a_glob_skips_a_directory_and_a_fifo_it_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a.log").write_bytes(b"a1\n")
    (tmp_path / "b.log").mkdir()
    os.mkfifo(tmp_path / "c.log")
    tails = make_tails(tmp_path, "*.log")
    assert drain(tails) == b"a1\n"
    kinds = sorted(r.kind for r in caplog.records if r.getMessage() == "input_not_readable")  # type: ignore[attr-defined]
    assert kinds == ["FIFO", "directory"]


def test_a_file_created_and_rotated_away_between_two_looks_is_shipped(tmp_path: Path) -> None:
    """in.txt is renamed away, a new in.txt is written and renamed away too, and a third one
    created, all before our next look: the middle file was never opened, but it is a rotation
    of our path newer than the file we held. Shipped in order, between the two."""
    (tmp_path / "in.txt.7").write_bytes(b"an old rotation, there before we opened in.txt\n")
    time.sleep(0.02)
    path, tails = following(tmp_path, b"a 1\n")
    append(path, b"a 2\n")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"b 1\n")
    (tmp_path / "in.txt.1").rename(tmp_path / "in.txt.2")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"c 1\n")
    assert drain(tails) == b"a 2\nb 1\nc 1\n"


def test_copytruncate_of_a_file_opened_but_not_read_yet_finds_the_copy(tmp_path: Path) -> None:
    """Opened with bytes in it (fingerprinted), not read yet; written on, copied, truncated and
    refilled before the first read: the copy starts with our fingerprint and is new."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"first 1\n")
    tails = make_tails(tmp_path)
    tails.check()  # opened, nothing read
    time.sleep(0.02)
    append(path, b"first 2\n")
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
    path.write_bytes(b"second 1\n")
    assert drain(tails) == b"first 1\nfirst 2\nsecond 1\n"


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def test_a_file_renamed_before_its_first_read_is_not_taken_for_a_copy(tmp_path: Path) -> None:
    """Opened empty; written and renamed away, its successor written and renamed away too,
    before we read (reading comes before looking for rotation): the successor is a new
    rotation of our path, but our path no longer names our file, so it is no copy of it."""
    path = tmp_path / "in.txt"
    path.touch()
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    time.sleep(0.02)
    path.write_bytes(b"f0\n")
    path.rename(tmp_path / "in.txt.0")
    path.write_bytes(b"f1\n")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"f2\n")
    first = b"".join(body for *_, body in read_all(tails))
    assert first + drain(tails) == b"f0\nf1\nf2\n"


def test_the_copy_of_a_source_already_read_is_no_copy_of_the_next(tmp_path: Path) -> None:
    """Read to its end, copied and truncated (nothing to take from the copy), then refilled:
    the copy is older than the new source and known as the old one's, not shipped again."""
    path, tails = following(tmp_path, b"all read 1\nall read 2\n")
    tails._checkpoint.save()
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    tails.check()  # the truncation is seen with the file empty
    time.sleep(0.02)
    append(path, b"new 1\n")
    assert drain(tails) == b"new 1\n"


def after_next_save(tails: TailSet, action: Callable[[], None]) -> None:
    """Run `action` once, right after the checkpoint's next write (a slow fsync on a busy disk,
    during which the files change)."""
    checkpoint = tails._checkpoint
    save = checkpoint.save
    pending = [action]

    def slow_save(**kwargs: Any) -> None:
        save(**kwargs)
        if pending:
            pending.pop()()

    checkpoint.save = slow_save  # type: ignore[method-assign]


def test_rotations_during_the_checkpoint_write_of_an_opening_keep_their_order(
    tmp_path: Path,
) -> None:
    """The file at the path is opened, and while its new source is written to the checkpoint
    (an fsync, slow on a busy disk) it is rotated away and its successor too: what was opened
    takes its place among the rotations by age, and the file now at the path comes last."""
    path, tails = following(tmp_path, b"a\n")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"b\n")

    def rotate_twice() -> None:
        time.sleep(0.02)
        append(path, b"b more\n")
        path.rename(tmp_path / "in.txt.2")
        path.write_bytes(b"c\n")
        time.sleep(0.02)
        path.rename(tmp_path / "in.txt.3")
        path.write_bytes(b"d\n")

    after_next_save(tails, rotate_twice)  # the opening of b
    assert drain(tails) == b"b\nb more\nc\nd\n"


def test_copytruncate_before_the_first_read_of_a_file_since_rotated_finds_the_copy(
    tmp_path: Path,
) -> None:
    """Opened empty; filled, copied, truncated, refilled and then renamed away, all before we
    read it: the copy is older than the file's last write, so a copy, not its successor."""
    path = tmp_path / "in.txt"
    path.touch()
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    time.sleep(0.02)
    path.write_bytes(b"round 1\n")
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    time.sleep(0.02)
    append(path, b"round 2\n")
    path.rename(tmp_path / "in.txt.2")
    path.write_bytes(b"round 3\n")
    first = b"".join(body for *_, body in read_all(tails))
    assert first + drain(tails) == b"round 1\nround 2\nround 3\n"


def test_a_truncation_seen_late_does_not_hide_rotations_since_the_opening(tmp_path: Path) -> None:
    """copytruncate, then rename rotations, all seen at once: the truncation starts a new
    source, but the file was opened long before, and a file created and rotated away in
    between is still found (it is older than the new source, not than the opening)."""
    path, tails = following(tmp_path, b"a 1\n")
    time.sleep(0.02)
    append(path, b"a 2\n")
    copytruncate(path, tmp_path / "in.txt.1", preserve_mtime=False)
    append(path, b"a 3\n")
    path.rename(tmp_path / "in.txt.2")
    path.write_bytes(b"b 1\n")
    path.rename(tmp_path / "in.txt.3")
    path.write_bytes(b"c 1\n")
    time.sleep(0.02)
    first = b"".join(body for *_, body in read_all(tails))
    assert first + drain(tails) == b"a 2\na 3\nb 1\nc 1\n"


def test_copytruncate_during_the_checkpoint_write_of_an_opening_finds_the_copy(
    tmp_path: Path,
) -> None:
    """Opened with bytes in it; while its new source is written to the checkpoint it is
    copytruncated, refilled and renamed away: its first bytes are only in the copy, which is
    read first, then the rest, then the file now at the path."""
    path, tails = following(tmp_path, b"a\n")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"b 1\n")

    def copytruncate_and_rotate() -> None:
        time.sleep(0.02)
        append(path, b"b 2\n")
        copytruncate(path, tmp_path / "in.txt.2", preserve_mtime=False)
        time.sleep(0.02)
        append(path, b"b 3\n")
        path.rename(tmp_path / "in.txt.3")
        path.write_bytes(b"c\n")

    after_next_save(tails, copytruncate_and_rotate)  # the opening of b
    assert drain(tails) == b"b 1\nb 2\nb 3\nc\n"


def test_what_a_deleted_file_holds_unread_at_stop_is_shipped_or_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11 (model seed 20038): at a clean stop, a held deleted file's unread bytes are read
    first (its unterminated end too); what is still unread when time runs out is reported."""
    path, tails = following(tmp_path, b"a\n", rotation_grace=60.0)
    with path.open("ab") as handle:
        handle.write(b"b\nhalf")
    path.unlink()
    assert tails.deleted_unread()
    batch = tails.read_deleted()
    assert batch is not None and bytes(batch.body) == b"b\nhalf"
    assert not tails.deleted_unread()
    path.write_bytes(b"x\n")
    tails.check()
    with path.open("ab") as handle:
        handle.write(b"unread\n")
    path.unlink()
    tails.report_deleted_unread()
    assert lost(caplog) == [(0, 9, 9, "deleted")]


def test_a_copytruncate_right_after_a_read_leaves_the_fingerprint_of_what_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Model chaos seed 304082110: a file opened empty (no fingerprint) was read, then
    copytruncated before the fingerprint was taken by reading the file again: it found nothing,
    the source stayed without a fingerprint, and the copy was shipped again as a file nobody
    knew. The fingerprint comes from the bytes read."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    tails = make_tails(tmp_path)
    tails.check()
    path.write_bytes(b"first line\nsecond line\n")

    def copytruncate_then_cut(data: bytes, **limits: Any) -> Any:
        (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
        os.truncate(path, 0)
        return cut_batch(data, **limits)

    monkeypatch.setattr("producer.follow.cut_batch", copytruncate_then_cut)
    assert b"".join(b[3] for b in read_all(tails)) == b"first line\nsecond line\n"
    monkeypatch.undo()
    with path.open("ab") as handle:
        handle.write(b"after\n")
    assert drain(tails) == b"after\n"
    # the next rotation's scan for files nobody opened must know the copy
    (tmp_path / "in.txt.1").rename(tmp_path / "in.txt.2")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"next\n")
    assert drain(tails) == b"next\n"


def test_a_file_created_and_rotated_away_while_the_input_was_missing_is_shipped(
    tmp_path: Path,
) -> None:
    """Seen in CI under load (test_rotation_by_rename_and_create): the producer waited for a
    missing input; the file was created, written and renamed away before its next look. No
    file had been opened, so no rotation scan ran: the file was shipped by nobody."""
    tails = make_tails(tmp_path)
    assert drain(tails) == b""  # waiting for in.txt
    path = tmp_path / "in.txt"
    path.write_bytes(b"gen0 a\n")
    path.rename(tmp_path / "in.txt.0")
    path.write_bytes(b"gen1 a\n")
    assert drain(tails) == b"gen0 a\ngen1 a\n"


def test_a_copytruncate_between_the_size_and_the_head_of_a_look_ships_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rotation storm's doubled round (CI, 2026-12-06): a look took the file's size (all of
    it read), then the file was copied, cut and written again before the look read its first
    bytes. The changed head told the truncation right, but the new source kept the old size as
    'seen', so the next look took the refilled file for cut again: a false bytes_lost, and the
    new lines shipped twice."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"old line one\nold line two\nold line three\n")
    tails = make_tails(tmp_path)
    assert drain(tails) == b"old line one\nold line two\nold line three\n"
    real_fstat = os.fstat

    def stat_then_copytruncate_and_write(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        if fd == tails.tails[str(path)].files[-1].fd:
            monkeypatch.setattr("producer.follow.os.fstat", real_fstat)
            (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
            os.truncate(path, 0)
            with path.open("ab") as handle:
                handle.write(b"new 1\n")
        return st

    monkeypatch.setattr("producer.follow.os.fstat", stat_then_copytruncate_and_write)
    assert drain(tails) == b"new 1\n"
    with path.open("ab") as handle:
        handle.write(b"new 2\n")
    assert drain(tails) == b"new 2\n"
    assert tails._metrics.bytes_lost.labels("truncated")._value.get() == 0


def test_copytruncate_back_to_empty_before_anything_was_read_finds_the_copy(
    tmp_path: Path,
) -> None:
    """Model chaos seed 540003007 (a loaded machine): a file opened empty was written, copied
    and cut back to nothing between two looks. Empty, nothing read and no fingerprint, it
    looked untouched; the copy, made while we ran, was older than our checkpoint write at
    stop, so no later start took it for a rotation written while we were down: lost
    silently. A new rotation of our path, written since we opened the file while our path
    still names it, can only be its copy: read it."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"")
    (tmp_path / "in.txt.1").write_bytes(b"older rotation\n")  # there before: not our copy
    tails = make_tails(tmp_path)
    assert drain(tails) == b""
    time.sleep(0.02)  # file times tick in jiffies
    path.write_bytes(b"first 1\nfirst 2\n")
    (tmp_path / "in.txt.1").rename(tmp_path / "in.txt.2")
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())  # the copy
    os.truncate(path, 0)
    assert drain(tails) == b"first 1\nfirst 2\n"
    with path.open("ab") as handle:
        handle.write(b"second 1\n")
    assert drain(tails) == b"second 1\n"
    assert drain(tails) == b""  # the copy, and the older rotation, once: never again


def test_a_copytruncate_then_rename_before_the_first_read_ships_the_copy_first(
    tmp_path: Path,
) -> None:
    """The rotation storm on a loaded machine (2026-12-06): a file opened, then, before
    anything of it was read, written, copytruncated, written again and renamed away. The copy
    is found by the scan of the next look, after the file itself was queued as rotated: the
    order of last writes puts the copy first (nothing of the file was read yet)."""
    path, tails = following(tmp_path, b"")
    time.sleep(0.02)  # file times tick in jiffies
    path.write_bytes(b"a 1\n")
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())  # the copy
    os.truncate(path, 0)
    time.sleep(0.02)
    with path.open("ab") as handle:
        handle.write(b"b 1\n")
    path.rename(tmp_path / "in.txt.2")
    path.write_bytes(b"c 1\n")
    assert drain(tails) == b"a 1\nb 1\nc 1\n"


def test_a_copytruncate_between_a_look_and_the_first_read_ships_the_copy_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rotation storm on a loaded machine (2026-12-06): a look fingerprinted the file (and
    saw its size); before the first read, it was copied, cut and written again. The read took
    the new bytes for the fingerprinted ones: shipped under the old source, then, at the next
    look, the file 'shrank' below the size seen, a false bytes_lost, the new bytes shipped
    again and the copy never read. The read checks the fingerprint first."""
    from producer.follow import FileTail

    path, tails = following(tmp_path, b"")
    time.sleep(0.02)  # file times tick in jiffies
    path.write_bytes(b"old 1\nold 2\nold 3\n")
    real_read_from = FileTail._read_from
    done: list[bool] = []

    def copytruncate_then_read(self: FileTail, f: Any, *, final: bool) -> Any:
        if not done and os.path.getsize(path) == 18:
            done.append(True)
            (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
            os.truncate(path, 0)
            with path.open("ab") as handle:
                handle.write(b"new 1\n")
        return real_read_from(self, f, final=final)

    monkeypatch.setattr(FileTail, "_read_from", copytruncate_then_read)
    assert drain(tails) == b"old 1\nold 2\nold 3\nnew 1\n"
    monkeypatch.undo()
    assert done
    assert drain(tails) == b""
    assert tails._metrics.bytes_lost.labels("truncated")._value.get() == 0


def test_a_plain_truncate_is_said_even_when_nothing_lost_was_seen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Model chaos seeds 560005001 / 560005060 (a loaded machine): lines appended and cut away
    before any look saw them. Nobody can count them, but the cut is said: bytes_lost, at least
    nothing, from where we had read. A copytruncate after we caught up (a copy holding all we
    read) loses nothing and says nothing."""
    path, tails = following(tmp_path, b"read 1\n")
    with path.open("ab") as handle:
        handle.write(b"never seen 2\n")
    os.truncate(path, 0)
    with caplog.at_level("WARNING", logger="logship.producer.tail"):
        assert drain(tails) == b""
    lost = [r for r in caplog.records if r.getMessage() == "bytes_lost"]
    assert [(r.start, r.at_least) for r in lost] == [(7, True)]  # type: ignore[attr-defined]
    caplog.clear()
    path.write_bytes(b"next 1\n")
    assert drain(tails) == b"next 1\n"
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())  # copytruncate, caught up
    os.truncate(path, 0)
    with caplog.at_level("WARNING", logger="logship.producer.tail"):
        assert drain(tails) == b""
    assert not [r for r in caplog.records if r.getMessage() == "bytes_lost"]


def test_a_rotated_file_cut_and_refilled_before_its_first_read_keeps_its_place(
    tmp_path: Path,
) -> None:
    """The rotation storm on a loaded machine: a file taken (fingerprinted) at our path, then,
    before anything was read, copytruncated, written again and renamed away. Its copy is a
    rotation of its own; the file's new bytes are a new source in the file's place, after the
    copy (older), before the next file: nothing reported lost, nothing out of order."""
    path, tails = following(tmp_path, b"")
    time.sleep(0.02)  # file times tick in jiffies
    path.write_bytes(b"a 1\n")
    tails.check()  # takes the file with its first bytes, reads nothing yet
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())  # the copy
    os.truncate(path, 0)
    time.sleep(0.02)
    with path.open("ab") as handle:
        handle.write(b"b 1\n")
    path.rename(tmp_path / "in.txt.2")
    path.write_bytes(b"c 1\n")
    assert drain(tails) == b"a 1\nb 1\nc 1\n"
    assert tails._metrics.bytes_lost.labels("truncated")._value.get() == 0


def test_a_rewrite_sharing_the_banner_between_a_look_and_the_first_read_ships_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Model chaos seed 580007059: a look saw the file (its size, its first bytes); before the
    first read it was rewritten in place, shorter, beginning with the same banner. The read
    took the new bytes for the seen ones; the next look found the file shorter than seen, cut
    it, and read the new bytes again. A first read that ends before the size seen is of a
    file cut since: the old bytes are counted as lost, the new ones ship once."""
    from producer.follow import FileTail

    path, tails = following(tmp_path, b"")
    banner = b"=" * 70 + b"\n"  # longer than the first bytes a look keeps
    path.write_bytes(banner + b"old line\n" * 50)
    real_read_from = FileTail._read_from
    done: list[bool] = []

    def rewrite_then_read(self: FileTail, f: Any, *, final: bool) -> Any:
        if not done and f.size_seen > 100:
            done.append(True)
            path.write_bytes(banner + b"new line\n")  # same inode, O_TRUNC
        return real_read_from(self, f, final=final)

    monkeypatch.setattr(FileTail, "_read_from", rewrite_then_read)
    assert drain(tails) == banner + b"new line\n"
    assert done
    assert tails._metrics.bytes_lost.labels("truncated")._value.get() == 71 + 9 * 50


def test_a_rotated_file_rewritten_after_a_read_inside_its_fingerprint_ships_nothing_twice(
    tmp_path: Path,
) -> None:
    """The fingerprint taken at the opening covers bytes not read yet (a half line). Rotated
    away, then rewritten in place keeping the line read: the README's shared-prefix limit (it
    reads on as the old file grown). The line read is never shipped again, as a check of the
    fingerprint at the read, meant for files nothing was read of, made it."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"line 1\nhalf")
    tails = make_tails(tmp_path, rotation_grace=60.0)
    assert drain(tails) == b"line 1\n"
    path.rename(tmp_path / "in.txt.1")
    tails.check()
    with (tmp_path / "in.txt.1").open("r+b") as handle:
        handle.seek(7)
        handle.write(b"other\n")
    path.write_bytes(b"next\n")
    assert drain(tails) == b"other\nnext\n"


def test_a_rotated_file_replaced_before_its_first_read_ships_its_copy_first(
    tmp_path: Path,
) -> None:
    """The storm under CI load (2026-12-06, after the fix above): the file was taken with its
    first bytes and rotated away; only then was it seen to hold other bytes (copytruncate and
    new lines before the rename), and its copy had been made after the scan that queued it.
    Read on at once under a new source, it went ahead of its copy, found by the next scan.
    The copy, with the old first bytes, is read first, under the old source."""
    tails = make_tails(tmp_path)
    assert drain(tails) == b""  # waiting for in.txt
    path = tmp_path / "in.txt"
    path.write_bytes(b"a 1\n")
    tails.check()  # takes the file with its first bytes, reads nothing yet
    path.rename(tmp_path / "in.txt.2")
    path.write_bytes(b"c 1\n")
    tails.check()  # the file is rotated; the scan finds no copy: there is none yet
    (tmp_path / "in.txt.1").write_bytes(b"a 1\n")  # the copy, under a name the scan passed
    with (tmp_path / "in.txt.2").open("r+b") as handle:  # cut, then the next lines
        handle.truncate(0)
        handle.write(b"b 1\n")
    assert drain(tails) == b"a 1\nb 1\nc 1\n"
    assert tails._metrics.bytes_lost.labels("truncated")._value.get() == 0


def test_a_source_is_never_resumed_from_a_file_that_is_no_rotation_of_its_path(
    tmp_path: Path,
) -> None:
    """Model chaos seed 600009090: after a restart, a known source's inode number was held by
    the consumer's output beside the input (the input deleted, its number reused), holding the
    very same bytes. It was taken for the source renamed, and the output was read as input, in
    a loop. Only the source's path or a rotation of it can hold it."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"line 1\nhalf")
    tails = make_tails(tmp_path)
    assert drain(tails) == b"line 1\n"
    tails._checkpoint.save()
    tails.close()
    path.rename(tmp_path / "output.txt")  # the same inode and bytes under a name no rotation has
    again = make_tails(tmp_path)
    assert drain(again) == b""


def test_a_copy_found_at_restart_is_never_another_sources_file(tmp_path: Path) -> None:
    """Model chaos seed 600009115: a file holding one byte of a half line (its fingerprint)
    was copytruncated while the producer was down; at restart, the copy search took an older
    rotation, shipped long ago and starting with the same byte, for its copy, and shipped it
    again. A file another source knows is no copy."""
    path, tails = following(tmp_path, b"s old 1\ns old 2\n")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"s")  # the next file: a half line's first byte
    assert drain(tails) == b""
    tails._checkpoint.save()
    tails.close()
    os.truncate(path, 0)  # copytruncate while down, the copy gone (or never made)
    again = make_tails(tmp_path)
    assert drain(again) == b""


def test_a_copy_written_over_a_shipped_rotation_is_still_our_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Model chaos seed 610010059: a half line seen, not read, then copytruncated into a file
    on the inode of an older rotation, shipped and finished long ago, whose short fingerprint
    (a half line's first bytes) the copy starts with (`cp` over the old rotation in place, or
    its inode number reused after it was deleted). That source ended before the copy does: the
    copy is not its file, and is read as ours, not counted as lost."""
    path, tails = following(tmp_path, b"")
    path.write_bytes(b"s6 h")  # a half line: copytruncated, shipped from its copy as it is
    tails.check()
    copy = tmp_path / "in.txt.1"
    copy.write_bytes(path.read_bytes())
    os.truncate(path, 0)
    assert drain(tails) == b"s6 h"
    path.write_bytes(b"s6 half")  # the next half line, seen, not read
    tails.check()
    with copy.open("r+b") as handle:  # copied over the old rotation, same inode
        handle.truncate(0)
        handle.write(path.read_bytes())
    os.truncate(path, 0)
    with path.open("ab") as handle:
        handle.write(b" line\n")
    assert drain(tails) == b"s6 half line\n"
    assert lost(caplog) == []


def rotated_in_grace_when_stopped(tmp_path: Path) -> None:
    """in.txt shipped (b"s6 a\n"), renamed to in.txt.1 and still in its grace (unfinished)
    when the producer stopped; then in.txt.1 deleted by the next rotations."""
    path, tails = following(tmp_path, b"s6 a\n", rotation_grace=60.0)
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"")
    assert drain(tails) == b""  # the rotated source waits out its grace: unfinished
    tails._checkpoint.save()
    tails.close()
    (tmp_path / "in.txt.1").unlink()


def give_its_inode_number(tmp_path: Path, new_file: Path) -> None:
    """The rotated source's inode number, reused by `new_file` (written after the checkpoint),
    as the file system would give it: set in the checkpoint, its generation left as it was."""
    checkpoint = json.loads((tmp_path / "ck").read_text())
    [entry] = [e for e in checkpoint["sources"] if e["offset"] == 5]
    assert entry["gen"], "this test needs a file system with inode generations"
    entry["ino"] = new_file.stat().st_ino
    (tmp_path / "ck").write_text(json.dumps(checkpoint))
    written = (tmp_path / "ck").stat().st_mtime_ns + 1_000_000
    os.utime(new_file, ns=(written, written))


def test_a_rotated_source_is_not_resumed_from_a_new_file_on_its_inode_number_at_the_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Model chaos seed 620011227: a rotated file, shipped up to its end but still in its grace,
    was deleted by the next rotations while the producer was down, and the new file at the
    input's path got its inode number back, starting with the same bytes (every line begins
    with the same prefix). A rotated file is never back at the path: that file is new, read from
    its first byte, not resumed at the old source's offset."""
    rotated_in_grace_when_stopped(tmp_path)
    path = tmp_path / "in.txt"
    path.write_bytes(b"s6 a\nnew 2\n")
    give_its_inode_number(tmp_path, path)
    again = make_tails(tmp_path, rotation_grace=60.0)
    assert drain(again) == b"s6 a\nnew 2\n"
    assert lost(caplog) == [(5, 5, 0, "deleted")]


def test_a_consumers_output_beside_the_input_is_never_taken_for_its_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Model chaos seed 630012239: the input cut while the producer started, no copy made. The
    consumer's output beside it held exactly the bytes read, so it passed for a copy of all we
    read, and the loss of what may have been written after our last look went unreported. With
    more in it (other sources' lines), it would pass for a copy holding more, and ship them."""
    path, tails = following(tmp_path, b"line 1\nline 2\n")
    (tmp_path / "output.txt").write_bytes(b"line 1\nline 2\n")
    (tmp_path / "more.txt").write_bytes(b"line 1\nline 2\nnot ours\n")
    with path.open("ab") as handle:
        handle.write(b"line 3\n")  # written and cut again before our next look
    os.truncate(path, 0)
    path.write_bytes(b"new\n")
    assert drain(tails) == b"new\n"
    assert lost(caplog) == [(14, 14, 0, "truncated")]


def test_a_new_file_on_a_rotated_sources_inode_number_is_told_by_its_generation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Model chaos seed 630012291: a rotated file, shipped up to its end but still in its grace,
    was deleted by the next rotations while the producer was down; a new file got its inode
    number, began with the same bytes and was rotated to a rotation name. Inode number, name and
    bytes all agreed: it was resumed at the old offset, its first bytes lost. The inode's
    generation number (ext4, as here) tells the new file: it is shipped whole."""
    rotated_in_grace_when_stopped(tmp_path)
    rotated = tmp_path / "in.txt.1"
    rotated.write_bytes(b"s6 a\nnew 2\n")  # a new file, rotated while the producer was down
    give_its_inode_number(tmp_path, rotated)
    again = make_tails(tmp_path, rotation_grace=0.0)
    assert drain(again) == b"s6 a\nnew 2\n"
    assert [reason for *_, reason in lost(caplog)] == ["deleted"]


def test_after_a_copytruncate_the_file_keeps_its_own_generation_across_a_restart(
    tmp_path: Path,
) -> None:
    """Model chaos seed 640013402: the source begun in a copytruncated file took the generation
    of the copy its old source moved to; at the restart the file at the path, of another
    generation, was no longer that source: read again from its start, every line twice."""
    path, tails = following(tmp_path, b"a 1\n")
    with path.open("ab") as handle:
        handle.write(b"a 2\n")
    (tmp_path / "in.txt.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    with path.open("ab") as handle:
        handle.write(b"b 1\n")
    assert drain(tails) == b"a 2\nb 1\n"
    tails._checkpoint.save()
    tails.close()
    again = make_tails(tmp_path)
    assert drain(again) == b""
    with path.open("ab") as handle:
        handle.write(b"b 2\n")
    assert drain(again) == b"b 2\n"
