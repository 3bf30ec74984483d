"""Poison at every layer, through the real consumer: messages whose AMQP properties the client
library cannot decode (published by another program with pika) and messages logship's own format
rejects end in the dead-letter queue within seconds, on quorum and classic queues, counted by
reason; the lines around them keep flowing, in order. replay-dead leaves such a dead letter where
it is and says so."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from typing import Any

import pika
import pytest

from logship.wire import Batch
from tests.support.amqp_client import drain, publish
from tests.support.pipeline import REPO, Pipeline, Topology, declare_topology, free_port, wait_until

BAD_ID = b"\xff\xfe"
HUGE_TS = 2**64 - 1


def depth(topology: Topology, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(topology.url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def line(start: int, body: bytes) -> tuple[bytes, pika.BasicProperties]:
    headers: dict[str, Any] = Batch("s", "x", start, start + len(body), 1, 0, body).headers()
    return body, pika.BasicProperties(headers=headers, delivery_mode=2)


def poison() -> list[tuple[bytes, pika.BasicProperties]]:
    """Four deliveries that cannot be written, one per layer."""
    return [
        (b"bad message id", pika.BasicProperties(message_id=BAD_ID, delivery_mode=2)),
        (b"bad timestamp", pika.BasicProperties(timestamp=HUGE_TS, delivery_mode=2)),
        (b"bad header key", pika.BasicProperties(headers={b"\xff": "v"}, delivery_mode=2)),
        (b"bad version", pika.BasicProperties(headers={"x-logship-version": 9})),
    ]


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_undecodable_messages_are_dead_lettered_and_lines_keep_flowing(
    pipe: Pipeline, queue_type: str
) -> None:
    topo = pipe.topology
    topo.queue_type = queue_type
    port = free_port()
    consumer = pipe.consumer("--http.port", str(port)).ready()
    bad = poison()
    messages = [
        line(0, b"one\n"),
        bad[0],
        line(4, b"two\n"),
        bad[1],
        line(8, b"three\n"),
        bad[2],
        bad[3],
        line(14, b"four\n"),
    ]
    publish(topo, messages)
    published = time.monotonic()
    expected = b"one\ntwo\nthree\nfour\n"
    assert pipe.wait_for_output(expected, timeout=10) == expected
    assert wait_until(lambda: depth(topo, topo.dead_queue) == 4, 10), consumer.log()[-3000:]
    assert time.monotonic() - published < 10
    text = metrics(port)
    assert (
        'logship_consumer_messages_dead_lettered_total{reason="undecodable_properties"} 3.0' in text
    )
    assert 'logship_consumer_messages_dead_lettered_total{reason="bad_version"} 1.0' in text
    assert "logship_consumer_reconnects_total 0.0" in text  # the connection never dropped

    dead = {body: properties for properties, body in drain(topo, topo.dead_queue)}
    assert set(dead) == {b"bad message id", b"bad timestamp", b"bad header key", b"bad version"}
    # rejected, so the broker kept the original bytes
    assert dead[b"bad message id"].message_id == BAD_ID
    assert dead[b"bad timestamp"].timestamp == HUGE_TS
    assert (dead[b"bad header key"].headers or {}).get(b"\xff") == "v"
    for body in (b"bad message id", b"bad timestamp", b"bad header key"):
        deaths = (dead[body].headers or {})["x-death"]
        assert deaths[0]["reason"] == "rejected"
        assert deaths[0]["queue"] == topo.queue

    log = consumer.log()
    assert log.count('"event": "message_dead_lettered"') == 4
    assert "message_id=b'\\\\xff\\\\xfe' (UnicodeDecodeError)" in log
    assert f"timestamp={HUGE_TS}" in log and '"delivery_tag": ' in log


def test_replay_dead_leaves_an_undecodable_dead_letter_where_it_is(pipe: Pipeline) -> None:
    topo = pipe.topology
    declare_topology(topo, pipe.workdir)
    dead_exchange = f"{topo.prefix}.dead"
    publish(
        topo,
        [(b"first", pika.BasicProperties()), poison()[0], (b"second", pika.BasicProperties())],
        exchange=dead_exchange,
    )
    # a routing key that is not UTF-8 reaches the fanout dead-letter queue too
    connection = pika.BlockingConnection(pika.URLParameters(topo.url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(dead_exchange, b"\xff", b"third")
    finally:
        connection.close()
    env = {**topo.env(), "PYTHONPATH": str(REPO), "LOGSHIP_LOG__FORMAT": "text"}
    moved = subprocess.run(
        [sys.executable, "-m", "consumer", "replay-dead"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert moved.returncode == 0, moved.stderr
    assert "moved 3 message(s)" in moved.stdout, moved.stdout
    assert "left 1 undecodable message(s)" in moved.stdout
    assert "message_id=b'\\xff\\xfe'" in moved.stderr
    pipe.consumer()
    expected = b"first\nsecond\nthird\n"
    assert pipe.wait_for_output(expected, timeout=30) == expected
    left = drain(topo, topo.dead_queue)
    assert [(p.message_id, body) for p, body in left] == [(BAD_ID, b"bad message id")]
