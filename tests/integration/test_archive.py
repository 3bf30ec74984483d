"""The archive through the real programs and broker: every shipped batch is kept in a stream, and
`logship-consumer rebuild` turns it back into an output exactly once: after a lost disk, into a
half-written output, across kills, from a time, as a second sink, and saying what retention took."""

from __future__ import annotations

import functools
import json
import os
import random
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from consumer.statefile import read_record
from tests.support.pipeline import REPO, Pipeline, Program, declare_topology, wait_until
from tests.support.tcp_proxy import TcpProxy


def lines(n: int, tag: str) -> bytes:
    return b"".join(f"{tag} {i:07d}\n".encode() for i in range(n))


def ship_once(pipe: Pipeline, *extra: str) -> None:
    """Ship what input.txt holds now and wait for the broker's confirms (so the archive holds
    it: a confirm comes once every queue the batch is routed to has it)."""
    producer = pipe.producer("--once", *extra)
    assert producer.wait(120) == 0, producer.log()[-3000:]


def rebuild(
    pipe: Pipeline, output: Path, *extra: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "rebuild", "--output", str(output), *extra],
        env={
            **os.environ,
            **pipe.topology.env(),
            "PYTHONPATH": str(REPO),
            "LOGSHIP_LOG__FORMAT": "json",
        },
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=pipe.workdir,
    )


def rebuild_program(
    pipe: Pipeline, output: Path, *extra: str, env: dict[str, str] | None = None
) -> Program:
    program = Program(
        "consumer",
        ["rebuild", "--output", str(output), *extra],
        {**pipe.topology.env(), **(env or {})},
        pipe.workdir / f"rebuild-{output.name}.log",
    )
    pipe.programs.append(program)
    return program.start()


def events(text: str, name: str) -> list[dict[str, object]]:
    found = []
    for line in text.splitlines():
        if line.startswith("{") and f'"event": "{name}"' in line:
            found.append(json.loads(line))
    return found


def holds(path: Path, size: int) -> bool:
    return path.exists() and path.stat().st_size >= size


def drop_output(path: Path) -> None:
    path.unlink()
    path.with_name(path.name + ".state").unlink()


def test_rebuild_after_the_consumers_output_and_state_are_lost_is_byte_identical(
    pipe: Pipeline,
) -> None:
    data = lines(50_000, "lost")  # ~40 batches: the size itself proves nothing here
    pipe.append(data)
    consumer = pipe.consumer()
    ship_once(pipe, "--batch-max-bytes", "16384")
    assert pipe.wait_for_output(data) == data
    assert consumer.terminate() == 0
    drop_output(pipe.output)

    result = rebuild(pipe, pipe.output)

    assert result.returncode == 0, result.stderr[-3000:]
    assert pipe.output.read_bytes() == data
    (finished,) = events(result.stderr, "rebuild_finished")
    assert finished["lines"] == 50_000 and finished["sources_incomplete"] == 0


def test_rebuild_into_a_half_written_output_adds_only_what_it_lacks(pipe: Pipeline) -> None:
    first, second = lines(30_000, "first"), lines(30_000, "second")
    pipe.append(first)
    consumer = pipe.consumer()
    ship_once(pipe, "--batch-max-bytes", "16384")
    assert pipe.wait_for_output(first) == first
    assert consumer.terminate() == 0
    pipe.append(second)
    ship_once(pipe, "--batch-max-bytes", "16384")  # while the consumer is down: queue and archive

    result = rebuild(pipe, pipe.output)

    assert result.returncode == 0, result.stderr[-3000:]
    assert pipe.output.read_bytes() == first + second
    (finished,) = events(result.stderr, "rebuild_finished")
    assert finished["bytes"] == len(second)
    # the consumer then finds the second half in its queue, already written: nothing twice
    again = pipe.consumer()
    assert wait_until(lambda: queue_depth(pipe) == 0, 60), "the work queue was not drained"
    assert again.terminate() == 0
    assert pipe.output.read_bytes() == first + second


def queue_depth(pipe: Pipeline) -> int:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(pipe.topology.url))
    try:
        declared = connection.channel().queue_declare(pipe.topology.queue, passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


def test_a_rebuild_stopped_and_killed_three_times_resumes_to_a_byte_identical_output(
    pipe: Pipeline,
) -> None:
    data = lines(200_000, "kill")
    pipe.append(data)
    ship_once(pipe, "--batch-max-bytes", "1024")  # 2,600 messages: a rebuild to kill midway
    target = pipe.workdir / "restored.txt"
    sizes = []
    # a stop, then three kills at random moments (fractions of the rebuild, each past the last)
    moments = sorted(random.uniform(0.05, 0.9) for _ in range(4))
    for attempt, fraction in enumerate(moments):
        program = rebuild_program(pipe, target, "--prefetch", "1")
        size = int(fraction * len(data))
        reached = wait_until(functools.partial(holds, target, size), 60, interval=0.002)
        if attempt == 0:
            assert program.terminate() == 1, "stopped before the end: exit 1, run it again"
            assert '"event": "rebuild_stopped"' in program.log()
        else:
            program.kill()
        assert reached, program.log()[-3000:]
        sizes.append(target.stat().st_size)
        assert data.startswith(target.read_bytes())
    assert sizes[-1] < len(data), "the rebuild ended before the last kill: make it longer"

    result = rebuild(pipe, target)

    assert result.returncode == 0, result.stderr[-3000:]
    assert target.read_bytes() == data
    (started,) = events(result.stderr, "rebuild_started")
    assert started["resumed"] is True
    assert sizes == sorted(sizes) and sizes[-1] > 0


def test_since_rebuilds_exactly_the_lines_shipped_after_it_and_until_the_ones_before(
    pipe: Pipeline,
) -> None:
    before = lines(20_000, "before")
    pipe.append(before + b"straddling line begun before the time")
    pipe.consumer()
    producer = pipe.producer().ready()
    assert pipe.wait_for_output(before) == before
    time.sleep(1.1)  # the producer read `before` well before the time
    moment = datetime.now(UTC)
    time.sleep(0.2)
    after = b", ended after it\n" + lines(20_000, "after")
    pipe.append(after)
    everything = before + b"straddling line begun before the time" + after
    assert pipe.wait_for_output(everything) == everything
    assert producer.terminate() == 0

    since = rebuild(pipe, pipe.workdir / "since.txt", "--since", moment.isoformat())
    until = rebuild(pipe, pipe.workdir / "until.txt", "--until", moment.isoformat())

    assert since.returncode == 0, since.stderr[-3000:]
    assert until.returncode == 0, until.stderr[-3000:]
    # the line begun before the time was read (and shipped) whole, after it
    assert (pipe.workdir / "since.txt").read_bytes() == everything[len(before) :]
    assert (pipe.workdir / "until.txt").read_bytes() == before


def test_a_second_sink_follows_the_archive_across_restarts_identical_to_the_output(
    pipe: Pipeline,
) -> None:
    audit = pipe.workdir / "audit.txt"
    pipe.consumer()
    pipe.producer("--batch-max-bytes", "8192").ready()
    sink = rebuild_program(pipe, audit, "--follow")
    sink.wait_for_event("rebuild_started")
    expected = b""
    for round_ in range(6):
        chunk = lines(5_000, f"round{round_}")
        pipe.append(chunk)
        expected += chunk
        time.sleep(0.3)
        if round_ == 1:
            assert sink.terminate() == 0
            sink = rebuild_program(pipe, audit, "--follow")
        elif round_ == 3:
            sink.kill()
            sink = rebuild_program(pipe, audit, "--follow")
    assert pipe.wait_for_output(expected) == expected
    assert pipe.wait_for_output(expected, output=audit) == expected
    time.sleep(0.5)  # nothing more arrives: no duplicate after the last line
    assert audit.read_bytes() == pipe.output.read_bytes() == expected
    assert sink.terminate() == 0


def test_retention_drops_old_data_and_rebuild_says_what_it_cannot_restore(
    pipe: Pipeline,
) -> None:
    tiny = ("--archive.max-age", "2s", "--archive.segment-bytes", "20000")
    old = lines(5_000, "old")
    pipe.append(old)
    ship_once(pipe, "--batch-max-bytes", "4096", *tiny)
    time.sleep(3)  # older than the archive's max age; dropped once later segments roll
    new = lines(5_000, "new")
    pipe.append(new)
    ship_once(pipe, "--batch-max-bytes", "4096", *tiny)
    target = pipe.workdir / "restored.txt"

    result = rebuild(pipe, target)

    assert result.returncode == 3, result.stderr[-3000:]
    message = re.search(r"holds it from byte (\d+); (\d+) byte\(s\) before that", result.stderr)
    assert message is not None, result.stderr[-3000:]
    first, missing = int(message[1]), int(message[2])
    assert 0 < first == missing <= len(old)
    assert "it can rebuild from then on" in result.stderr
    # what it holds is rebuilt, from a line boundary: the rest of the input, exactly
    assert target.read_bytes() == (old + new)[first:]
    (finished,) = events(result.stderr, "rebuild_finished")
    assert finished["sources_incomplete"] == 1


def test_a_rebuild_and_a_second_sink_go_on_after_their_connection_is_cut(
    pipe: Pipeline,
) -> None:
    broker = urlsplit(pipe.topology.url)
    data = lines(100_000, "cut")
    pipe.append(data)
    ship_once(pipe, "--batch-max-bytes", "1024")
    with TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672) as proxy:
        through = {"LOGSHIP_AMQP__URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/"}
        restored, audit = pipe.workdir / "restored.txt", pipe.workdir / "audit.txt"
        rebuilding = rebuild_program(pipe, restored, "--prefetch", "1", env=through)
        sink = rebuild_program(pipe, audit, "--follow", "--prefetch", "1", env=through)
        assert wait_until(functools.partial(holds, restored, len(data) // 4), 60, 0.002)
        proxy.cut()
        time.sleep(1)
        proxy.restore()
        assert rebuilding.wait(60) == 0, rebuilding.log()[-3000:]
        assert restored.read_bytes() == data
        more = lines(1_000, "after the cut")
        pipe.append(more)
        ship_once(pipe)
        assert pipe.wait_for_output(data + more, output=audit) == data + more
        assert sink.terminate() == 0
    assert "archive_reader_reopened" in rebuilding.log()
    assert "archive_reader_reopened" in sink.log()


def test_poison_and_foreign_messages_in_the_archive_are_skipped_and_counted(
    pipe: Pipeline,
) -> None:
    import pika

    data = lines(1_000, "good")
    pipe.append(data)
    ship_once(pipe)
    connection = pika.BlockingConnection(pika.URLParameters(pipe.topology.url))
    try:
        channel = connection.channel()
        key = pipe.topology.prefix
        channel.basic_publish(key, key, b"a line from another program")
        bad = {"x-logship-version": 1, "x-logship-source": "s", "x-logship-start": 0}
        channel.basic_publish(key, key, b"no end header\n", pika.BasicProperties(headers=bad))
    finally:
        connection.close()
    target = pipe.workdir / "restored.txt"

    result = rebuild(pipe, target)

    assert result.returncode == 0, result.stderr[-3000:]
    assert target.read_bytes() == data
    (finished,) = events(result.stderr, "rebuild_finished")
    assert (finished["poison_skipped"], finished["foreign_skipped"]) == (1, 1)
    (skipped,) = events(result.stderr, "archive_message_skipped")
    assert skipped["kind"] == "bad_header"


def test_a_missing_archive_is_one_line_and_leaves_no_file(pipe: Pipeline) -> None:
    target = pipe.workdir / "restored.txt"

    result = rebuild(pipe, target, "--archive.queue", f"{pipe.topology.prefix}.nothing")

    assert result.returncode == 2
    assert result.stderr.count("logship: error:") == 1, result.stderr
    assert f"queue '{pipe.topology.prefix}.nothing' does not exist" in result.stderr
    assert not target.exists() and not target.with_name("restored.txt.state").exists()


def test_archive_settings_that_differ_from_the_stream_stop_the_start_in_one_line(
    pipe: Pipeline,
) -> None:
    declare_topology(pipe.topology, pipe.workdir, "--archive.max-age", "1D")
    consumer = pipe.consumer()  # the default, 7D

    assert consumer.wait(60) == 2
    assert (
        f"queue '{pipe.topology.archive}' exists with different arguments (x-max-age: '1D' "
        "there, '7D' wanted): delete it or set --archive.max-age 1D"
    ) in consumer.log()


def test_the_consumer_reports_the_archives_oldest_entry_and_its_retention(
    pipe: Pipeline,
) -> None:
    import urllib.request

    from tests.support.pipeline import free_port

    pipe.append(lines(100, "aged"))
    ship_once(pipe)
    time.sleep(1.5)
    port = free_port()
    pipe.consumer("--http.port", str(port)).ready()

    def metric(name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        return float(found[1]) if found else float("nan")

    age = "logship_consumer_archive_oldest_entry_age_seconds"
    assert wait_until(lambda: metric(age) >= 1.0, 30), metric(age)
    assert metric(age) < 120
    assert metric("logship_consumer_archive_max_age_seconds") == 7 * 86400


def test_path_and_source_pick_one_input_files_lines(pipe: Pipeline) -> None:
    logs = pipe.workdir / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(lines(3_000, "a"))
    (logs / "b.log").write_bytes(lines(3_000, "b"))
    ship_once(pipe, "--input", str(logs / "*.log"))
    only_a = pipe.workdir / "a.txt"

    result = rebuild(pipe, only_a, "--path", str(logs / "a.log"))

    assert result.returncode == 0, result.stderr[-3000:]
    assert only_a.read_bytes() == lines(3_000, "a")
    record = read_record(only_a.with_name("a.txt.state"))  # a.log's source identity
    assert record is not None
    (source,) = json.loads(record[2])["sources"]
    by_source = pipe.workdir / "by-source.txt"
    result = rebuild(pipe, by_source, "--source", source)
    assert result.returncode == 0, result.stderr[-3000:]
    assert by_source.read_bytes() == lines(3_000, "a")
