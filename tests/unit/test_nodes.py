"""Broker addresses: a URL naming several nodes is parsed into one set of shared parts and its
nodes, and the ring spreads attempts over them and skips nodes that refused."""

from __future__ import annotations

import random

import pytest

from logship.config import AmqpSettings
from logship.nodes import Node, NodeRing, parse_broker_url

CLUSTER = "amqp://u:p%2Cw@h1:5673,h2,[::1]:5675/vh?frame_max=8192"


def test_a_cluster_url_shares_credentials_vhost_and_options() -> None:
    broker = parse_broker_url(CLUSTER)
    assert broker.nodes == (Node("h1", 5673), Node("h2", 5672), Node("::1", 5675))
    assert (broker.username, broker.password) == ("u", "p,w")
    assert (broker.path, broker.query) == ("/vh", "frame_max=8192")
    assert parse_broker_url("amqps://h").nodes == (Node("h", 5671),)


def test_each_node_gets_its_own_url_with_the_same_credentials_and_tls() -> None:
    settings = AmqpSettings(url=CLUSTER, heartbeat=5)  # type: ignore[arg-type]
    urls = [settings.connection_url(node) for node in settings.nodes]
    assert urls == [
        "amqp://u:p%2Cw@h1:5673/vh?frame_max=8192&heartbeat=5",
        "amqp://u:p%2Cw@h2:5672/vh?frame_max=8192&heartbeat=5",
        "amqp://u:p%2Cw@[::1]:5675/vh?frame_max=8192&heartbeat=5",
    ]
    assert settings.redacted_url() == "amqp://u:***@h1:5673,h2:5672,[::1]:5675/vh"
    assert settings.connection_url() == urls[0]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://h", "must start with amqp:// or amqps://"),
        ("amqp://u:p@/", "has no host"),
        ("amqp://h1,,h2/", "empty host"),
        ("amqp://h1:notaport/", "port"),
        ("amqp://h1:70000/", "port"),
        ("amqp://h1,h1:5672/", "names a node twice"),
        ("amqp://::1/", "IPv6"),
    ],
)
def test_a_bad_node_list_is_one_clear_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_broker_url(url)


NODES = [Node("a", 1), Node("b", 2), Node("c", 3)]


def test_attempts_go_round_the_ring_from_a_random_start() -> None:
    starts = {NodeRing(NODES, rng=random.Random(seed)).next() for seed in range(40)}
    assert starts == set(NODES)  # a fleet spreads over the cluster
    ring = NodeRing(NODES, rng=random.Random(1))
    first = ring.next()
    order = [first, ring.next(), ring.next(), ring.next()]
    i = NODES.index(first)
    assert order == [NODES[i], NODES[(i + 1) % 3], NODES[(i + 2) % 3], NODES[i]]


def test_a_node_that_refused_is_skipped_until_its_hold_ends_or_all_are_down() -> None:
    now = [0.0]
    ring = NodeRing(NODES, hold=30, rng=random.Random(0), clock=lambda: now[0])
    while ring.next() != NODES[2]:
        pass
    ring.down(NODES[0])
    assert [ring.next() for _ in range(4)] == [NODES[1], NODES[2], NODES[1], NODES[2]]
    ring.down(NODES[1])
    ring.down(NODES[2])
    assert ring.all_down()
    now[0] = 1.0
    assert ring.next() == NODES[0]  # every node down: the one marked longest ago
    ring.up(NODES[0])  # it answered
    assert not ring.all_down()
    now[0] = 40.0  # the hold is over: the others are tried again
    assert {ring.next() for _ in range(3)} == set(NODES)


def test_quorum_queues_get_the_replica_count_only_when_one_is_set() -> None:
    from logship.amqp import queue_arguments, replica_arguments

    default = AmqpSettings()
    assert "x-quorum-initial-group-size" not in queue_arguments(default)  # the broker decides
    three = AmqpSettings(quorum_initial_group_size=3)
    assert queue_arguments(three)["x-quorum-initial-group-size"] == 3
    assert replica_arguments(three) == {"x-quorum-initial-group-size": 3}  # dead letters too
    classic = AmqpSettings(quorum_initial_group_size=3, queue_type="classic")  # type: ignore[arg-type]
    assert replica_arguments(classic) == {} and "x-quorum-initial-group-size" not in (
        queue_arguments(classic)
    )
