"""Refused permissions at start (ACCESS_REFUSED) are one line and exit code 2, on a private node
where users with too few permissions can be made (never on the shared one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_start_refusals import run
from tests.support.pipeline import Topology, declare_topology
from tests.support.rabbit_node import RabbitNode


def user_url(node: RabbitNode, user: str) -> str:
    return f"amqp://{user}:secret-{user}@127.0.0.1:{node.amqp_port}/"


@pytest.mark.parametrize("module", ["consumer", "producer"])
def test_declaring_without_configure_permission(
    module: str, node: RabbitNode, node_topology: Topology, tmp_path: Path
) -> None:
    user = f"noconf{module}"
    node.add_user(user, f"secret-{user}", "", ".*", ".*")
    assert run(module, node_topology, tmp_path, "--amqp.url", user_url(node, user)) == [
        f"logship: error: broker refused user '{user}' access to exchange "
        f"'{node_topology.prefix}.dead': grant configure permission on it, or declare the "
        "topology beforehand and set --no-amqp.declare"
    ]


def test_consuming_without_read_permission(
    node: RabbitNode, node_topology: Topology, tmp_path: Path
) -> None:
    topo = node_topology
    declare_topology(topo, tmp_path, checkpoint="ck0")
    node.add_user("noread", "secret-noread", "", ".*", "")
    [line] = run(
        "consumer", topo, tmp_path, "--no-amqp.declare", "--amqp.url", user_url(node, "noread")
    )
    assert line.startswith(
        f"logship: error: broker refused user 'noread' access to queue "
        f"'{topo.queue}': grant the permission"
    )
    assert "secret-noread" not in line
