"""Publishing batches with publisher confirms, in order: every batch is sent until the broker
confirms it; a nack, a returned message, a timeout or a lost connection sends again every batch not
yet confirmed, in their original order, so a re-send never overtakes an earlier batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError

from logship.amqp import backoff_delays, declare_topology, refusals_explained
from logship.config import AmqpSettings, ArchiveSettings
from logship.receipts import H_RECEIPTS_TO, H_RECEIPTS_WITHIN
from logship.wire import H_SENT, ZSTD, Batch
from producer.metrics import ProducerMetrics

if TYPE_CHECKING:
    import zstandard

log = logging.getLogger("logship.producer.publisher")

RETRYABLE = (
    aiormq.exceptions.AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)


# A refused (nacked) batch is retried within a second at most: the broker is there, and a quorum
# queue refuses only while it elects a new leader, which takes a second or two after a node loss
# (a longer pause would only add to the failover gap: tests/fault/test_cluster.py).
REFUSAL_RETRY_CAP = 1.0


class _Pending:
    """A batch between its first send and its confirm."""

    __slots__ = ("attempt", "batch", "confirmed", "message", "sent_at")

    def __init__(self, batch: Batch, message: aio_pika.Message, confirmed: asyncio.Future[None]):
        self.batch = batch
        self.message = message
        self.confirmed = confirmed
        self.attempt: asyncio.Task[None] | None = None
        self.sent_at = 0.0


class Publisher:
    """Owns the publishing channel. `submit` returns a future that completes once the broker
    confirmed the batch: only then may the caller advance the checkpoint."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        settings: AmqpSettings,
        metrics: ProducerMetrics,
        *,
        publish_timeout: float,
        compress: bool = False,
        archive: ArchiveSettings | None = None,
        receipts_to: str | None = None,
    ) -> None:
        """`receipts_to`: the producer id consumers send written receipts to (None: ask for
        none); it goes on every message as H_RECEIPTS_TO."""
        self._connection = connection
        self._receipts_to = receipts_to
        self._settings = settings
        # level 1: the fast end (see bench/README.md for what it costs and saves)
        self._compressor: zstandard.ZstdCompressor | None = None
        if compress:  # zstandard is loaded only by a producer that compresses
            import zstandard

            self._compressor = zstandard.ZstdCompressor(level=1)
        self._metrics = metrics
        self._timeout = publish_timeout
        self._archive = archive
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._next_id = 0
        self._epoch = 0
        self._resend_task: asyncio.Task[None] | None = None
        self._delays = backoff_delays(first=0.1, cap=settings.reconnect_max_delay)
        self._refusal_delays = backoff_delays(first=0.1, cap=REFUSAL_RETRY_CAP)

    async def start(self) -> None:
        channel = await asyncio.wait_for(
            self._connection.channel(publisher_confirms=True, on_return_raises=True),
            self._settings.connect_timeout,
        )
        await declare_topology(channel, self._settings, self._archive)
        # With declaration switched off this is a passive check: a missing exchange is a clear
        # error at start, not a NOT_FOUND at the first publish.
        async with refusals_explained(self._settings):
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

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit(self, batch: Batch, *, receipts_within_ms: int = 0) -> asyncio.Future[None]:
        """Send a batch now (frames leave in submit order); the future completes on its confirm.
        A re-send may put a batch on the wire twice: the consumer's byte ranges absorb that.
        `receipts_within_ms`: how long its written receipt may wait to go with later ones
        (0: at once)."""
        assert self._exchange is not None, "start() first"
        body = bytes(batch.body)
        headers = batch.headers()
        if self._receipts_to is not None:
            headers[H_RECEIPTS_TO] = self._receipts_to
            if receipts_within_ms > 0:
                headers[H_RECEIPTS_WITHIN] = receipts_within_ms
        message = aio_pika.Message(
            self._compressor.compress(body) if self._compressor is not None else body,
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=batch.message_id,
            content_type="application/octet-stream",
            content_encoding=ZSTD if self._compressor is not None else None,
            type="logship.batch",
        )
        pending = _Pending(batch, message, asyncio.get_running_loop().create_future())
        key = self._next_id
        self._next_id += 1
        self._pending[key] = pending
        if self._resend_task is None:
            self._send(key, pending)
        return pending.confirmed

    def _send(self, key: int, pending: _Pending) -> None:
        pending.sent_at = time.monotonic()
        pending.attempt = asyncio.create_task(self._attempt(key, pending, self._epoch))

    async def _attempt(self, key: int, pending: _Pending, epoch: int) -> None:
        assert self._exchange is not None
        batch = pending.batch
        sent_ns = time.time_ns()
        self._metrics.stage["read_to_publish"].observe(max(0, sent_ns - batch.read_ns) / 1e9)
        pending.message.headers[H_SENT] = sent_ns  # the properties are encoded at publish
        sent = time.monotonic()
        try:
            await self._exchange.publish(
                pending.message, self._settings.routing_key, mandatory=True, timeout=self._timeout
            )
        except aio_pika.exceptions.DeliveryError as error:
            self._metrics.nacks.inc()
            self._failed(epoch, batch, "refused: " + type(error).__name__)
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                return  # superseded by a re-send, or shutting down
            # aiormq cancels pending confirms when the connection goes: not our cancellation
            self._failed(epoch, batch, "confirm lost")
            return
        except RETRYABLE as error:
            self._failed(epoch, batch, type(error).__name__)
            return
        self._metrics.stage["publish_to_confirm"].observe(time.monotonic() - sent)
        self._confirmed(key, pending)

    def _confirmed(self, key: int, pending: _Pending) -> None:
        if self._pending.pop(key, None) is None or pending.confirmed.done():
            return
        self._metrics.confirm_latency.observe(time.monotonic() - pending.sent_at)
        self._metrics.confirms.inc()
        self._metrics.lines_confirmed.inc(pending.batch.lines)
        self._delays = backoff_delays(first=0.1, cap=self._settings.reconnect_max_delay)
        self._refusal_delays = backoff_delays(first=0.1, cap=REFUSAL_RETRY_CAP)
        pending.confirmed.set_result(None)

    def _failed(self, epoch: int, batch: Batch, reason: str) -> None:
        log.warning(
            "publish_unconfirmed",
            extra={"source": batch.source, "offset": batch.start, "error": reason},
        )
        if epoch != self._epoch:
            return  # an attempt already superseded by a re-send in progress
        self._epoch += 1
        # Every attempt still waiting belongs to the failed epoch: cancel them so none of them
        # reaches the broker after the re-sent batches it precedes.
        for pending in self._pending.values():
            if pending.attempt is not None and not pending.attempt.done():
                pending.attempt.cancel()
        delays = self._refusal_delays if reason.startswith("refused") else self._delays
        self._resend_task = asyncio.create_task(self._resend(next(delays)))

    async def _resend(self, delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(TimeoutError):  # not back yet: this round fails, another follows
            await asyncio.wait_for(self._connection.connected.wait(), self._timeout)
        self._resend_task = None
        for key, pending in list(self._pending.items()):
            if not pending.confirmed.done():
                self._metrics.publish_retries.inc()
                self._send(key, pending)

    async def drain(self) -> None:
        """Wait until every submitted batch is confirmed."""
        while self._pending:
            await asyncio.gather(
                *(p.confirmed for p in list(self._pending.values())), return_exceptions=True
            )

    async def close(self) -> None:
        """Abandon what is not confirmed (it is re-read from the checkpoint next start)."""
        if self._resend_task is not None:
            self._resend_task.cancel()
        for pending in self._pending.values():
            if pending.attempt is not None:
                pending.attempt.cancel()
            if not pending.confirmed.done():
                pending.confirmed.cancel()
        attempts = [p.attempt for p in self._pending.values() if p.attempt is not None]
        await asyncio.gather(*attempts, return_exceptions=True)
        self._pending.clear()
