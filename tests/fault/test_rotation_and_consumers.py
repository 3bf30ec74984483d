"""Rotation storms under load, and several consumers sharing one queue."""

from __future__ import annotations

import os
import shutil
import time

from tests.fault.test_kills_and_restarts import make_lines
from tests.support.pipeline import Pipeline, wait_until


def test_rotation_storm_rename_and_copytruncate_under_load(fault_pipe: Pipeline) -> None:
    pipe = fault_pipe
    pipe.input.touch()  # the file being followed when the storm begins
    pipe.consumer().ready()
    pipe.producer("--rotation-grace", "0.3", "--batch-max-bytes", "65536").ready()
    written = 0
    for round_ in range(60):
        for _ in range(3):  # a writer appending steadily, a few hundred lines per file
            pipe.append(make_lines(written, 100))
            written += 100
            time.sleep(0.01)
        if round_ % 3 == 2:
            # copytruncate, done between two writes of ours so that it loses nothing; the copy
            # named as logrotate names it: of a file nothing was read from yet, only the name
            # (and its newness) can tell the copy
            shutil.copyfile(pipe.input, pipe.workdir / f"input.txt.{round_}")
            os.truncate(pipe.input, 0)
        else:  # rename + create, as logrotate's `create` does
            os.rename(pipe.input, pipe.workdir / f"input.txt.{round_}")
            pipe.input.touch()
    pipe.append(make_lines(written, 100))
    written += 100
    expected = make_lines(0, written)
    assert wait_until(
        lambda: pipe.output.exists() and pipe.output.stat().st_size >= len(expected), 60
    )
    time.sleep(0.5)
    out = pipe.output.read_bytes()
    assert sorted(out.splitlines()) == sorted(expected.splitlines()), "lost or doubled lines"
    assert out == expected, "lines out of order across rotations"


def test_several_consumers_union_is_the_input_each_line_once(fault_pipe: Pipeline) -> None:
    pipe = fault_pipe
    outputs = [pipe.workdir / f"output-{i}.txt" for i in range(3)]
    # --reorder-wait 0: sharing a queue, a consumer is meant not to hold batches for order, but
    # until two queue polls have shown it the others it may, and a batch it held then waits the
    # whole reorder-wait (10 s) even after the hold turned off: one run in three took 12 s, not 2
    for output in outputs:
        pipe.consumer("--prefetch", "2", "--reorder-wait", "0", output=output).ready()
    pipe.producer("--batch-max-bytes", "16384").ready()
    data = make_lines(0, 60_000)  # ~150 batches: dozens for each of the three consumers
    pipe.append(data)

    def total() -> int:
        return sum(o.stat().st_size for o in outputs if o.exists())

    assert wait_until(lambda: total() >= len(data), 90), f"{total()} of {len(data)} bytes"
    time.sleep(0.5)
    assert total() == len(data)
    lines = [line for o in outputs for line in o.read_bytes().splitlines()]
    assert sorted(lines) == sorted(data.splitlines())
    assert all(o.stat().st_size > 0 for o in outputs), "the queue was not shared"
    for o in outputs:  # each output keeps the input's order
        numbers = [int(line.split()[0]) for line in o.read_bytes().splitlines()]
        assert numbers == sorted(numbers)


def rotate(pipe: Pipeline, keep: int = 30) -> None:
    """logrotate's numbered scheme: input.txt.N → .N+1 for every N, input.txt → .1, a new
    empty input.txt (`create`)."""
    for n in range(keep, 0, -1):
        older = pipe.workdir / f"input.txt.{n}"
        if older.exists():
            older.rename(pipe.workdir / f"input.txt.{n + 1}")
    pipe.input.rename(pipe.workdir / "input.txt.1")
    pipe.input.touch()


def test_copytruncate_while_the_producer_is_down_reads_the_copy(fault_pipe: Pipeline) -> None:
    """Lines written while the producer is stopped, then copytruncate: they are only in the
    copy, in the same directory. The restarted producer reads them from there first."""
    pipe = fault_pipe
    pipe.consumer().ready()
    producer = pipe.producer().ready()
    pipe.append(make_lines(0, 1_000))
    assert pipe.wait_for_output(make_lines(0, 1_000), timeout=30) == make_lines(0, 1_000)
    assert producer.terminate() == 0
    pipe.append(make_lines(1_000, 1_000))
    shutil.copyfile(pipe.input, pipe.workdir / "input.txt.1")
    os.truncate(pipe.input, 0)
    pipe.append(make_lines(2_000, 1_000))
    pipe.producer().ready()
    expected = make_lines(0, 3_000)
    assert pipe.wait_for_output(expected, timeout=60) == expected
    time.sleep(0.5)
    assert pipe.output.read_bytes() == expected


def test_a_copytruncate_back_to_empty_just_before_a_stop_is_shipped_after_it(
    fault_pipe: Pipeline,
) -> None:
    """Model chaos seed 540003007: an empty file, written, copied and cut back to nothing, then
    SIGTERM before the producer looked again (here: polling once a minute). Its checkpoint,
    written at the stop, was newer than the copy, so the next start took the copy for one it
    knew: lost silently. The stop takes a last look first, which finds the copy. (The SIGTERM
    itself used to wait for the next poll.)"""
    pipe = fault_pipe
    pipe.input.touch()
    pipe.consumer().ready()
    producer = pipe.producer("--poll", "--poll-interval", "60").ready()
    time.sleep(0.1)  # file times tick in jiffies: the copy is newer than the opening
    pipe.append(make_lines(0, 100))
    shutil.copyfile(pipe.input, pipe.workdir / "input.txt.1")
    os.truncate(pipe.input, 0)
    asked = time.monotonic()
    assert producer.terminate() == 0
    assert time.monotonic() - asked < 10, "a SIGTERM waited for the next poll"
    pipe.append(make_lines(100, 100))
    pipe.producer().ready()
    expected = make_lines(0, 200)
    assert pipe.wait_for_output(expected, timeout=60) == expected
    time.sleep(0.5)
    assert pipe.output.read_bytes() == expected


def test_files_created_and_rotated_away_while_down_are_shipped_in_order(
    fault_pipe: Pipeline,
) -> None:
    """SIGKILL, then rotations while the producer is down (input.txt → .1 → .2 with a new .1
    written in between): every file is shipped once, oldest first, before the current one;
    rotated files already shipped are not shipped again. Five times over."""
    pipe = fault_pipe
    pipe.input.touch()
    pipe.workdir.joinpath("input.txt.1").write_bytes(b"rotated before the first start\n")
    pipe.consumer().ready()
    args = ("--rotation-grace", "0.2")
    producer = pipe.producer(*args).ready()
    written = 0
    for _ in range(5):
        for _ in range(2):  # while running, at a pace it can follow
            pipe.append(make_lines(written, 200))
            written += 200
            assert pipe.wait_for_output(make_lines(0, written), timeout=30)
            rotate(pipe)
        pipe.append(make_lines(written, 100))
        written += 100
        time.sleep(0.05)
        producer.kill()  # mid-stream: some of these lines are not confirmed yet
        for _ in range(2):  # while down: files nobody has seen come and go
            pipe.append(make_lines(written, 150))
            written += 150
            rotate(pipe)
        pipe.append(make_lines(written, 50))
        written += 50
        producer = pipe.producer(*args).ready()
    expected = make_lines(0, written)
    assert pipe.wait_for_output(expected, timeout=60) == expected
    time.sleep(0.5)
    assert pipe.output.read_bytes() == expected
