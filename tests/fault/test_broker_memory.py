"""The broker's memory settings of k8s/base/rabbitmq/rabbitmq.conf, as they are, on a private node:
the watermark is the absolute value, not a share of the machine's memory; publishers that push the
node past it get connection.blocked (the logship producer among them), the node stays up with its
memory below the container's limit, and once the memory is released everything queued ships."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

from tests.fault.test_kills_and_restarts import make_lines
from tests.support.fixtures import private_node
from tests.support.pipeline import Pipeline, Topology, pipeline, wait_until
from tests.support.rabbit_node import RabbitNode, RabbitNodeError
from tests.unit.test_k8s_rules import broker_conf, broker_memory_limit, information_unit

MIB = 1024 * 1024
# What rabbitmq.conf says about memory; the rest (listeners, plugins, definitions) is the cluster's.
MEMORY_KEYS = (
    "vm_memory_high_watermark.absolute",
    "vm_memory_high_watermark.relative",
    "total_memory_available_override_value",
    "raft.wal_max_size_bytes",
)
BURST_CONNECTIONS = 4
# 1 MiB messages a flood has written but the socket not yet taken
FLOOD_WINDOW = 128


@pytest.fixture(scope="module")
def k8s_memory_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    conf = broker_conf()
    lines = [f"{key} = {conf[key]}" for key in MEMORY_KEYS if key in conf]
    assert lines, "rabbitmq.conf sets nothing about memory"
    yield from private_node(tmp_path_factory, extra_config=lines)


def watermark() -> int:
    return information_unit(broker_conf()["vm_memory_high_watermark.absolute"])


def peak_rss(node: RabbitNode) -> int:
    """The node's high-water resident memory (VmHWM): what a memory cgroup would have seen."""
    status = Path(f"/proc/{node.pid_file.read_text().strip()}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match[1]) * 1024


def memory_alarm(node: RabbitNode) -> bool:
    return "resource_limit,memory" in node.ctl("eval", "rabbit_alarm:get_alarms().")


def queued(node: RabbitNode, queue: str) -> int:
    for line in node.ctl("list_queues", "--no-table-headers", "name", "messages").splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    return 0


def blocked(connection: AbstractConnection) -> bool:
    """connection.blocked received and no unblocked since (aiormq keeps it in a private event,
    the one logship.amqp.BlockedWatchdog reads; see shared NOTES)."""
    transport = connection.transport
    if transport is None:
        return False
    event = getattr(transport.connection, "_Connection__connection_unblocked", None)
    return isinstance(event, asyncio.Event) and not event.is_set()


def test_the_watermark_is_the_absolute_value(k8s_memory_node: RabbitNode) -> None:
    """Not a fraction of /proc/meminfo's total (this machine's, or a Kubernetes node's)."""
    limit = int(k8s_memory_node.ctl("eval", "vm_memory_monitor:get_memory_limit().").strip())
    assert limit == watermark()
    assert f"Memory high watermark set to {watermark() // MIB} MiB" in (
        k8s_memory_node.log_file.read_text()
    )


class Flood:
    """Publishers that do not wait for confirms, 1 MiB persistent messages into a queue of their
    own: what pushes a node past its watermark. Records which connections were ever blocked."""

    def __init__(self, connections: list[AbstractConnection], queue: str) -> None:
        self.connections = connections
        self.queue = queue
        self.ever_blocked = [False] * len(connections)
        self.sent = 0
        self._sends: list[asyncio.Future[object]] = []

    @classmethod
    async def open(cls, url: str, queue: str) -> Flood:
        connections: list[AbstractConnection] = [
            await aio_pika.connect(url) for _ in range(BURST_CONNECTIONS)
        ]
        channel = await connections[0].channel()
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        return cls(connections, queue)

    def _note_blocked(self) -> bool:
        now = [blocked(c) for c in self.connections]
        self.ever_blocked = [was or is_ for was, is_ in zip(self.ever_blocked, now, strict=True)]
        return any(now)

    async def press(self, *, until: Callable[[], bool], cap: int, seconds: float) -> None:
        """Publish until `until()` holds or `seconds` passed, `cap` bytes at most, FLOOD_WINDOW
        messages on their way at most; pause while the broker blocks (the node's memory then
        sinks, the alarm clears, and the flood presses on)."""
        channels = [await c.channel(publisher_confirms=False) for c in self.connections]
        body = b"x" * MIB
        deadline = time.monotonic() + seconds
        while not until() and time.monotonic() < deadline:
            self._sends = [send for send in self._sends if not send.done()]
            if self._note_blocked() or self.sent >= cap or len(self._sends) >= FLOOD_WINDOW:
                await asyncio.sleep(0.05)
                continue
            for channel in channels:
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                publish = channel.default_exchange.publish(message, self.queue)
                self._sends.append(asyncio.ensure_future(publish))
                self.sent += len(body)
            await asyncio.sleep(0)
        self._note_blocked()

    async def close(self) -> None:
        for send in self._sends:
            send.cancel()
        for connection in self.connections:
            await connection.close()


def test_logship_traffic_stays_below_the_watermark(
    tmp_path: Path, k8s_memory_node: RabbitNode
) -> None:
    """The cluster's own load: a backlog several times the write-ahead log shipped by the producer
    (confirms, bounded in flight) while no consumer runs, then drained by three consumers with the
    manifests' prefetch. The node stays below the watermark: never blocked, far from the limit."""
    node = k8s_memory_node
    backlog = make_lines(0, 3_000_000)  # ~130 MiB: twice the WAL limit
    with pipeline(tmp_path, Topology(url=node.amqp_url)) as pipe:
        producer = pipe.producer().ready()
        pipe.append(backlog)
        assert wait_until(lambda: queued(node, pipe.topology.queue) >= len(backlog) // MIB, 120, 1)
        outputs = [tmp_path / f"logship-consumer-{n}.txt" for n in range(3)]
        for output in outputs:
            pipe.consumer("--prefetch", "32", output=output).ready()
        assert wait_until(
            lambda: sum(o.stat().st_size for o in outputs if o.exists()) >= len(backlog), 180, 0.5
        )
        shipped = b"".join(o.read_bytes() for o in outputs)
        assert sorted(shipped.splitlines()) == sorted(backlog.splitlines())
        assert '"amqp_connection_blocked"' not in producer.log()
    assert peak_rss(node) < watermark(), f"peak {peak_rss(node) // MIB} MiB"


async def _exercise(node: RabbitNode, pipe: Pipeline) -> None:
    """A flood pushes the node past the watermark: its connections get connection.blocked, and
    so does the logship producer publishing meanwhile; the node lives on, and once the flood's
    queue is gone the alarm clears. How far the flood overshoots the watermark depends on how
    much it has on its way (FLOOD_WINDOW) and the node's memory check (about once a second):
    with the cluster's settings it stays below the container's limit."""
    limit = broker_memory_limit()
    producer = pipe.producer("--amqp.blocked-timeout", "600").ready()
    pipe.append(make_lines(0, 20_000))
    assert await asyncio.to_thread(wait_until, lambda: queued(node, pipe.topology.queue) > 0, 30, 1)
    flood = await Flood.open(node.amqp_url, f"flood-{uuid.uuid4().hex[:8]}")
    try:
        await flood.press(until=lambda: any(flood.ever_blocked), cap=2 * limit, seconds=60)
        assert any(flood.ever_blocked), f"no connection.blocked after {flood.sent // MIB} MiB"
        # the logship producer publishing into the alarm is blocked too, and says so
        pipe.append(make_lines(20_000, 200_000))

        def producer_blocked() -> bool:
            return '"amqp_connection_blocked"' in producer.log()

        await flood.press(until=producer_blocked, cap=2 * limit, seconds=90)
        assert producer_blocked(), producer.log()[-2000:]
        assert all(flood.ever_blocked), flood.ever_blocked
        assert "vm_memory_high_watermark set" in node.log_file.read_text()
        assert node.is_running()
        print(f"flood: {flood.sent // MIB} MiB sent, node peak {peak_rss(node) // MIB} MiB")
        assert peak_rss(node) < limit, f"peak {peak_rss(node) // MIB} MiB of {limit // MIB} MiB"
    finally:
        await flood.close()
    node.ctl("delete_queue", flood.queue)
    assert await asyncio.to_thread(wait_until, lambda: not memory_alarm(node), 120, 2), (
        "the memory alarm stayed after the flood was gone"
    )


@pytest.mark.soak  # make chaos: minutes on a busy 2-core machine (timed out at 300 s in CI)
def test_a_flood_past_the_watermark_blocks_publishers_and_the_node_lives(
    tmp_path: Path, k8s_memory_node: RabbitNode
) -> None:
    with pipeline(tmp_path, Topology(url=k8s_memory_node.amqp_url)) as pipe:
        asyncio.run(_exercise(k8s_memory_node, pipe))
        producer = pipe.programs[0]
        assert wait_until(lambda: '"amqp_connection_unblocked"' in producer.log(), 30)
        pipe.consumer().ready()
        expected = pipe.input.read_bytes()
        assert pipe.wait_for_output(expected, timeout=120) == expected
    assert k8s_memory_node.is_running()


def test_a_broker_that_cannot_open_its_log_folder_does_not_boot(tmp_path: Path) -> None:
    """What a read-only root filesystem does to the image's /var/log/rabbitmq without a volume
    there, with the cluster's log settings (console only): the node refuses to boot. Hence the
    emptyDir in rabbitmq.yaml (tests/unit/test_k8s_rules.py checks it is there)."""
    conf = broker_conf()
    node = RabbitNode(
        tmp_path,
        extra_config=[f"log.file = {conf['log.file']}"],
        extra_env={"RABBITMQ_LOG_BASE": "/proc/logship-not-writable"},
    )
    with pytest.raises(RabbitNodeError):
        node.start()  # a failed start leaves no VM behind
    assert not node.is_running()
    output = node.server_output.read_text(errors="replace")
    assert "cannot_log_to_file" in output or "failed to open log file" in output, output[-2000:]
