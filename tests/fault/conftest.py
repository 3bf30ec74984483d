"""Fault fixtures: one private throwaway RabbitMQ node for the fault tests (never the shared one),
and pipelines pointed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fixtures import private_node
from tests.support.pipeline import Pipeline, Topology, pipeline
from tests.support.rabbit_node import RabbitNode

CHAOS = bool(os.environ.get("LOGSHIP_CHAOS"))


@pytest.fixture(scope="package")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """One node for every fault module that uses it: a boot costs 4-6 s and eight modules share
    it. Each test gets its own topology (node_topology); a test that stops or kills the node gets
    it started again by the next one; alarms are cleared by the tests that raise them; users
    have names of their own per module."""
    yield from private_node(tmp_path_factory)


@pytest.fixture
def node_topology(node: RabbitNode) -> Iterator[Topology]:
    if not node.is_running():
        node.start()
    topo = Topology(url=node.amqp_url)
    yield topo
    if node.is_running():
        topo.delete()


@pytest.fixture
def fault_pipe(tmp_path: Path, node_topology: Topology) -> Iterator[Pipeline]:
    with pipeline(tmp_path, node_topology) as p:
        yield p


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
