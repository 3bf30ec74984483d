"""The sink: exactly-once appends by byte range, recovery of an unrecorded tail, rollback of a
failed write."""

from __future__ import annotations

import errno
import gzip
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from consumer.outputcopy import Tail
from consumer.sink import Sink, StateError
from consumer.statefile import StateFile
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


def test_failed_write_is_rolled_back_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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


# --- the output rotated under a running sink (logrotate) and at restart ----------------------


def held_paths() -> list[str]:
    """What this process holds open, as /proc shows it (a deleted file ends in ' (deleted)')."""
    held = []
    for entry in Path("/proc/self/fd").iterdir():
        try:
            held.append(os.readlink(entry))
        except OSError:
            continue
    return held


def test_renamed_output_is_let_go_and_writing_goes_on_in_a_new_file(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    rotations: list[str] = []
    sink = Sink(out, fsync=True, on_rotated=rotations.append)
    sink.open()
    write(sink, ranged("a", 0, b"first\n"))
    out.rename(tmp_path / "out.txt.1")
    assert sink.follow() == "rename"
    assert str(tmp_path / "out.txt.1") not in held_paths(), "the rotated file is released"
    assert out.exists() and out.stat().st_size == 0
    write(sink, ranged("a", 0, b"first\nsecond\n"))  # a redelivery overlapping the old file
    sink.close()
    assert (tmp_path / "out.txt.1").read_bytes() == b"first\n"
    assert out.read_bytes() == b"second\n"
    assert rotations == ["rename"]


def test_rename_then_create_is_noticed_by_the_next_write(tmp_path: Path) -> None:
    """logrotate's default `create`, with no SIGHUP: the write itself follows the path."""
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    out.rename(tmp_path / "out.txt.1")
    out.touch()
    write(sink, ranged("a", 6, b"second\n"))
    assert sink.follow() is None
    sink.close()
    assert (tmp_path / "out.txt.1").read_bytes() == b"first\n"
    assert out.read_bytes() == b"second\n"


def test_a_rename_waits_a_moment_for_logrotates_create(tmp_path: Path) -> None:
    """logrotate creates the new file with O_EXCL just after its rename; had the consumer created
    it first, logrotate would move the consumer's file aside as a `.backup` and report an error."""
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    refused: list[OSError] = []

    def logrotate_create() -> None:
        time.sleep(0.03)
        try:
            os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
        except OSError as error:
            refused.append(error)

    out.rename(tmp_path / "out.txt.1")
    creator = threading.Thread(target=logrotate_create)
    creator.start()
    write(sink, ranged("a", 6, b"second\n"))
    creator.join()
    sink.close()
    assert not refused, "the consumer created the file logrotate was about to create"
    assert out.read_bytes() == b"second\n" and out.stat().st_mode & 0o777 == 0o640


def test_deleted_output_is_replaced_by_a_new_file(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    out.unlink()
    assert sink.follow() == "delete"
    assert f"{out} (deleted)" not in held_paths()
    write(sink, ranged("a", 6, b"second\n"))
    sink.close()
    assert out.read_bytes() == b"second\n"


def test_a_group_written_into_a_file_deleted_under_it_is_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted between the check and the write: acknowledging bytes nobody can read would lose
    them; written again into the new file, no one sees them twice."""
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    real_fdatasync = os.fdatasync
    deleted: list[bool] = []

    def delete_first(fd: int) -> None:
        if not deleted:
            deleted.append(True)
            out.unlink()
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", delete_first)
    write(sink, ranged("a", 6, b"second\n"))
    sink.close()
    assert out.read_bytes() == b"second\n"


@pytest.mark.parametrize("how", ["copytruncate", "truncate-to-empty"])
def test_truncated_output_is_appended_to_from_its_new_end_without_zeros(
    tmp_path: Path, how: str
) -> None:
    out = tmp_path / "out.txt"
    rotations: list[str] = []
    sink = Sink(out, fsync=True, on_rotated=rotations.append)
    sink.open()
    write(sink, ranged("a", 0, b"first\n"))
    if how == "copytruncate":
        (tmp_path / "out.txt.1").write_bytes(out.read_bytes())
        os.truncate(out, 0)
    else:
        out.open("wb").close()  # `: > out.txt`
    write(sink, ranged("a", 6, b"second\n"))
    sink.close()
    assert out.read_bytes() == b"second\n"
    assert rotations == ["truncate"]
    again = Sink(out, fsync=True)
    again.open()
    write(again, ranged("a", 0, b"first\nsecond\nthird\n"))
    again.close()
    assert out.read_bytes() == b"second\nthird\n", "ranges outlive the truncation"


@pytest.mark.parametrize("rotate", ["rename", "truncate"])
def test_output_rotated_while_stopped_is_a_new_base_not_a_hole(tmp_path: Path, rotate: str) -> None:
    """A state larger than the output at start: the output is taken as it is (no zeros), and the
    ranges still skip what the rotated-away part held."""
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    write(sink, ranged("a", 6, b"second\n"))
    sink.close()
    if rotate == "rename":
        out.rename(tmp_path / "out.txt.1")
        out.write_bytes(b"")
    else:
        os.truncate(out, 3)  # whatever shrank it: never extended again
    rotations: list[str] = []
    again = Sink(out, fsync=True, on_rotated=rotations.append)
    again.open()
    write(again, ranged("a", 0, b"first\nsecond\nthird\n"))
    again.close()
    kept = b"" if rotate == "rename" else b"fir"
    assert out.read_bytes() == kept + b"third\n"
    assert rotations == [rotate]


def test_crash_between_rotation_and_its_record_neither_loses_nor_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    out.rename(tmp_path / "out.txt.1")
    out.touch()

    def crash(payload: bytes) -> None:
        raise OSError(errno.EIO, "killed here")

    monkeypatch.setattr(sink._state, "write", crash)
    with pytest.raises(OSError):
        sink.follow()  # the process dies before the rotation is recorded
    monkeypatch.undo()
    again = Sink(out, fsync=True)
    again.open()
    write(again, ranged("a", 0, b"first\n"), ranged("a", 6, b"second\n"))
    again.close()
    assert (tmp_path / "out.txt.1").read_bytes() + out.read_bytes() == b"first\nsecond\n"


def test_crash_after_rotation_cuts_the_unrecorded_tail_of_the_new_file(tmp_path: Path) -> None:
    """The new base is recorded before anything is written at it: bytes written after it and
    never recorded are cut at restart, as in an unrotated file."""
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    out.rename(tmp_path / "out.txt.1")
    assert sink.follow() == "rename"
    with out.open("ab") as handle:  # written, then killed before the state record
        handle.write(b"second\n")
    again = Sink(out, fsync=True)
    again.open()
    assert out.read_bytes() == b""
    write(again, ranged("a", 0, b"first\nsecond\n"))
    again.close()
    assert (tmp_path / "out.txt.1").read_bytes() + out.read_bytes() == b"first\nsecond\n"


def test_an_unrecorded_tail_renamed_away_while_stopped_is_cut_there(tmp_path: Path) -> None:
    """Model chaos seed 560005006: written, killed before the state record, then the output
    renamed away (logrotate) before the restart opened it. The restart creates a new output;
    the renamed file's unrecorded tail comes again and must not stay in the old file too."""
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    sink.close()
    with out.open("ab") as handle:  # written, then killed before the state record
        handle.write(b"second\n")
    out.rename(tmp_path / "out.txt.1")
    (tmp_path / "out.txt.2.gz").write_bytes(b"not ours, whatever its inode")
    again = Sink(out, fsync=True)
    again.open()
    write(again, ranged("a", 0, b"first\nsecond\n"))
    again.close()
    assert (tmp_path / "out.txt.1").read_bytes() + out.read_bytes() == b"first\nsecond\n"


@pytest.mark.parametrize("how", ["rename", "copytruncate"])
def test_state_file_rotated_by_a_careless_glob_is_rebuilt_at_its_path(
    tmp_path: Path, how: str
) -> None:
    out = tmp_path / "out.txt"
    state = tmp_path / "out.txt.state"
    sink = sink_holding_first_line(out)
    write(sink, ranged("a", 6, b"second\n"))  # the state file is now written in place
    if how == "rename":
        state.rename(tmp_path / "out.txt.state.1")
    else:
        os.truncate(state, 0)
    write(sink, ranged("a", 13, b"third\n"))
    sink.close()
    again = Sink(out, fsync=True)
    again.open()
    write(again, ranged("a", 0, b"first\nsecond\nthird\n"))
    again.close()
    assert out.read_bytes() == b"first\nsecond\nthird\n"


def test_rollback_never_extends_a_file_truncated_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.txt"
    sink = sink_holding_first_line(out)
    plan = sink.plan([ranged("a", 6, b"second\n")])

    def full_disk(fd: int) -> None:
        os.truncate(out, 0)  # logrotate's copytruncate, right as the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full_disk)
    with pytest.raises(OSError):
        sink.commit(plan)
    monkeypatch.undo()
    sink.rollback(plan)
    assert b"\0" not in out.read_bytes()
    write(sink, ranged("a", 6, b"second\n"))
    sink.close()
    assert b"\0" not in out.read_bytes()


@pytest.mark.parametrize(
    "payload",
    [
        b"null",
        b"[]",
        b"{}",
        b'{"version":1,"size":0,"sources":[]}',
        b'{"version":1,"size":"12","sources":{}}',
        b'{"version":1,"size":-1,"sources":{}}',
        b'{"version":1,"size":0,"sources":{"a":5}}',
        b'{"version":1,"size":0,"sources":{"a":[[1,2,3]]}}',
        b'{"version":1,"size":0,"sources":{"a":[["x","y"]]}}',
        b'{"version":1,"size":0,"sources":{"a":[[5,1]]}}',
        b'{"version":1,"size":0,"sources":{},"touched":{"a":"soon"}}',
        b'{"version":1,"size":0,"sources":{},"touched":[]}',
        b'{"version":1,"size":0,"ino":"x","sources":{}}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_every_malformed_state_shape_is_a_state_error(tmp_path: Path, payload: bytes) -> None:
    StateFile(tmp_path / "out.txt.state", durable=False).write(payload)
    with pytest.raises(StateError, match="unreadable"):
        Sink(tmp_path / "out.txt", fsync=True).open()


# --- copytruncate on the output: what the copy missed is put back, or counted ----------------


class Seen:
    """What a sink reported through its callbacks."""

    def __init__(self) -> None:
        self.rotated: list[str] = []
        self.lost: list[tuple[str, int]] = []
        self.repaired: list[int] = []

    def sink(self, out: Path, **options: int) -> Sink:
        sink = Sink(
            out,
            fsync=True,
            on_rotated=self.rotated.append,
            on_lost=lambda reason, n: self.lost.append((reason, n)),
            on_repaired=self.repaired.append,
            **options,
        )
        sink.open()
        return sink


LINES = [f"line {i:04d} {'x' * (i % 37)}\n".encode() for i in range(400)]


def stream_writer(sink: Sink) -> Callable[[int, int], None]:
    """Writes LINES[a:b] as one batch of source "a" (offsets follow on)."""
    offsets = [0]
    for line in LINES:
        offsets.append(offsets[-1] + len(line))

    def lines(a: int, b: int) -> None:
        write(sink, ranged("a", offsets[a], b"".join(LINES[a:b])))

    return lines


def copytruncate(out: Path, copy: Path, between: Callable[[], None]) -> None:
    """logrotate's copytruncate, with the consumer writing `between` the copy and the cut."""
    shutil.copyfile(out, copy)
    between()
    os.truncate(out, 0)


def test_copytruncate_copy_found_the_bytes_it_missed_are_put_back_first(tmp_path: Path) -> None:
    out, seen = tmp_path / "out.txt", Seen()
    sink = seen.sink(out)
    lines = stream_writer(sink)
    lines(0, 100)
    copytruncate(out, tmp_path / "out.txt.1", lambda: lines(100, 150))
    lines(150, 200)  # the write finds the cut, puts back 100..150, then appends
    lines(200, 250)
    sink.close()
    assert (tmp_path / "out.txt.1").read_bytes() + out.read_bytes() == b"".join(LINES[:250])
    assert seen.repaired == [len(b"".join(LINES[100:150]))]
    assert seen.lost == [] and seen.rotated == ["truncate"]
    again = seen.sink(out)  # the repair was recorded: nothing cut or written again at restart
    write(again, ranged("a", 0, b"".join(LINES[:250])))
    again.close()
    assert (tmp_path / "out.txt.1").read_bytes() + out.read_bytes() == b"".join(LINES[:250])


def test_copytruncate_found_by_the_timer_check_while_idle(tmp_path: Path) -> None:
    out, seen = tmp_path / "out.txt", Seen()
    sink = seen.sink(out)
    lines = stream_writer(sink)
    lines(0, 100)
    copytruncate(out, tmp_path / "out.txt-20261201", lambda: lines(100, 101))
    assert sink.follow() == "truncate"
    assert out.read_bytes() == LINES[100]
    lines(101, 120)
    sink.close()
    assert (tmp_path / "out.txt-20261201").read_bytes() + out.read_bytes() == b"".join(LINES[:120])
    assert seen.repaired == [len(LINES[100])]


@pytest.mark.parametrize("moment", ["before-write", "during-write", "during-fsync"])
def test_copytruncate_under_a_write_neither_loses_nor_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """Cut between the write's check and its bytes, or after they reached the old file (before
    or after the copy took them): what landed in the new file is unrecorded and written again
    in order, what the copy holds is not."""
    out, seen = tmp_path / "out.txt", Seen()
    sink = seen.sink(out)
    lines = stream_writer(sink)
    lines(0, 100)
    real_writev, real_fdatasync = os.writev, os.fdatasync
    done: list[bool] = []

    def writev(fd: int, buffers: Sequence[memoryview]) -> int:
        if done or moment == "during-fsync":
            return real_writev(fd, buffers)
        done.append(True)
        shutil.copyfile(out, tmp_path / "out.txt.1")
        if moment == "before-write":
            os.truncate(out, 0)
            return real_writev(fd, buffers)
        written = real_writev(fd, buffers)  # after the copy, before the cut: in neither file
        os.truncate(out, 0)
        return written

    def fdatasync(fd: int) -> None:
        if moment == "during-fsync" and not done and fd == sink._fd:
            done.append(True)
            shutil.copyfile(out, tmp_path / "out.txt.1")  # holds this write's bytes too
            os.truncate(out, 0)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "writev", writev)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    lines(100, 150)
    monkeypatch.undo()
    lines(150, 200)
    sink.close()
    assert (tmp_path / "out.txt.1").read_bytes() + out.read_bytes() == b"".join(LINES[:200])
    assert seen.lost == [] and seen.rotated == ["truncate"]


def test_output_emptied_under_a_write_counts_what_reached_it_and_writes_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone took the output's bytes (to memory, elsewhere) and emptied it after a write
    reached it, before the write was recorded: that write is gone with the rest, counted with
    it, not written again (the taker has it)."""
    out, seen = tmp_path / "out.txt", Seen()
    sink = seen.sink(out)
    lines = stream_writer(sink)
    lines(0, 100)
    real_fdatasync = os.fdatasync
    taken: list[bytes] = []

    def fdatasync(fd: int) -> None:
        if not taken and fd == sink._fd:
            taken.append(out.read_bytes())
            out.open("wb").close()
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    lines(100, 150)
    monkeypatch.undo()
    lines(150, 200)
    sink.close()
    assert taken[0] + out.read_bytes() == b"".join(LINES[:200])
    assert seen.lost == [("truncated", len(b"".join(LINES[:150])))]


def test_copytruncate_compressed_at_once_is_counted(tmp_path: Path) -> None:
    out, seen = tmp_path / "out.txt", Seen()
    sink = seen.sink(out)
    lines = stream_writer(sink)
    lines(0, 100)
    copy = tmp_path / "out.txt.1"
    copytruncate(out, copy, lambda: lines(100, 150))
    (tmp_path / "out.txt.1.gz").write_bytes(gzip.compress(copy.read_bytes()))
    copy.unlink()
    lines(150, 200)
    sink.close()
    assert seen.lost == [("copy_unverified", len(b"".join(LINES[100:150])))]
    assert seen.repaired == [] and out.read_bytes() == b"".join(LINES[150:200])


def test_copytruncate_compressed_while_idle_loses_nothing(tmp_path: Path) -> None:
    """An idle consumer: the gzip'd copy holds all that was written (its trailer says so)."""
    out, seen = tmp_path / "out.txt", Seen()
    sink = seen.sink(out)
    stream_writer(sink)(0, 100)
    (tmp_path / "out.txt.1.gz").write_bytes(gzip.compress(out.read_bytes()))
    os.truncate(out, 0)
    assert sink.follow() == "truncate"
    sink.close()
    assert seen.lost == [] and seen.repaired == []


def test_output_emptied_by_hand_is_counted_as_truncated(tmp_path: Path) -> None:
    out, seen = tmp_path / "out.txt", Seen()
    sink = seen.sink(out)
    lines = stream_writer(sink)
    lines(0, 100)
    out.open("wb").close()  # `: > out.txt`: discarded on purpose, counted so it is visible
    lines(100, 150)
    sink.close()
    assert seen.lost == [("truncated", len(b"".join(LINES[:100])))]
    assert out.read_bytes() == b"".join(LINES[100:150])


def test_copy_further_back_than_the_tail_held_is_counted(tmp_path: Path) -> None:
    out, seen = tmp_path / "out.txt", Seen()
    sink = seen.sink(out, tail_bytes=1000)
    lines = stream_writer(sink)
    lines(0, 100)
    copytruncate(out, tmp_path / "out.txt.1", lambda: lines(100, 150))  # > 1000 bytes
    lines(150, 200)
    sink.close()
    assert seen.lost == [("copy_unverified", len(b"".join(LINES[100:150])))]
    assert seen.repaired == [] and out.read_bytes() == b"".join(LINES[150:200])


@pytest.mark.parametrize(
    "other", ["different-bytes", "older-than-the-content", "the-state-file", "named-otherwise"]
)
def test_a_file_that_is_not_the_copy_is_not_used(tmp_path: Path, other: str) -> None:
    out, seen = tmp_path / "out.txt", Seen()
    sink = seen.sink(out)
    lines = stream_writer(sink)
    lines(0, 100)
    size = out.stat().st_size
    lines(100, 150)
    held = out.read_bytes()
    candidate = tmp_path / "out.txt.1"
    if other == "different-bytes":
        candidate.write_bytes(held[: size - 1] + b"?")
    elif other == "older-than-the-content":  # a rotation from before: same bytes by chance
        candidate.write_bytes(held[:size])
        os.utime(candidate, (time.time() - 3600, time.time() - 3600))
    elif other == "named-otherwise":  # the producer's input, say: the same bytes, not a copy
        (tmp_path / "input.txt").write_bytes(held)
    os.truncate(out, 0)
    lines(150, 200)
    sink.close()
    reason = "truncated"
    assert seen.repaired == [] and seen.lost == [(reason, len(held))]
    assert out.read_bytes() == b"".join(LINES[150:200])


def test_tail_keeps_the_last_bytes_by_offset_across_wraps() -> None:
    tail = Tail(10)
    tail.append(b"abcdefgh")
    tail.append(b"ijklmn")  # wraps
    assert (tail.start, tail.end) == (4, 14)
    assert tail.get(4, 14) == b"efghijklmn" and tail.get(9, 12) == b"jkl"
    tail.append(b"0123456789ABC")  # larger than the ring
    assert tail.get(tail.start, tail.end) == b"3456789ABC" and tail.end == 27
    tail.rebase(10)
    assert tail.get(0, 10) == b"3456789ABC"
    with pytest.raises(ValueError):
        tail.get(-1, 5)


@pytest.mark.parametrize("seed", range(20))
def test_tail_holds_what_a_plain_copy_of_the_stream_holds(seed: int) -> None:
    """Appends of every size (views of larger bodies too), resets and rebases, checked against
    the stream kept whole."""
    rng = random.Random(seed)
    capacity = rng.choice([1, 7, 64, 100])
    tail, stream, base = Tail(capacity), b"", 0
    for step in range(300):
        roll = rng.random()
        if roll < 0.03:
            base = rng.randrange(1000)
            tail.reset(base)
            stream = b""
            continue
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 2 * capacity + 3)))
        cut = rng.randrange(len(body) + 1)
        piece = memoryview(body)[cut:] if roll < 0.5 else body[cut:]
        tail.append(piece)
        stream += bytes(piece)
        held = stream[-capacity:] if capacity else b""
        assert (tail.start, tail.end) == (base + len(stream) - len(held), base + len(stream))
        assert tail.get(tail.start, tail.end) == held, step
        if held:
            a, b = sorted(rng.randrange(tail.start, tail.end + 1) for _ in range(2))
            assert tail.get(a, b) == stream[a - base : b - base]
