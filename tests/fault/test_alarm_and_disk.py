"""A broker memory alarm (publishing blocked) and a full output disk: nothing acknowledged that is
not written, memory stays bounded, everything flows once the cause is gone."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.sink import recorded_size
from tests.fault.conftest import rss_bytes
from tests.fault.test_kills_and_restarts import make_lines
from tests.support.pipeline import IN_CI, Pipeline, wait_until
from tests.support.rabbit_node import RabbitNode

MB = 1024 * 1024


def test_memory_alarm_blocks_producer_with_bounded_memory_and_timeout(
    fault_pipe: Pipeline, node: RabbitNode
) -> None:
    pipe = fault_pipe
    consumer = pipe.consumer().ready()
    producer = pipe.producer("--amqp.blocked-timeout", "3").ready()
    pipe.append(make_lines(0, 10_000))
    assert pipe.wait_for_output(make_lines(0, 10_000), timeout=30)
    node.set_memory_alarm(True)
    try:
        # the input grows by ~200 MB while the broker refuses to take anything
        chunk = make_lines(10_000, 200_000)
        rss_samples = []
        for _ in range(16):
            pipe.append(chunk)
            assert producer.proc is not None
            rss_samples.append(rss_bytes(producer.proc.pid))
            time.sleep(0.2)
        assert wait_until(lambda: '"amqp_connection_blocked"' in producer.log(), 20)
        assert wait_until(lambda: '"amqp_blocked_timeout"' in producer.log(), 20), (
            "the blocked-connection timeout never fired"
        )
        assert producer.proc is not None
        rss_samples.append(rss_bytes(producer.proc.pid))
        assert max(rss_samples) < 120 * MB, f"producer RSS grew to {max(rss_samples) // MB} MB"
        assert pipe.output.stat().st_size < pipe.input.stat().st_size
    finally:
        node.set_memory_alarm(False)
    expected = pipe.input.read_bytes()
    assert pipe.wait_for_output(expected, timeout=180) == expected
    assert consumer.running and producer.running


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs for the output, grown later with a remount. Needs root (CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        message = f"cannot mount a tmpfs here: {result.stderr.strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["umount", "-l", str(mount)], check=False)


def test_output_disk_full_pauses_then_resumes(fault_pipe: Pipeline, tiny_disk: Path) -> None:
    pipe = fault_pipe
    output = tiny_disk / "output.txt"
    consumer = pipe.consumer(output=output).ready()
    pipe.producer("--batch-max-bytes", "65536").ready()
    data = make_lines(0, 100_000)  # ~3.5 MB: does not fit
    pipe.append(data)
    assert wait_until(lambda: '"write_failed"' in consumer.log(), 30), "disk never filled"
    time.sleep(1.0)
    assert consumer.running, "a full disk must not kill the consumer"
    size = output.stat().st_size
    assert data.startswith(output.read_bytes()), "only whole, ordered bytes on disk"
    assert recorded_size(output) == size
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    assert pipe.wait_for_output(data, timeout=60, output=output) == data
    time.sleep(0.5)
    assert output.read_bytes() == data
    assert consumer.running


def fill(disk: Path) -> Path:
    """Fill the disk to its last byte with one file; removing it frees the disk again."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def test_checkpoint_disk_full_holds_a_new_source_until_its_identity_is_saved(
    fault_pipe: Pipeline, tiny_disk: Path
) -> None:
    """The producer's checkpoint disk fills up and a rotation makes a new source: its identity
    cannot be saved, so nothing of it is published (a crash would give its bytes a second
    identity, duplicated downstream), and the producer neither exits nor spins. A kill while
    held, and a disk freed without a restart, both end byte-identical."""
    pipe = fault_pipe
    checkpoint = tiny_disk / "producer.checkpoint"
    pipe.consumer().ready()
    producer = pipe.producer(checkpoint=checkpoint).ready()
    data = make_lines(0, 1000)
    pipe.append(data)
    assert pipe.wait_for_output(data, timeout=30) == data
    expected = data
    for round, restart in enumerate((True, False)):
        filler = fill(tiny_disk)
        logged = len(producer.log())
        pipe.input.rename(pipe.input.with_name(f"input.txt.{round + 1}"))
        more = make_lines(1000 * (round + 1), 1000 * (round + 2))
        pipe.append(more)
        producer.wait_for_event("checkpoint_write_failed", after=logged)
        time.sleep(1.0)
        assert producer.running, "a full checkpoint disk must not end the producer"
        assert pipe.output.read_bytes() == expected, "published before its identity was saved"
        if restart:
            producer.kill()
            filler.unlink()
            producer = pipe.producer(checkpoint=checkpoint).ready()
        else:
            filler.unlink()
            producer.wait_for_event("checkpoint_write_recovered")
        expected += more
        assert pipe.wait_for_output(expected, timeout=30) == expected
    time.sleep(0.5)
    assert pipe.output.read_bytes() == expected


def test_output_file_size_limit_refused_write_keeps_nothing_unwritten(
    fault_pipe: Pipeline, tmp_path: Path
) -> None:
    """A write refused by a file size limit (EFBIG): the same pause and resume, as a process
    restart without the limit shows."""
    pipe = fault_pipe
    output = tmp_path / "limited.txt"
    limit = 1 * MB
    consumer = pipe.consumer(output=output)
    consumer.kill()  # restart it with a limit: run through prlimit
    consumer.args = ["--output", str(output), "--http.port", "0"]
    import sys

    assert consumer.proc is not None
    full_env = {**os.environ, "LOGSHIP_LOG__FORMAT": "json", **consumer.env}
    full_env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    with consumer.log_path.open("ab") as log:
        consumer.proc = subprocess.Popen(
            ["prlimit", f"--fsize={limit}", sys.executable, "-m", "consumer", *consumer.args],
            env=full_env,
            stdout=log,
            stderr=log,
        )
    pipe.producer("--batch-max-bytes", "65536").ready()
    data = make_lines(0, 60_000)
    pipe.append(data)
    assert wait_until(lambda: '"write_failed"' in consumer.log(), 30)
    assert consumer.running
    assert output.stat().st_size <= limit and data.startswith(output.read_bytes())
    consumer.terminate()
    pipe.consumer(output=output)
    assert pipe.wait_for_output(data, timeout=60, output=output) == data


def test_second_signal_forces_a_stuck_shutdown_and_loses_nothing(
    fault_pipe: Pipeline, node: RabbitNode
) -> None:
    """A producer whose broker blocks it cannot finish its graceful stop (no confirm comes): a
    second SIGTERM ends it at once, and the next start re-sends from its checkpoint."""
    import signal

    pipe = fault_pipe
    pipe.consumer().ready()
    producer = pipe.producer("--shutdown-timeout", "60").ready()
    node.set_memory_alarm(True)
    try:
        pipe.append(make_lines(0, 50_000))
        assert wait_until(lambda: '"amqp_connection_blocked"' in producer.log(), 20)
        producer.signal(signal.SIGTERM)
        time.sleep(1.0)
        assert producer.running, "the first signal should wait for the confirms"
        started = time.monotonic()
        producer.signal(signal.SIGTERM)
        assert producer.wait(5) == 130
        assert time.monotonic() - started < 3
        assert '"forced_exit"' in producer.log()
    finally:
        node.set_memory_alarm(False)
    pipe.producer()
    expected = make_lines(0, 50_000)
    assert pipe.wait_for_output(expected, timeout=60) == expected
    time.sleep(0.5)
    assert pipe.output.read_bytes() == expected


def test_copytruncate_while_blocked_reads_the_unread_part_from_the_copy(
    fault_pipe: Pipeline, node: RabbitNode
) -> None:
    """The broker blocks publishing, so the producer stops reading (its confirm window is full)
    while the file grows; then logrotate's copytruncate. What the producer had not read yet is
    only in the copy: it is shipped from there once the alarm clears, nothing lost."""
    pipe = fault_pipe
    pipe.consumer().ready()
    pipe.producer("--batch-max-bytes", "65536", "--max-in-flight", "2").ready()
    first = make_lines(0, 1_000)
    pipe.append(first)
    assert pipe.wait_for_output(first, timeout=30) == first
    node.set_memory_alarm(True)
    try:
        pipe.append(make_lines(1_000, 50_000))  # ~3 MB, far past two 64 KiB batches in flight
        time.sleep(1.0)
        assert pipe.output.stat().st_size < 1 * MB, "the producer was not held back"
        shutil.copyfile(pipe.input, pipe.workdir / "input.txt.1")
        os.truncate(pipe.input, 0)
        pipe.append(make_lines(51_000, 1_000))
    finally:
        node.set_memory_alarm(False)
    expected = make_lines(0, 52_000)
    assert pipe.wait_for_output(expected, timeout=120) == expected
    time.sleep(0.5)
    assert pipe.output.read_bytes() == expected


def test_copy_compressed_before_it_was_read_is_counted_and_logged_as_lost(
    fault_pipe: Pipeline, node: RabbitNode
) -> None:
    """copytruncate with `compress` and no `delaycompress` while the broker holds the producer
    back: what it had not read is only in a compressed copy, which nobody reads. That loss is
    logged once as bytes_lost with the exact range, and the rest arrives."""
    pipe = fault_pipe
    pipe.consumer().ready()
    producer = pipe.producer("--batch-max-bytes", "65536", "--max-in-flight", "2").ready()
    first = make_lines(0, 1_000)
    pipe.append(first)
    assert pipe.wait_for_output(first, timeout=30) == first
    node.set_memory_alarm(True)
    try:
        pipe.append(make_lines(1_000, 50_000))
        time.sleep(1.0)
        old = pipe.input.read_bytes()
        (pipe.workdir / "input.txt.1.gz").write_bytes(gzip.compress(old, compresslevel=1))
        os.truncate(pipe.input, 0)
        after = make_lines(51_000, 1_000)
        pipe.append(after)
    finally:
        node.set_memory_alarm(False)
    assert wait_until(lambda: '"bytes_lost"' in producer.log(), 60), producer.log()[-3000:]
    [event] = [json.loads(line) for line in producer.log().splitlines() if '"bytes_lost"' in line]
    assert event["level"] == "warning" and event["reason"] == "copy_compressed"
    assert event["path"] == str(pipe.input) and event["source"]
    assert event["end"] == len(old) and event["bytes"] == event["end"] - event["start"]
    assert len(first) <= event["start"] < len(old) - 1_000_000, "most of it was never read"
    expected = old[: event["start"]] + after
    assert pipe.wait_for_output(expected, timeout=60) == expected
    time.sleep(0.5)
    assert pipe.output.read_bytes() == expected
