"""Fixture building blocks for conftest files: a private RabbitMQ node per session or module."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from tests.support.rabbit_node import RabbitNode, RabbitNodeError, find_scripts_dir


def private_node(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    name: str | None = None,
    tls: bool = False,
    prometheus: bool = False,
    extra_config: Sequence[str] = (),
) -> Iterator[RabbitNode]:
    """Yield a started private node, stopped afterwards; skip if RabbitMQ is not installed.

    Works at any fixture scope, since it takes the tmp_path_factory rather than tmp_path::

        @pytest.fixture(scope="module")
        def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
            yield from private_node(tmp_path_factory, prometheus=True)
    """
    try:
        find_scripts_dir()
    except RabbitNodeError as exc:
        pytest.skip(str(exc))
    base = tmp_path_factory.mktemp(name or "rabbit")
    node = RabbitNode(base, name=name, tls=tls, prometheus=prometheus, extra_config=extra_config)
    node.start()
    try:
        yield node
    finally:
        # killed, not stopped: its data is thrown away, and a clean stop costs 3-7 s a module
        node.discard()
