"""A plain pika client for tests that act as *another program* on the broker: publishing what
logship would never publish (foreign, broken, undecodable messages) and reading a queue out."""

from __future__ import annotations

from typing import Any

import pika

from tests.support.pipeline import Topology


def publish(
    topology: Topology,
    messages: list[tuple[bytes, pika.BasicProperties]],
    exchange: str | None = None,
) -> None:
    """Publish with confirms, in order, to the topology's exchange (or `exchange`)."""
    connection = pika.BlockingConnection(pika.URLParameters(topology.url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body, properties in messages:
            channel.basic_publish(
                exchange=topology.prefix if exchange is None else exchange,
                routing_key=topology.prefix,
                body=body,
                properties=properties,
            )
    finally:
        connection.close()


def persistent(headers: dict[str, Any] | None = None) -> pika.BasicProperties:
    return pika.BasicProperties(headers=headers, delivery_mode=2)


def drain(topology: Topology, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    """Every message in `queue`, taken (auto-ack), in queue order."""
    connection = pika.BlockingConnection(pika.URLParameters(topology.url))
    found: list[tuple[Any, bytes]] = []
    try:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return found
            found.append((properties, body))
    finally:
        connection.close()
