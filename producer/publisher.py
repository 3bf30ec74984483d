"""Publishing batches with publisher confirms: each batch is sent until the broker confirms it;
a nack, a returned message, a timeout or a lost connection means it is sent again."""

from __future__ import annotations

import asyncio
import logging
import time

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError

from logship.amqp import backoff_delays, declare_topology
from logship.config import AmqpSettings
from logship.wire import Batch
from producer.metrics import ProducerMetrics

log = logging.getLogger("logship.producer.publisher")

RETRYABLE = (
    aiormq.exceptions.AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)


class Publisher:
    """Owns the publishing channel. `publish` returns only once the broker confirmed the batch:
    the caller may then advance the checkpoint."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        settings: AmqpSettings,
        metrics: ProducerMetrics,
        *,
        publish_timeout: float,
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._metrics = metrics
        self._timeout = publish_timeout
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def start(self) -> None:
        channel = await asyncio.wait_for(
            self._connection.channel(publisher_confirms=True, on_return_raises=True),
            self._settings.connect_timeout,
        )
        await declare_topology(channel, self._settings)
        # With declaration switched off this is a passive check: a missing exchange is a clear
        # error at start, not a NOT_FOUND at the first publish.
        self._exchange = await channel.get_exchange(self._settings.exchange, ensure=True)
        self._channel = channel

    @property
    def ready(self) -> bool:
        return (
            self._channel is not None
            and not self._channel.is_closed
            and not self._connection.is_closed
            and self._connection.connected.is_set()
        )

    def _message(self, batch: Batch) -> aio_pika.Message:
        return aio_pika.Message(
            bytes(batch.body),
            headers=batch.headers(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=batch.message_id,
            content_type="application/octet-stream",
            type="logship.batch",
        )

    async def publish(self, batch: Batch) -> None:
        """Send until confirmed. A confirm that never comes may still mean the message arrived
        (see shared NOTES): the consumer's byte ranges absorb such duplicates."""
        assert self._exchange is not None, "start() first"
        message = self._message(batch)
        delays = backoff_delays(first=0.1, cap=self._settings.reconnect_max_delay)
        while True:
            started = time.monotonic()
            try:
                await self._exchange.publish(
                    message, self._settings.routing_key, mandatory=True, timeout=self._timeout
                )
            except aio_pika.exceptions.DeliveryError as error:
                self._metrics.nacks.inc()
                reason = type(error).__name__
                log.warning(
                    "publish_refused",
                    extra={"source": batch.source, "offset": batch.start, "reason": reason},
                )
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # aiormq cancels pending confirms when the connection goes: not our cancellation
                log.warning(
                    "publish_unconfirmed",
                    extra={"source": batch.source, "offset": batch.start, "error": "confirm lost"},
                )
            except RETRYABLE as error:
                log.warning(
                    "publish_unconfirmed",
                    extra={
                        "source": batch.source,
                        "offset": batch.start,
                        "error": type(error).__name__,
                    },
                )
            else:
                self._metrics.confirm_latency.observe(time.monotonic() - started)
                self._metrics.confirms.inc()
                self._metrics.lines_confirmed.inc(batch.lines)
                return
            self._metrics.publish_retries.inc()
            await asyncio.sleep(next(delays))
