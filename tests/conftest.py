"""Shared fixtures: the real broker (never skipped silently in CI), a unique topology per test and
the real programs as processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pipeline import IN_CI, Pipeline, Topology, broker_reachable, pipeline


@pytest.fixture(scope="session")
def broker() -> str:
    """The shared RabbitMQ on 127.0.0.1:5672. In CI its absence fails the run."""
    if not broker_reachable():
        message = "RabbitMQ not reachable on 127.0.0.1:5672 (start it: rabbitmq-server -detached)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def topology(broker: str) -> Iterator[Topology]:
    topo = Topology(url=broker)
    yield topo
    topo.delete()


@pytest.fixture
def pipe(tmp_path: Path, topology: Topology) -> Iterator[Pipeline]:
    with pipeline(tmp_path, topology) as p:
        yield p


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/fault/" in path:
            item.add_marker(pytest.mark.fault)
