"""A three-node RabbitMQ cluster under the real programs, streaming fast: the node leading the
quorum queue is killed, the node each program is connected to is stopped, every node restarts in
turn. The output ends byte-identical to the input, and the longest time no line reached the
output (the failover gap) is printed."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.support.pipeline import (
    Pipeline,
    Program,
    Topology,
    free_port,
    pipeline,
    wait_until,
)
from tests.support.rabbit_cluster import RabbitCluster, parallel
from tests.support.rabbit_node import RabbitNode, RabbitNodeError, find_scripts_dir
from tests.support.tcp_proxy import TcpProxy

# lines/s the writer aims at: the floor; LOGSHIP_CLUSTER_RATE to find this machine's ceiling
RATE = int(os.environ.get("LOGSHIP_CLUSTER_RATE", "20000"))
PRODUCER_ARGS = ("--amqp.heartbeat", "5", "--batch-max-bytes", "262144")
CONSUMER_ARGS = ("--amqp.heartbeat", "5", "--prefetch", "16", "--fsync", "never")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    try:
        find_scripts_dir()
    except RabbitNodeError as exc:
        pytest.skip(str(exc))
    with RabbitCluster(tmp_path_factory.mktemp("cluster")) as started:
        try:
            yield started
        finally:
            started.discard()  # thrown away: a clean stop of three nodes proves nothing here


@pytest.fixture
def cluster_pipe(tmp_path: Path, cluster: RabbitCluster) -> Iterator[Pipeline]:
    for node in cluster.nodes:  # a test that failed midway may have left one down
        if not node.is_running():
            node.start()
    cluster.wait_running(len(cluster.nodes))
    topology = Topology(url=cluster.amqp_url)
    with pipeline(tmp_path, topology) as pipe:
        yield pipe
    _delete_topology(cluster, topology)


def _delete_topology(cluster: RabbitCluster, topology: Topology) -> None:
    """Topology.delete speaks to one URL: here, to whichever node is up."""
    for node in cluster.nodes:
        if node.is_running():
            with contextlib.suppress(Exception):
                Topology(prefix=topology.prefix, url=node.amqp_url).delete()
                return


class Writer(threading.Thread):
    """Appends numbered lines to the input at `rate` lines/s in 20 ms steps for `seconds`, or
    until `done` is set."""

    def __init__(self, path: Path, rate: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.path, self.rate, self.seconds = path, rate, seconds
        self.lines = 0
        self.elapsed = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        step = 0.02
        per_step = max(1, int(self.rate * step))
        started = time.monotonic()
        with self.path.open("ab") as handle:
            while (now := time.monotonic()) - started < self.seconds and not self.done.is_set():
                due = int((now - started) * self.rate) + per_step
                if due > self.lines:
                    handle.write(
                        b"".join(
                            f"{i:010d} cluster {'z' * (i % 40)}\n".encode()
                            for i in range(self.lines, due)
                        )
                    )
                    handle.flush()
                    self.lines = due
                time.sleep(step)
        self.elapsed = time.monotonic() - started


class GapMeter(threading.Thread):
    """Samples the output size every 10 ms: the longest time it did not grow, from the first byte
    until `stop` (set once the input is all written)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.gap = 0.0
        self.first: float | None = None

    def run(self) -> None:
        size, changed = 0, time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            current = self.path.stat().st_size if self.path.exists() else 0
            if current != size:
                if size:
                    self.gap = max(self.gap, now - changed)
                else:
                    self.first = now
                size, changed = current, now
            time.sleep(0.01)


CONNECTED = ('"amqp_node_connected"', '"producer_started"', '"consumer_consuming"')


def connected_address(program: Program) -> str:
    """The address a program last said it connected to (started line, then reconnections)."""
    node = None
    for line in program.log().splitlines():
        if any(event in line for event in CONNECTED):
            node = json.loads(line)["node"]
    assert node is not None, program.log()[-2000:]
    return str(node)


def connected_node(program: Program, cluster: RabbitCluster) -> RabbitNode:
    return cluster.node_by_port(int(connected_address(program).rsplit(":", 1)[1]))


def connections_made(program: Program) -> int:
    return sum(program.log().count(event) for event in CONNECTED)


def reconnected(program: Program, before: int) -> bool:
    return connections_made(program) > before


def stream(
    pipe: Pipeline,
    seconds: float,
    faults: Callable[[Program, Program], None],
    *,
    until_faults_end: bool = False,
    producer_args: tuple[str, ...] = (),
    consumer_args: tuple[str, ...] = (),
) -> tuple[Writer, GapMeter]:
    """Run both programs, write for `seconds` at RATE while `faults` runs (or until they end and
    2 s more), then check the output is the input byte for byte; print rate and failover gap."""
    pipe.input.touch()
    consumer = pipe.consumer(*CONSUMER_ARGS, *consumer_args).ready(60)
    producer = pipe.producer(*PRODUCER_ARGS, *producer_args).ready(60)
    writer, meter = Writer(pipe.input, RATE, seconds), GapMeter(pipe.output)
    meter.start()
    writer.start()
    faults(producer, consumer)
    if until_faults_end:
        time.sleep(2)
        writer.done.set()
    writer.join()
    expected_size = pipe.input.stat().st_size
    assert wait_until(
        lambda: pipe.output.exists() and pipe.output.stat().st_size >= expected_size, 120, 0.1
    ), f"output stuck at {pipe.output.stat().st_size} of {expected_size} bytes"
    done = time.monotonic()
    meter.stop.set()
    meter.join()
    time.sleep(0.5)  # a duplicate would land now
    assert pipe.output.read_bytes() == pipe.input.read_bytes()
    shipped = (done - meter.first) if meter.first else float("nan")
    print(
        f"\ncluster: {writer.lines} lines written at {writer.lines / writer.elapsed:,.0f}/s, "
        f"all out {shipped:.1f}s after the first, failover gap {meter.gap:.2f}s"
    )
    return writer, meter


def test_the_node_leading_the_queue_is_killed_and_comes_back(
    cluster_pipe: Pipeline, cluster: RabbitCluster
) -> None:
    pipe = cluster_pipe

    def kill_leader(producer: Program, consumer: Program) -> None:
        time.sleep(3)
        leader = cluster.leader(pipe.topology.queue)
        leader.kill()
        assert wait_until(lambda: cluster.leader(pipe.topology.queue) is not leader, 30, 0.5)
        leader.start()  # it rejoins the cluster and its queue replica catches up

    # writes until 2 s after the old leader is back, not a fixed 15 s: the faults end sooner
    stream(pipe, 60, kill_leader, until_faults_end=True)


def test_the_node_each_program_is_connected_to_stops_and_both_fail_over(
    cluster_pipe: Pipeline, cluster: RabbitCluster
) -> None:
    pipe = cluster_pipe

    def stop_their_nodes(producer: Program, consumer: Program) -> None:
        for program in (producer, consumer):
            time.sleep(2)
            node = connected_node(program, cluster)
            before = connections_made(program)
            node.stop()
            assert wait_until(partial(reconnected, program, before), 30), (
                f"{program.module} never reconnected:\n{program.log()[-2000:]}"
            )
            assert connected_node(program, cluster) is not node
            node.start()
            cluster.wait_running(len(cluster.nodes))

    # compressed, as k8s/overlays/k3d-ha runs it
    stream(
        pipe, 60, stop_their_nodes, until_faults_end=True, producer_args=("--compression", "zstd")
    )


@pytest.mark.soak  # make chaos; make test keeps the leader kill and the failover
def test_a_rolling_restart_of_every_node_loses_nothing(
    cluster_pipe: Pipeline, cluster: RabbitCluster
) -> None:
    def rolling_restart(producer: Program, consumer: Program) -> None:
        for node in cluster.nodes:
            time.sleep(2)
            node.restart()  # a clean stop, then the node rejoins and catches up
            cluster.wait_running(len(cluster.nodes))

    stream(cluster_pipe, 120, rolling_restart, until_faults_end=True)


@pytest.mark.soak  # make chaos; make test keeps the leader kill and the failover
def test_a_majority_lost_stops_the_stream_and_it_resumes_when_it_returns(
    cluster_pipe: Pipeline, cluster: RabbitCluster
) -> None:
    """Two of three nodes stop: the third pauses (pause_minority) and closes its connections, so
    nothing flows; the producer stops reading once its in-flight window is full. Both resume
    when the two come back, and nothing is lost."""

    port = free_port()

    def read_offset() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as answer:
            return sum(json.loads(answer.read())["read"].values())

    def lose_majority(producer: Program, consumer: Program) -> None:
        time.sleep(3)
        first, second = cluster.nodes[1], cluster.nodes[2]
        parallel([first.stop, second.stop])
        time.sleep(4)  # the in-flight window (2 MiB) fills within a second or two
        stalled = read_offset()
        time.sleep(4)
        assert read_offset() == stalled < cluster_pipe.input.stat().st_size, "still reading"
        parallel([first.start, second.start])
        cluster.wait_running(len(cluster.nodes))

    stream(
        cluster_pipe,
        120,
        lose_majority,
        until_faults_end=True,
        producer_args=("--http.port", str(port)),
    )


@pytest.mark.soak  # make chaos; make test keeps the leader kill and the failover
def test_a_node_cut_off_from_the_others_and_the_clients_pauses_and_rejoins(
    tmp_path: Path, cluster: RabbitCluster
) -> None:
    """The node the consumer reads through is partitioned: its distribution links fail (wrong
    cookie) and its clients' connections go silent (proxy blackhole). It pauses
    (pause_minority); both programs fail over on heartbeat loss; it heals and rejoins."""
    for node in cluster.nodes:
        if not node.is_running():
            node.start()
    cluster.wait_running(len(cluster.nodes))
    with contextlib.ExitStack() as stack:
        proxies = {
            n.name: stack.enter_context(TcpProxy("127.0.0.1", n.amqp_port)) for n in cluster.nodes
        }
        hosts = ",".join(f"127.0.0.1:{p.port}" for p in proxies.values())
        topology = Topology(url=f"amqp://guest:guest@{hosts}/")
        by_proxy = {p.port: cluster.node_by_name(name) for name, p in proxies.items()}

        def partition(producer: Program, consumer: Program) -> None:
            time.sleep(3)
            port = int(connected_address(consumer).rsplit(":", 1)[1])
            node = by_proxy[port]
            proxies[node.name].blackhole()  # first: its clients hear nothing, not even a close
            cluster.isolate(node)
            assert wait_until(lambda: node.name not in cluster.running_nodes(), 30, 1)
            time.sleep(8)
            cluster.isolate(node, heal=True)
            proxies[node.name].restore()
            cluster.wait_running(len(cluster.nodes))

        heartbeat = ("--amqp.heartbeat", "2")
        try:
            with pipeline(tmp_path, topology) as pipe:
                stream(
                    pipe,
                    120,
                    partition,
                    until_faults_end=True,
                    producer_args=heartbeat,
                    consumer_args=heartbeat,
                )
        finally:
            for node in cluster.nodes:
                if node.is_running():
                    with contextlib.suppress(RabbitNodeError):
                        cluster.isolate(node, heal=True)
            _delete_topology(cluster, Topology(prefix=topology.prefix, url=cluster.amqp_url))
