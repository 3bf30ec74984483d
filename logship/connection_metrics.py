"""The metrics every logship AMQP connection exposes, under each program's prefix: up, reconnects,
blocked state, blocked events and time spent blocked."""

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
        """Follow a robust connection: down on close, up (and counted) on every reconnect."""
        self.connection_up.set(1)
        connection.close_callbacks.add(lambda *_: self.connection_up.set(0))

        def reconnected(*_: object) -> None:
            self.connection_up.set(1)
            self.reconnects.inc()
            log.info("amqp_reconnected")

        connection.reconnect_callbacks.add(reconnected)
