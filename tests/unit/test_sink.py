"""The sink: exactly-once appends by byte range, recovery of an unrecorded tail, rollback of a
failed write."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from consumer.sink import Sink, StateError
from logship.wire import Delivered


def ranged(source: str, start: int, body: bytes) -> Delivered:
    return Delivered(source, start, start + len(body), body.count(b"\n"), None, body)


def write(sink: Sink, *messages: Delivered) -> None:
    sink.commit(sink.plan(list(messages)))


def sink_holding_first_line(out: Path) -> Sink:
    sink = Sink(out, fsync=True)
    sink.open()
    write(sink, ranged("a", 0, b"first\n"))
    return sink


def test_duplicates_and_overlaps_are_written_once(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "out.txt", fsync=True)
    sink.open()
    write(sink, ranged("a", 0, b"one\ntwo\n"), ranged("a", 0, b"one\ntwo\n"))
    plan = sink.plan([ranged("a", 4, b"two\nthree\n")])
    assert plan.duplicates == 1 and plan.duplicate_bytes == 4 and plan.lines == 1
    sink.commit(plan)
    write(sink, Delivered(None, 0, 6, 1, None, b"plain\n"))
    sink.close()
    assert (tmp_path / "out.txt").read_bytes() == b"one\ntwo\nthree\nplain\n"


def test_restart_remembers_ranges_and_cuts_unrecorded_tail(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    sink = Sink(out, fsync=True)
    sink.open()
    write(sink, ranged("a", 0, b"kept\n"))
    sink.close()
    with out.open("ab") as handle:
        handle.write(b"written but never acknowledged\n")
    again = Sink(out, fsync=True)
    again.open()
    assert out.read_bytes() == b"kept\n"
    write(again, ranged("a", 0, b"kept\nnext\n"))
    again.close()
    assert out.read_bytes() == b"kept\nnext\n"


def test_failed_write_is_rolled_back_and_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    real_fdatasync = os.fdatasync
    calls = {"n": 0}

    def full_disk(fd: int) -> None:
        calls["n"] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full_disk)
    plan = sink.plan([ranged("a", 6, b"second\n")])
    with pytest.raises(OSError):
        sink.commit(plan)
    sink.rollback(plan)
    assert out.read_bytes() == b"first\n", "a failed write leaves no partial bytes"
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    write(sink, ranged("a", 6, b"second\n"))
    sink.close()
    assert out.read_bytes() == b"first\nsecond\n"
    assert calls["n"] == 2  # the write's data sync, and the rollback's re-save of the old state


def test_out_of_order_batch_is_counted_and_gap_filled_later(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "out.txt", fsync=False)
    sink.open()
    plan = sink.plan([ranged("a", 5, b"late\n")])
    assert plan.out_of_order == 1
    sink.commit(plan)
    write(sink, ranged("a", 0, b"old\n\n"), ranged("a", 0, b"old\n\nlate\n"))
    sink.close()
    assert (tmp_path / "out.txt").read_bytes() == b"late\nold\n\n"


def test_corrupt_state_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "out.txt.state").write_text("garbage")
    with pytest.raises(StateError, match="unreadable"):
        Sink(tmp_path / "out.txt", fsync=True).open()


def test_state_whose_sync_failed_does_not_outlive_the_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new state record reached the file but its fdatasync failed, then the consumer stopped:
    the next start must not take the rolled-back bytes as written (they would be skipped as
    duplicates when the broker delivers them again)."""
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    real_fdatasync = os.fdatasync
    calls = {"n": 0}

    def state_sync_fails(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the output's sync passes, the state record's fails
            raise OSError(errno.EIO, "Input/output error")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", state_sync_fails)
    plan = sink.plan([ranged("a", 6, b"second\n")])
    with pytest.raises(OSError):
        sink.commit(plan)
    sink.rollback(plan)
    sink.close()
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    again = Sink(out, fsync=True)
    again.open()
    write(again, ranged("a", 6, b"second\n"))  # the redelivery
    again.close()
    assert out.read_bytes() == b"first\nsecond\n"


def test_leftovers_of_a_failed_rollback_are_cut_before_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    real_ftruncate = os.ftruncate
    plan = sink.plan([ranged("a", 6, b"second\n")])
    with out.open("ab") as handle:  # part of a write the disk then refused
        handle.write(b"sec")

    def refused(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "ftruncate", refused)
    sink.rollback(plan)
    monkeypatch.setattr(os, "ftruncate", real_ftruncate)
    write(sink, ranged("a", 6, b"second\n"))
    sink.close()
    assert out.read_bytes() == b"first\nsecond\n"
