"""The metrics every logship AMQP connection exposes, under each program's prefix: up, the node
connected to, reconnects, blocked state, blocked events and time spent blocked."""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("logship.amqp")


class ConnectionMetrics:
    """`logship_<component>_connection_up`, `_reconnects_total`, `_connection_blocked`,
    `_blocked_events_total` and `_blocked_seconds_total`."""

    def __init__(self, component: str, registry: CollectorRegistry) -> None:
        prefix = f"logship_{component}"
        self.connection_up = Gauge(
            f"{prefix}_connection_up", "1 while connected to the broker", registry=registry
        )
        self.node_info = Gauge(
            f"{prefix}_broker_node_info",
            "1 for the broker node connected to, 0 for the other nodes of --amqp.url",
            ["node"],
            registry=registry,
        )
        self.reconnects = Counter(
            f"{prefix}_reconnects_total", "Reconnections to the broker", registry=registry
        )
        self.blocked = Gauge(
            f"{prefix}_connection_blocked",
            "1 while the broker blocks the connection (memory or disk alarm)",
            registry=registry,
        )
        self.blocked_events = Counter(
            f"{prefix}_blocked_events_total", "connection.blocked received", registry=registry
        )
        self.blocked_seconds = Counter(
            f"{prefix}_blocked_seconds_total",
            "Time spent blocked by the broker",
            registry=registry,
        )

    def set_blocked(self, blocked: bool) -> None:
        self.blocked.set(int(blocked))

    def watch(self, connection: AbstractRobustConnection) -> None:
        """Follow a robust connection: down on close, up (and counted) on every reconnect, and
        which node it is connected to (every node the URL names is a label, 0 when not it)."""
        nodes = [str(n) for n in getattr(connection, "nodes", ())]
        for node in nodes:
            self.node_info.labels(node).set(0)

        def show_node() -> None:
            current = getattr(connection, "node", None)
            for node in nodes:
                self.node_info.labels(node).set(int(node == str(current)))

        def closed(*_: object) -> None:
            self.connection_up.set(0)
            for node in nodes:
                self.node_info.labels(node).set(0)

        self.connection_up.set(1)
        show_node()
        connection.close_callbacks.add(closed)

        def reconnected(*_: object) -> None:
            self.connection_up.set(1)
            self.reconnects.inc()
            show_node()
            log.info("amqp_reconnected", extra={"node": str(getattr(connection, "node", None))})

        connection.reconnect_callbacks.add(reconnected)
