"""The network between the programs and the broker cut (connections reset) or partitioned
(nothing moves, heartbeats lapse) while lines flow: nothing lost, nothing twice."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.fault.test_kills_and_restarts import make_lines
from tests.support.pipeline import Pipeline, Topology, wait_until
from tests.support.rabbit_node import RabbitNode
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def proxy(node: RabbitNode) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", node.amqp_port) as p:
        yield p


def through(proxy: TcpProxy, topology: Topology) -> dict[str, str]:
    return {"LOGSHIP_AMQP__URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/"}


def test_connections_cut_while_publishing_and_consuming(
    fault_pipe: Pipeline, proxy: TcpProxy
) -> None:
    pipe = fault_pipe
    env = through(proxy, pipe.topology)
    pipe.consumer("--amqp.heartbeat", "2", env=env).ready()
    pipe.producer("--amqp.heartbeat", "2", "--batch-max-bytes", "65536", env=env).ready()
    written = 0
    for _ in range(4):
        pipe.append(make_lines(written, 40_000))
        written += 40_000
        time.sleep(0.15)  # mid-stream: some batches in flight, some in hand
        proxy.cut()
        time.sleep(0.5)
        proxy.restore()
    expected = make_lines(0, written)
    assert pipe.wait_for_output(expected, timeout=90) == expected
    time.sleep(0.5)
    assert pipe.output.read_bytes() == expected
    assert "amqp_reconnected" in pipe.programs[0].log() + pipe.programs[1].log()


def test_partition_detected_by_heartbeat_then_healed(fault_pipe: Pipeline, proxy: TcpProxy) -> None:
    pipe = fault_pipe
    env = through(proxy, pipe.topology)
    consumer = pipe.consumer("--amqp.heartbeat", "1", env=env).ready()
    producer = pipe.producer("--amqp.heartbeat", "1", env=env).ready()
    pipe.append(make_lines(0, 20_000))
    assert pipe.wait_for_output(make_lines(0, 20_000), timeout=30)
    proxy.blackhole()
    pipe.append(make_lines(20_000, 20_000))
    # aiormq gives up on a connection that heard nothing for a few heartbeats
    stuck = "No frames were received"
    assert wait_until(lambda: stuck in producer.log() and stuck in consumer.log(), 30), (
        "heartbeat loss not detected"
    )
    proxy.restore()
    expected = make_lines(0, 40_000)
    assert pipe.wait_for_output(expected, timeout=90) == expected
    time.sleep(0.5)
    assert pipe.output.read_bytes() == expected
    assert consumer.running and producer.running
