"""Failures the model (test_model.py) found, reduced to a few steps against the real programs.
Each failed on the producer of its day and guards its fix."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.support.pipeline import Pipeline, wait_until


def new_file_with_inode(path: Path, inode: int, data: bytes, tries: int = 50) -> bool:
    """Create `path` holding `data` on the freed inode number `inode`, as ext4 soon hands it out
    again: new files are made until one gets it, then renamed into place."""
    spares = []
    try:
        for n in range(tries):
            spare = path.with_name(f".spare-{n}")
            spare.write_bytes(data)
            if spare.stat().st_ino == inode:
                spare.rename(path)
                return True
            spares.append(spare)
        return False
    finally:
        for spare in spares:
            spare.unlink()


def settled_output(pipe: Pipeline, last: bytes) -> bytes:
    """The output once `last` arrived and a moment passed for anything late."""
    wait_until(lambda: pipe.output.exists() and pipe.output.read_bytes().endswith(last), 30)
    time.sleep(1.0)
    return pipe.output.read_bytes()


def test_copytruncate_right_after_the_first_write_keeps_the_lines_in_the_copy(
    pipe: Pipeline,
) -> None:
    """Model seeds 1021, 1024, 1025, 1029, 1039: logrotate's copytruncate of a young file,
    within milliseconds of a write, lost every line of it although the copy sat next to it."""
    pipe.input.touch()
    pipe.consumer().ready()
    pipe.producer("--rotation-grace", "0.3").ready()
    time.sleep(0.5)  # the producer is following the empty file
    before = b"".join(b"line %d\n" % i for i in range(5))
    pipe.append(before)
    shutil.copyfile(pipe.input, pipe.workdir / "input.txt.1")
    os.truncate(pipe.input, 0)
    pipe.append(b"after\n")
    assert settled_output(pipe, b"after\n") == before + b"after\n"


def test_a_file_that_reuses_a_deleted_inputs_inode_is_not_shipped(pipe: Pipeline) -> None:
    """Model seed 1035 shipped the producer's own producer.checkpoint.tmp (left by a SIGKILL
    during a save) as log lines: it had the inode number of a deleted, unfinished source."""
    pipe.input.touch()
    pipe.consumer().ready()
    producer = pipe.producer()
    producer.ready()
    time.sleep(0.5)
    producer.kill()  # the checkpoint holds input.txt's inode and an empty fingerprint
    inode = pipe.input.stat().st_ino
    pipe.input.unlink()
    other = pipe.workdir / "notes.txt"  # not a log: nothing the input pattern names
    if not new_file_with_inode(other, inode, b"not a log line: secret=hunter2\n"):
        pytest.skip("this filesystem did not hand the inode number out again")
    pipe.append(b"real line\n")
    pipe.producer().ready()
    assert settled_output(pipe, b"real line\n") == b"real line\n"


def test_a_new_input_reusing_the_inode_of_the_deleted_one_is_shipped_whole(
    pipe: Pipeline,
) -> None:
    """Model seed 10046 (default op kinds): kill, delete, new input.txt, restart lost the first
    298 bytes of the new file. A long checkpoint interval stands for a SIGKILL that came before
    the checkpoint write recording the bytes read."""
    pipe.input.touch()
    pipe.consumer().ready()
    producer = pipe.producer("--checkpoint-interval", "60")
    producer.ready()
    old = b"".join(b"old line %d\n" % i for i in range(20))
    pipe.append(old)
    assert pipe.wait_for_output(old, timeout=20) == old
    producer.kill()
    inode = pipe.input.stat().st_ino
    pipe.input.unlink()
    new = b"".join(b"new line %d\n" % i for i in range(30))
    if not new_file_with_inode(pipe.workdir / "input.txt", inode, new):
        pytest.skip("this filesystem did not hand the inode number out again")
    pipe.producer().ready()
    assert settled_output(pipe, b"new line 29\n") == old + new


def test_copytruncate_of_a_file_read_to_its_end_ships_nothing_twice(pipe: Pipeline) -> None:
    """Model seed 7004 on the producer-files branch (90eb653): the producer noticed the
    truncation while the file was empty, then the first write to it made the copy of the old
    content, newer than its opening, look like a copy of the new one: shipped again."""
    pipe.input.touch()
    pipe.consumer().ready()
    pipe.producer("--rotation-grace", "0.3").ready()
    before = b"".join(b"before %d\n" % i for i in range(11))
    pipe.append(before)
    assert pipe.wait_for_output(before, timeout=20) == before
    time.sleep(0.3)  # checkpointed: logrotate comes when the file is quiet
    shutil.copyfile(pipe.input, pipe.workdir / "input.txt.1")
    os.truncate(pipe.input, 0)
    time.sleep(0.5)  # the producer sees the empty file
    pipe.append(b"after\n")
    assert settled_output(pipe, b"after\n") == before + b"after\n"


def test_a_clean_stop_ships_what_a_deleted_file_still_holds(pipe: Pipeline) -> None:
    """Model seed 20038: SIGTERM while the producer held a deleted file with bytes it had not
    shipped (here the unterminated end, waiting out a long rotation grace): closed at exit,
    nobody could read them after a restart. A clean stop ships them first."""
    pipe.input.touch()
    pipe.consumer().ready()
    producer = pipe.producer("--rotation-grace", "60")
    producer.ready()
    pipe.append(b"line 1\n")
    assert pipe.wait_for_output(b"line 1\n", timeout=20) == b"line 1\n"
    pipe.append(b"the unterminated end")
    time.sleep(0.5)  # read up to its last newline: the end waits for a writer to finish it
    pipe.input.unlink()
    time.sleep(0.5)  # seen deleted: a rotation, drained within the grace
    assert producer.terminate() == 0
    assert settled_output(pipe, b"end") == b"line 1\nthe unterminated end"
