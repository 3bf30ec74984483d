"""Shared fixtures: the real broker (never skipped silently in CI), a unique topology per test and
the real programs as processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.pipeline import IN_CI, Pipeline, Topology, broker_reachable, pipeline

# The suite shares two cores with a broker and the programs it starts: a draw that is slow
# because the machine is busy says nothing about the code, and timing is the benchmark's job.
settings.register_profile("logship", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("logship")


def _container_broker() -> Iterator[str] | None:
    """A RabbitMQ container through testcontainers, where a Docker engine exists (a laptop
    without a local broker). None when there is no engine: its constructor raises at once."""
    try:
        from testcontainers.community.rabbitmq import (
            RabbitMqContainer,
        )
    except ImportError:
        try:
            from testcontainers.rabbitmq import RabbitMqContainer
        except ImportError:
            return None
    try:
        container = RabbitMqContainer("rabbitmq:3-management")
    except Exception:  # docker.errors.DockerException: no engine to talk to
        return None

    def run() -> Iterator[str]:
        with container as started:
            host = started.get_container_host_ip()
            port = started.get_exposed_port(started.port)
            yield f"amqp://guest:guest@{host}:{port}/"

    return run()


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """The shared RabbitMQ on 127.0.0.1:5672, else a testcontainers broker where Docker runs.
    In CI the absence of both fails the run: integration tests never skip silently there."""
    if broker_reachable():
        yield "amqp://guest:guest@127.0.0.1:5672/"
        return
    container = _container_broker()
    if container is not None:
        yield from container
        return
    message = "RabbitMQ not reachable on 127.0.0.1:5672 and no Docker engine for a container"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


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
    # the long soaks belong to `make chaos` (LOGSHIP_CHAOS=1): deselected elsewhere, not skipped,
    # so a CI run's skips are only ever what is missing on the machine
    if not os.environ.get("LOGSHIP_CHAOS"):
        soaks = [item for item in items if item.get_closest_marker("soak")]
        if soaks:
            config.hook.pytest_deselected(items=soaks)
            items[:] = [item for item in items if not item.get_closest_marker("soak")]


def _first_difference(left: bytes, right: bytes) -> int:
    """Offset of the first differing byte (block-wise: these are megabytes)."""
    block = 1 << 16
    length = min(len(left), len(right))
    for start in range(0, length, block):
        if left[start : start + block] != right[start : start + block]:
            for offset in range(start, min(start + block, length)):
                if left[offset] != right[offset]:
                    return offset
    return length


def _brief_bytes_explanation(op: str, left: object, right: object) -> list[str] | None:
    """A short explanation for large byte strings (an output file against its input)."""
    if op != "==" or not isinstance(left, bytes | bytearray):
        return None
    if not isinstance(right, bytes | bytearray) or max(len(left), len(right)) <= 4096:
        return None
    at = _first_difference(bytes(left), bytes(right))
    line = bytes(right[:at]).count(b"\n") + 1
    return [
        f"{len(left):,} bytes == {len(right):,} bytes: differ first at offset {at:,} (line {line})",
        f"left  {bytes(left[max(0, at - 60) : at + 60])!r}",
        f"right {bytes(right[max(0, at - 60) : at + 60])!r}",
    ]


def pytest_configure(config: pytest.Config) -> None:
    """pytest's own explanation of a failed `==` runs for every hook implementation, so a
    conftest hook cannot replace it; its difflib diff of megabytes takes minutes and outlived
    the test's timeout in CI. Wrap the one function it calls so large bytes get the brief one."""
    from _pytest.assertion import util

    original = util.assertrepr_compare
    if getattr(original, "logship_brief", False):
        return

    def assertrepr_compare(op: str, left: object, right: object, **options: Any) -> object:
        return _brief_bytes_explanation(op, left, right) or original(
            op=op, left=left, right=right, **options
        )

    assertrepr_compare.logship_brief = True  # type: ignore[attr-defined]
    util.assertrepr_compare = assertrepr_compare  # type: ignore[assignment]
