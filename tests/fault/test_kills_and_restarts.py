"""SIGKILL of either program many times at random moments, and broker restarts, while lines flow:
the output ends byte-identical to the input. `make chaos` runs the long version."""

from __future__ import annotations

import random
import time

from tests.fault.conftest import CHAOS
from tests.support.pipeline import Pipeline, Program, wait_until
from tests.support.rabbit_node import RabbitNode

LINE_WIDTH = 64


def make_lines(start: int, count: int) -> bytes:
    return b"".join(
        f"{i:09d} {'abcdefghij' * (i % 7)}\n".encode() for i in range(start, start + count)
    )


def restart(pipe: Pipeline, program: Program, *extra: str) -> Program:
    program.kill()
    return pipe.producer(*extra) if program.module == "producer" else pipe.consumer(*extra)


def test_chaos_kills_and_broker_restarts(fault_pipe: Pipeline, node: RabbitNode) -> None:
    """make test: 20 kills and 2 broker restarts over 200,000 lines; make chaos: at least 50 kills
    and 5 broker restarts over 1,000,000 lines, with a one-line summary."""
    total, kills_wanted, restarts_wanted = (1_000_000, 50, 5) if CHAOS else (200_000, 20, 2)
    rng = random.Random(7)
    pipe = fault_pipe
    producer_args = ("--batch-max-bytes", "131072", "--amqp.heartbeat", "5")
    consumer_args = ("--prefetch", "16", "--amqp.heartbeat", "5")
    producer = pipe.producer(*producer_args)
    consumer = pipe.consumer(*consumer_args)
    started = time.monotonic()
    written_lines = kills = restarts = 0
    events = ["kill"] * kills_wanted + ["restart"] * restarts_wanted
    rng.shuffle(events)
    per_event = total // len(events)
    for event in events:
        count = min(per_event, total - written_lines)
        pipe.append(make_lines(written_lines, count))
        written_lines += count
        time.sleep(rng.uniform(0.05, 0.5))
        if event == "restart":
            node.restart()
            restarts += 1
        elif rng.random() < 0.5:
            producer = restart(pipe, producer, *producer_args)
            kills += 1
        else:
            consumer = restart(pipe, consumer, *consumer_args)
            kills += 1
    if written_lines < total:
        pipe.append(make_lines(written_lines, total - written_lines))
        written_lines = total
    expected = pipe.input.read_bytes()
    assert wait_until(
        lambda: pipe.output.exists() and pipe.output.stat().st_size >= len(expected), 180, 0.2
    ), f"output stuck at {pipe.output.stat().st_size} of {len(expected)} bytes"
    time.sleep(1.0)  # a duplicate would land now
    out = pipe.output.read_bytes()
    in_lines, out_lines = expected.count(b"\n"), out.count(b"\n")
    out_set = out.splitlines()
    duplicated = len(out_set) - len(set(out_set))
    lost = len(set(expected.splitlines()) - set(out_set))
    print(
        f"\nchaos: lines in {in_lines}, lines out {out_lines}, lost {lost}, "
        f"duplicated {duplicated}, kills {kills}, broker restarts {restarts}, "
        f"time {time.monotonic() - started:.1f}s"
    )
    assert kills >= kills_wanted * 0.9 and restarts == restarts_wanted
    assert (lost, duplicated) == (0, 0)
    assert out == expected
    producer.terminate()
    consumer.terminate()


def test_broker_stopped_and_restarted_mid_stream(fault_pipe: Pipeline, node: RabbitNode) -> None:
    pipe = fault_pipe
    pipe.consumer("--amqp.heartbeat", "5")
    pipe.producer("--amqp.heartbeat", "5").ready()
    pipe.append(make_lines(0, 50_000))
    time.sleep(0.3)
    node.stop()
    pipe.append(make_lines(50_000, 50_000))  # written while the broker is down
    time.sleep(2)
    node.start()
    pipe.append(make_lines(100_000, 50_000))
    expected = make_lines(0, 150_000)
    assert pipe.wait_for_output(expected, timeout=120) == expected
