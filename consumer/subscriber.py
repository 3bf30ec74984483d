"""Receiving from the queue: prefetch, deliveries into an inbox, cancel on stop, acknowledgements,
dead-lettering with the reason, and the queue depth the consumer observes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelInvalidStateError

from logship.amqp import declare_topology, refusals_explained
from logship.config import AmqpSettings, ArchiveSettings
from logship.lenient_decode import undecodable
from logship.wire import H_DEATH_REASON, H_SENT

log = logging.getLogger("logship.consumer.subscriber")

SETTLE_ERRORS = (aiormq.exceptions.AMQPError, ChannelInvalidStateError, ConnectionError)


def since_published(headers: Mapping[str, object] | None, now_ns: int) -> float | None:
    """Seconds from the producer's publish (x-logship-sent-ns) to `now_ns`; None for a message
    without it (a plain message, an older producer)."""
    sent = (headers or {}).get(H_SENT)
    if not isinstance(sent, int) or isinstance(sent, bool):
        return None
    return max(0, now_ns - sent) / 1e9


class Subscriber:
    """Owns the consuming channel. Deliveries land in `inbox`; the caller settles them."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        settings: AmqpSettings,
        *,
        prefetch: int,
        reserve: int = 0,
        archive: ArchiveSettings | None = None,
        observe_delivery: Callable[[float], None] | None = None,
    ) -> None:
        """`reserve`: deliveries the broker may send beyond `prefetch`, for batches the consumer
        holds back while it waits for the ones before them (a prefetch change reaches only
        consumers started after it, so the room is made at start). `observe_delivery` gets each
        delivery's seconds since its producer published it, when the message says."""
        self._connection = connection
        self._settings = settings
        self._prefetch = prefetch
        self._reserve = reserve
        self._archive = archive
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        # when the oldest delivery now in the inbox arrived (monotonic): where a group's time
        # in the consumer starts
        self.waiting_since = 0.0
        self._observe_delivery = observe_delivery
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._dead_channel: AbstractRobustChannel | None = None
        self._dead_publish_allowed = True
        self._depth_channel: AbstractRobustChannel | None = None

    async def start(self) -> None:
        channel = await asyncio.wait_for(
            self._connection.channel(publisher_confirms=False), self._settings.connect_timeout
        )
        await channel.set_qos(prefetch_count=self._prefetch + self._reserve)
        await declare_topology(channel, self._settings, self._archive)
        async with refusals_explained(self._settings):
            # passive: with declaration off, a missing queue is a clear error at start
            self._queue = await channel.get_queue(self._settings.queue, ensure=True)
            self._channel = channel
            self._consumer_tag = await self._queue.consume(self._deliver, no_ack=False)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        if self.inbox.empty():
            self.waiting_since = time.monotonic()
        if self._observe_delivery is not None:
            waited = since_published(message.headers, time.time_ns())
            if waited is not None:
                self._observe_delivery(waited)
        self.inbox.put_nowait(message)

    @property
    def consuming(self) -> bool:
        return (
            self._consumer_tag is not None
            and self._channel is not None
            and not self._channel.is_closed
            and self._connection.connected.is_set()
        )

    async def cancel(self) -> None:
        """Stop deliveries; what is already in the inbox is still ours to finish."""
        if self._queue is not None and self._consumer_tag is not None:
            tag, self._consumer_tag = self._consumer_tag, None
            try:
                await asyncio.wait_for(self._queue.cancel(tag), 5)
            except (*SETTLE_ERRORS, TimeoutError) as error:
                log.warning("consumer_cancel_failed", extra={"error": type(error).__name__})

    async def ack_through(self, message: AbstractIncomingMessage) -> bool:
        """Acknowledge this delivery and every earlier one on its channel."""
        try:
            await message.ack(multiple=True)
        except SETTLE_ERRORS as error:
            # the channel is gone: the broker will deliver these again, and the sink's ranges
            # recognise them as written
            log.warning("ack_failed", extra={"error": type(error).__name__})
            return False
        return True

    async def ack_each(self, messages: list[AbstractIncomingMessage]) -> bool:
        """Acknowledge these deliveries one by one (others before them are still held)."""
        try:
            for message in messages:
                await message.ack()
        except SETTLE_ERRORS as error:
            log.warning("ack_failed", extra={"error": type(error).__name__})
            return False
        return True

    async def dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        """Move a message that can never be written to the dead-letter exchange, with the reason
        in a header when we may publish there, else by rejecting it (reason `rejected`). One whose
        properties did not decode is always rejected: a copy could not carry its original bytes,
        the broker's dead-lettering keeps them."""
        copy = self._dead_publish_allowed and undecodable(message.headers) is None
        if copy and await self._published_dead(message, reason):
            try:
                await message.ack()
            except SETTLE_ERRORS as error:  # redelivered, then dead-lettered once more
                log.warning("ack_failed", extra={"error": type(error).__name__})
            return
        try:
            await message.reject(requeue=False)
        except (*SETTLE_ERRORS, RuntimeError) as error:
            log.warning("reject_failed", extra={"error": type(error).__name__})

    async def _published_dead(self, message: AbstractIncomingMessage, reason: str) -> bool:
        """True once the broker confirmed the copy in the dead-letter exchange. A copy that was
        refused, returned unroutable (no queue bound) or left unconfirmed is not there: the
        caller rejects the message instead of acknowledging it away."""
        try:
            await self._publish_dead(message, reason)
            return True
        except aiormq.exceptions.ChannelAccessRefused:
            self._dead_publish_allowed = False
            log.warning(
                "dead_letter_publish_refused",
                extra={"exchange": self._settings.dead_letter_exchange},
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # aiormq cancels pending confirms when the connection goes: not our cancellation
            log.warning("dead_letter_publish_failed", extra={"error": "confirm lost"})
        except (
            *SETTLE_ERRORS,
            aio_pika.exceptions.DeliveryError,
            RuntimeError,  # "connection was not opened": the broker is away
            TimeoutError,
        ) as error:
            log.warning("dead_letter_publish_failed", extra={"error": type(error).__name__})
        return False

    async def _publish_dead(self, message: AbstractIncomingMessage, reason: str) -> None:
        if self._dead_channel is None or self._dead_channel.is_closed:
            self._dead_channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
        exchange = await self._dead_channel.get_exchange(
            self._settings.dead_letter_exchange, ensure=False
        )
        headers: dict[str, Any] = dict(message.headers or {})
        headers[H_DEATH_REASON] = reason[:500]
        headers["x-logship-dead-queue"] = self._settings.queue
        await exchange.publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.message_id,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                type=message.type,
            ),
            routing_key=self._settings.routing_key,
            timeout=10,
        )

    async def queue_depth(self) -> tuple[int, int] | None:
        """(messages ready, consumers) from a passive declare on a channel of its own, kept open
        between polls (a failed passive declare closes it; the next poll opens another)."""
        try:
            if self._depth_channel is None or self._depth_channel.is_closed:
                self._depth_channel = await asyncio.wait_for(
                    self._connection.channel(publisher_confirms=False), 5
                )
            queue = await asyncio.wait_for(
                self._depth_channel.declare_queue(self._settings.queue, passive=True), 5
            )
            result = queue.declaration_result
            return int(result.message_count or 0), int(result.consumer_count or 0)
        except (*SETTLE_ERRORS, TimeoutError, RuntimeError) as error:
            log.debug("queue_depth_failed", extra={"error": type(error).__name__})
            self._depth_channel = None
            return None
