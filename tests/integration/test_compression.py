"""--compression zstd through the real programs: the broker holds compressed bodies marked
content_encoding zstd, and the output (and a rebuild from the archive) is byte for byte the
input."""

from __future__ import annotations

import os
import subprocess
import sys

import pika

from tests.support.pipeline import REPO, Pipeline


def lines(n: int) -> bytes:
    return b"".join(
        f"{i:08d} GET /api/v1/orders?id={i * 7919 % 100003} 200\n".encode() for i in range(n)
    )


def test_compressed_batches_arrive_byte_identical(pipe: Pipeline) -> None:
    data = lines(50_000)
    pipe.append(data)
    producer = pipe.producer("--compression", "zstd", "--once")
    assert producer.wait(60) == 0
    connection = pika.BlockingConnection(pika.URLParameters(pipe.topology.url))
    try:
        method, properties, body = connection.channel().basic_get(pipe.topology.queue)
        assert method is not None and properties.content_encoding == "zstd"
        end = properties.headers["x-logship-end"] - properties.headers["x-logship-start"]
        assert len(body) * 3 < end, "the body is not compressed"
    finally:
        connection.close()  # the message goes back unacknowledged
    pipe.consumer()
    assert pipe.wait_for_output(data) == data


def test_a_rebuild_from_compressed_archive_batches_is_byte_identical(pipe: Pipeline) -> None:
    data = lines(20_000)
    pipe.append(data)
    producer = pipe.producer("--compression", "zstd", "--once")
    assert producer.wait(60) == 0
    rebuilt = pipe.workdir / "rebuilt.txt"
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "rebuild", "--output", str(rebuilt)],
        env={**os.environ, **pipe.topology.env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=pipe.workdir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert rebuilt.read_bytes() == data
