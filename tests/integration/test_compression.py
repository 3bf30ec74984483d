"""--compression zstd through the real programs: the broker holds compressed bodies marked
content_encoding zstd, and the output is byte for byte the input."""

from __future__ import annotations

import pika

from tests.support.pipeline import Pipeline


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
