"""`python -m consumer replay-dead`: move dead letters back to the main exchange once their cause
is fixed (`--dry-run` lists what would move)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated, Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
from pydantic import Field
from pydantic_settings import BaseSettings

from logship.amqp import FatalConnectError, TopologyError, connect, refusals_explained
from logship.config import EXIT_BAD_SETTINGS, AmqpSettings, LogSettings, settings_config
from logship.lenient_decode import undecodable
from logship.wire import H_DEATH_REASON

log = logging.getLogger("logship.consumer.replay")

DROPPED_HEADERS = {
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
    H_DEATH_REASON,
    "x-logship-dead-queue",
}


class ReplaySettings(BaseSettings):
    """Move messages from the dead-letter queue back to the logs exchange."""

    model_config = settings_config("logship-consumer replay-dead")

    dry_run: bool = Field(default=False, description="list what would move, move nothing")
    limit: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="move at most N", json_schema_extra={"unset": "all"}
    )
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    log: LogSettings = Field(default_factory=LogSettings)


def _reason(headers: dict[str, Any]) -> str:
    reason = headers.get(H_DEATH_REASON)
    if reason is None:
        deaths = headers.get("x-death") or []
        if deaths and isinstance(deaths[0], dict):
            reason = deaths[0].get("reason")
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return str(reason or "unknown")


async def replay(settings: ReplaySettings) -> int:
    amqp = settings.amqp
    try:
        connection = await connect(amqp, "logship-replay")
    except FatalConnectError as error:
        print(f"logship: error: {error}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    try:
        async with refusals_explained(amqp):
            # a returned (unroutable) copy raises: its dead letter is then kept, not acked away
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            dead = await channel.get_queue(amqp.dead_letter_queue, ensure=True)
            exchange = await channel.get_exchange(amqp.exchange, ensure=True)
        counts = await _replay_all(settings, dead, exchange)
        # in a dry run the unacknowledged messages return to the dead-letter queue on close
    except TopologyError as error:
        print(f"logship: error: {error}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    finally:
        await asyncio.wait_for(connection.close(), 10)
    if counts is None:
        return 1
    moved, left = counts
    print(
        f"{'would move' if settings.dry_run else 'moved'} {moved} message(s) "
        f"from {amqp.dead_letter_queue} to {amqp.exchange}"
    )
    if left:
        print(
            f"left {left} undecodable message(s) in {amqp.dead_letter_queue}: their AMQP "
            "properties do not decode, so a copy would not be faithful; inspect them with "
            "another client"
        )
    return 0


async def _replay_all(
    settings: ReplaySettings,
    dead: aio_pika.abc.AbstractQueue,
    exchange: aio_pika.abc.AbstractExchange,
) -> tuple[int, int] | None:
    """(moved, left undecodable), or None when the exchange did not take a copy."""
    amqp = settings.amqp
    moved = left = 0
    while settings.limit is None or moved < settings.limit:
        message = await dead.get(no_ack=False, fail=False, timeout=10)
        if message is None:
            break
        mark = undecodable(message.headers)
        if mark is not None:
            # a copy could not carry the bytes that did not decode: keep it unacknowledged, so
            # it goes back to the dead-letter queue when the channel closes
            left += 1
            print(
                f"logship: warning: leaving delivery {message.delivery_tag} in "
                f"{amqp.dead_letter_queue}: undecodable properties: {mark.describe()}",
                file=sys.stderr,
            )
            continue
        headers = dict(message.headers or {})
        print(
            f"{'would move' if settings.dry_run else 'moving'} "
            f"{message.message_id or '-'} reason={_reason(headers)} bytes={len(message.body)}"
        )
        if not settings.dry_run and not await _move(exchange, message, headers, amqp):
            print(
                f"logship: error: {amqp.exchange} did not take {message.message_id or '-'}"
                f" (no queue bound for routing key {amqp.routing_key!r}?); it stays in "
                f"{amqp.dead_letter_queue}",
                file=sys.stderr,
            )
            return None
        moved += 1
    return moved, left


async def _move(
    exchange: aio_pika.abc.AbstractExchange,
    message: aio_pika.abc.AbstractIncomingMessage,
    headers: dict[str, Any],
    amqp: AmqpSettings,
) -> bool:
    """Publish the copy with confirms, then acknowledge the dead letter; False when the copy was
    refused or returned (the dead letter is left where it is)."""
    try:
        await exchange.publish(
            aio_pika.Message(
                message.body,
                headers={k: v for k, v in headers.items() if k not in DROPPED_HEADERS},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.message_id,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                type=message.type,
            ),
            routing_key=amqp.routing_key,
            timeout=30,
        )
    except aio_pika.exceptions.DeliveryError:
        return False
    await message.ack()
    return True
