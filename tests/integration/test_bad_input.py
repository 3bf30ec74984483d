"""Garbage in the queue and in the file: plain messages are appended, broken ones dead-lettered
with the reason, the queue keeps flowing; huge lines arrive whole; dead letters can be replayed."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pika

from logship.wire import Batch
from tests.support.amqp_client import drain, persistent
from tests.support.amqp_client import publish as publish_all
from tests.support.pipeline import REPO, Pipeline, Topology, declare_topology, wait_until


def publish(
    topology: Topology,
    body: bytes,
    headers: dict[str, Any] | None = None,
    exchange: str | None = None,
) -> None:
    publish_all(topology, [(body, persistent(headers))], exchange)


def drain_queue(topology: Topology, queue: str) -> list[tuple[dict[str, Any], bytes]]:
    return [(properties.headers or {}, body) for properties, body in drain(topology, queue)]


def ranged(source: str, start: int, body: bytes) -> dict[str, Any]:
    return Batch(source, "x", start, start + len(body), body.count(b"\n"), 0, body).headers()


def test_foreign_and_broken_messages(pipe: Pipeline) -> None:
    topo = pipe.topology
    pipe.consumer().ready()
    huge = b"h" * (8 * 1024 * 1024)
    publish(topo, b"plain line")
    publish(topo, b"")
    publish(topo, b"bad types", {**ranged("s", 0, b"bad types"), "x-logship-start": "zero"})
    publish(topo, b"short", {**ranged("s", 0, b"short"), "x-logship-end": 99})
    publish(topo, b"abc\n", {**ranged("s", 0, b"abc\n"), "x-logship-version": 2})
    publish(topo, b"0123456789", ranged("s", 0, b"0123456789"))
    publish(topo, b"56789ABCDE", ranged("s", 5, b"56789ABCDE"))  # overlaps: only ABCDE is new
    publish(topo, huge)
    publish(topo, b"still flowing")
    expected = b"plain line\n\n0123456789ABCDE" + huge + b"\nstill flowing\n"
    assert pipe.wait_for_output(expected, timeout=60) == expected
    dead = drain_queue(topo, topo.dead_queue)
    reasons = sorted(str(h.get("x-logship-dead-reason")) for h, _ in dead)
    assert len(dead) == 3, reasons
    assert any("x-logship-start must be an integer" in r for r in reasons)
    assert any("does not fit" in r for r in reasons)
    assert any("unsupported wire version" in r for r in reasons)
    assert {body for _, body in dead} == {b"bad types", b"short", b"abc\n"}


def test_fifty_mib_line_without_newline(pipe: Pipeline) -> None:
    pipe.consumer().ready()
    producer = pipe.producer().ready()
    blob = b"L" * (50 * 1024 * 1024)
    pipe.append(b"before\n" + blob)
    assert wait_until(lambda: '"line_oversized"' in producer.log(), 30)
    pipe.append(b"\nafter\n")
    expected = b"before\n" + blob + b"\nafter\n"
    assert pipe.wait_for_output(expected, timeout=120) == expected


def test_replay_dead_letters_dry_run_then_move(pipe: Pipeline) -> None:
    topo = pipe.topology
    # declare the topology, then put two messages straight into the dead-letter exchange
    declare_topology(topo, pipe.workdir)
    for body in (b"first dead", b"second dead"):
        publish(
            topo, body, {"x-logship-dead-reason": "disk was broken"}, exchange=f"{topo.prefix}.dead"
        )
    env = {**topo.env(), "PYTHONPATH": str(REPO), "LOGSHIP_LOG__FORMAT": "text"}
    dry = subprocess.run(
        [sys.executable, "-m", "consumer", "replay-dead", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert "would move 2 message(s)" in dry.stdout and "disk was broken" in dry.stdout
    time.sleep(0.5)
    moved = subprocess.run(
        [sys.executable, "-m", "consumer", "replay-dead"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert moved.returncode == 0 and "moved 2 message(s)" in moved.stdout, moved.stderr
    pipe.consumer()
    expected = b"first dead\nsecond dead\n"
    assert pipe.wait_for_output(expected, timeout=30) == expected
    assert drain_queue(topo, topo.dead_queue) == []


def test_delivery_limit_stops_endless_redelivery(pipe: Pipeline) -> None:
    topo = pipe.topology
    declare_topology(topo, pipe.workdir, "--amqp.delivery-limit", "2")
    publish(topo, b"keeps failing")
    connection = pika.BlockingConnection(pika.URLParameters(topo.url))
    try:
        channel = connection.channel()
        for _ in range(6):  # a consumer that crashes on it: requeued again and again
            method, _, _ = channel.basic_get(topo.queue)
            if method is None:
                break
            channel.basic_nack(method.delivery_tag, requeue=True)
    finally:
        connection.close()
    dead = drain_queue(topo, topo.dead_queue)
    assert [body for _, body in dead] == [b"keeps failing"]
    assert dead[0][0]["x-death"][0]["reason"] == "delivery_limit"
