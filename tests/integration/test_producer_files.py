"""What sits at the input path, seen through the real programs: a file rewritten in place with the
same first bytes, and things that are not regular files."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request

from tests.support.pipeline import Pipeline, free_port, wait_until

BANNER = b"".join(b"banner line %04d of the application's start\n" % i for i in range(300))


def rewrite(pipe: Pipeline, data: bytes) -> None:
    """`cat new > input.txt`: same inode, new bytes from 0."""
    with pipe.input.open("r+b") as handle:
        handle.truncate(0)
        handle.write(data)


def test_rewrite_with_the_same_banner_is_shipped_whole(pipe: Pipeline) -> None:
    """Logs that start with the same ~13 KB banner: a rewrite is a new file from its first
    byte, while the producer runs and while it is down."""
    pipe.consumer().ready()
    producer = pipe.producer().ready()
    old = BANNER + b"run 1 line 1\n"
    pipe.append(old)
    assert pipe.wait_for_output(old, timeout=30) == old
    new = BANNER + b"run 2 line 1\nrun 2 line 2, longer than the first run\n"
    rewrite(pipe, new)
    assert pipe.wait_for_output(old + new, timeout=30) == old + new
    assert producer.terminate() == 0
    newer = BANNER + b"run 3 line 1\nrun 3 line 2\nrun 3 line 3, the longest so far\n"
    rewrite(pipe, newer)
    pipe.producer().ready()
    expected = old + new + newer
    assert pipe.wait_for_output(expected, timeout=30) == expected
    time.sleep(0.5)
    assert pipe.output.read_bytes() == expected


def test_fifo_at_the_input_path_is_refused_and_sigterm_still_stops(pipe: Pipeline) -> None:
    """Rotated away and replaced by a FIFO: one error, the event loop stays free (SIGTERM
    ends the program at once), and a regular file there again is followed."""
    pipe.consumer().ready()
    producer = pipe.producer().ready()
    pipe.append(b"before\n")
    assert pipe.wait_for_output(b"before\n", timeout=30) == b"before\n"
    pipe.input.rename(pipe.workdir / "input.txt.1")
    os.mkfifo(pipe.input)
    assert wait_until(lambda: '"input_not_readable"' in producer.log(), 10), producer.log()
    assert '"kind": "FIFO"' in producer.log()
    pipe.input.unlink()
    pipe.append(b"after\n")
    assert pipe.wait_for_output(b"before\nafter\n", timeout=30) == b"before\nafter\n"
    os.unlink(pipe.input)
    os.mkfifo(pipe.input)
    time.sleep(0.5)
    started = time.monotonic()
    producer.signal(signal.SIGTERM)
    assert producer.wait(10) == 0
    assert time.monotonic() - started < 5
    assert producer.log().count('"input_not_readable"') == 2, "once per time it appeared"


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_missing_input_is_said_once_shown_by_readyz_and_followed_once_it_appears(
    pipe: Pipeline,
) -> None:
    """Started before the application wrote its log: one line says what the producer waits for
    (not one per poll), /readyz names the file and stays 200 (connected, ready to ship), and
    lines written once the file appears reach the output."""
    pipe.consumer().ready()
    port = free_port()
    producer = pipe.producer("--http.port", str(port), "--poll-interval", "0.05").ready()
    producer.wait_for_event("waiting_for_input", timeout=10)
    time.sleep(1.0)  # 20 poll intervals, and ~50 of the quick stats a missing file gets
    assert producer.log().count('"waiting_for_input"') == 1, producer.log()
    assert f'"detail": "waiting for {pipe.input} to appear"' in producer.log()
    assert readyz(port) == (200, f"ready\nwaiting for {pipe.input} to appear\n")
    lines = b"first line\nsecond line\n"
    pipe.append(lines)
    assert pipe.wait_for_output(lines, timeout=30) == lines
    producer.wait_for_event("input_appeared", timeout=10)
    assert readyz(port) == (200, "ready\n")
    assert producer.log().count('"waiting_for_input"') == 1
    assert producer.terminate() == 0
