"""The core promise, through the real programs and a real broker: output.txt holds exactly the bytes
of input.txt up to its last newline, once, in order."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from tests.support.pipeline import Pipeline, Program, sha256, wait_until


def lines(n: int, tag: str = "line", width: int = 60) -> bytes:
    return b"".join(f"{tag} {i:08d} {'x' * (i % width)}\n".encode() for i in range(n))


def test_lines_one_at_a_time_and_in_bursts(pipe: Pipeline) -> None:
    pipe.input.touch()
    pipe.consumer()
    pipe.producer()
    expected = b""
    for i in range(50):
        line = f"single {i}\n".encode()
        pipe.append(line)
        expected += line
        time.sleep(0.005)
    burst = lines(50_000, "burst")
    pipe.append(burst)
    expected += burst
    assert pipe.wait_for_output(expected) == expected


def test_binary_crlf_nul_invalid_utf8_and_empty_lines(pipe: Pipeline) -> None:
    data = (
        b"crlf line\r\n"
        b"\x00\x00nul bytes\x00\n"
        b"\xff\xfe\xc3\x28 invalid utf-8 \xed\xa0\x80\n"
        b"\n\n"
        b"lone cr\rinside\n" + bytes(range(256)).replace(b"\n", b"") + b"\n"
    )
    pipe.append(data)
    pipe.consumer()
    pipe.producer()
    assert pipe.wait_for_output(data) == data


def test_partial_line_is_held_until_its_newline(pipe: Pipeline) -> None:
    pipe.consumer()
    pipe.producer()
    pipe.append(b"complete\npartial-")
    assert pipe.wait_for_output(b"complete\n") == b"complete\n"
    time.sleep(0.5)
    assert pipe.output.read_bytes() == b"complete\n", "a partial line must not be shipped"
    pipe.append(b"now finished\n")
    expected = b"complete\npartial-now finished\n"
    assert pipe.wait_for_output(expected) == expected


def test_line_longer_than_a_batch_spans_several_messages(pipe: Pipeline) -> None:
    long_line = os.urandom(300_000).replace(b"\n", b"n") + b"\n"
    data = b"before\n" + long_line + b"after\n"
    pipe.consumer()
    pipe.producer("--batch-max-bytes", "65536")
    pipe.append(data)
    assert pipe.wait_for_output(data) == data


def test_rotation_by_rename_and_create(pipe: Pipeline) -> None:
    pipe.consumer()
    pipe.producer("--rotation-grace", "0.5").ready()
    expected = b""
    for generation in range(4):
        chunk = lines(2_000, f"gen{generation}")
        pipe.append(chunk)
        expected += chunk
        time.sleep(0.2)
        os.rename(pipe.input, pipe.workdir / f"input.txt.{generation}")
        late = f"late write to rotated file {generation}\n".encode()
        pipe.append(late, pipe.workdir / f"input.txt.{generation}")
        expected += late
    tail = lines(1_000, "final")
    pipe.append(tail)
    expected += tail
    assert pipe.wait_for_output(expected) == expected


def test_rotation_by_copytruncate(pipe: Pipeline) -> None:
    pipe.consumer()
    pipe.producer().ready()
    first = lines(5_000, "before-truncate")
    pipe.append(first)
    assert pipe.wait_for_output(first) == first
    (pipe.workdir / "input.txt.1").write_bytes(pipe.input.read_bytes())
    os.truncate(pipe.input, 0)
    time.sleep(0.3)
    second = lines(3_000, "after-truncate")
    pipe.append(second)
    assert pipe.wait_for_output(first + second) == first + second


def test_delete_and_recreate_and_missing_at_start(pipe: Pipeline) -> None:
    pipe.consumer()
    pipe.producer().ready()  # input.txt does not exist yet: the producer waits for it
    time.sleep(0.5)
    first = lines(1_000, "first-life")
    pipe.append(first)
    assert pipe.wait_for_output(first) == first
    pipe.input.unlink()
    time.sleep(0.3)
    second = lines(1_000, "second-life")
    pipe.append(second)
    assert pipe.wait_for_output(first + second) == first + second


def test_restart_of_producer_and_consumer_mid_stream(pipe: Pipeline) -> None:
    data = lines(100_000, "restart")
    pipe.append(data[: len(data) // 3])
    consumer = pipe.consumer().ready()  # a SIGTERM before start-up ends is another test's
    producer = pipe.producer().ready()
    time.sleep(0.3)
    assert producer.terminate() == 0
    pipe.append(data[len(data) // 3 : 2 * len(data) // 3])
    assert consumer.terminate() == 0
    pipe.producer()
    time.sleep(0.5)
    pipe.append(data[2 * len(data) // 3 :])
    pipe.consumer()
    assert pipe.wait_for_output(data) == data


def _catches_sigterm(program: Program) -> bool:
    """True once the process has a SIGTERM handler (the kernel's SigCgt mask): from then on a
    SIGTERM is the program's to handle, not the interpreter's default death."""
    assert program.proc is not None
    try:
        status = Path(f"/proc/{program.proc.pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def test_sigterm_while_starting_is_a_graceful_stop(pipe: Pipeline) -> None:
    """A pod deleted while it starts: a SIGTERM during the imports (~0.4 s), the settings or the
    connect is a clean stop with exit 0 (it used to end the process with -15), nothing lost."""
    data = lines(1000, "early")
    pipe.append(data)
    for delay in (0.0, 0.1, 0.3):
        programs = (pipe.consumer(), pipe.producer())
        assert wait_until(lambda p=programs: all(_catches_sigterm(x) for x in p), 10)  # type: ignore[misc]
        consumer, producer = programs
        time.sleep(delay)
        assert consumer.terminate() == 0, consumer.log()[-2000:]
        assert producer.terminate() == 0, producer.log()[-2000:]
    pipe.consumer()
    pipe.producer()
    assert pipe.wait_for_output(data) == data


def test_sigterm_while_busy_loses_and_duplicates_nothing(pipe: Pipeline) -> None:
    data = lines(500_000, "busy")  # large enough to still be flowing when the signals land
    pipe.append(data)
    consumer = pipe.consumer("--prefetch", "4")
    producer = pipe.producer("--batch-max-bytes", "32768")
    assert wait_until(lambda: pipe.output.exists() and pipe.output.stat().st_size > 100_000, 30)
    started = time.monotonic()
    consumer.signal(signal.SIGTERM)
    producer.signal(signal.SIGTERM)
    assert consumer.wait(30) == 0
    assert producer.wait(30) == 0
    assert time.monotonic() - started < 25
    assert pipe.output.stat().st_size < len(data), "stopped too late to prove anything"
    pipe.consumer()
    pipe.producer()
    assert pipe.wait_for_output(data) == data
    assert sha256(pipe.output) == sha256(pipe.input)


def test_random_sigkill_of_both_while_200k_lines_flow(pipe: Pipeline) -> None:
    rng = random.Random(20261123)
    total = 200_000
    data = lines(total, "kill")
    consumer = pipe.consumer("--prefetch", "8")
    producer = pipe.producer("--batch-max-bytes", "65536")
    written = 0
    kills = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (written < len(data) or kills < 8):
        step = min(len(data) - written, rng.randint(100_000, 600_000))
        if step:
            cut = data.rfind(b"\n", written, written + step) + 1 or written + step
            pipe.append(data[written:cut])
            written = cut
        time.sleep(rng.uniform(0.05, 0.4))
        if rng.random() < 0.5:
            producer.kill()
            producer = pipe.producer("--batch-max-bytes", "65536")
        else:
            consumer.kill()
            consumer = pipe.consumer("--prefetch", "8")
        kills += 1
    assert written == len(data)
    out = pipe.wait_for_output(data, timeout=120)
    time.sleep(1.0)  # anything extra (a duplicate) would arrive now
    out = pipe.output.read_bytes()
    assert len(out) == len(data), f"output {len(out)} bytes, input {len(data)} bytes"
    assert out == data
