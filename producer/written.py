"""The producer's end of written receipts: a queue of its own bound to the receipts exchange,
whose receipts it hands to listeners (the file sources' bytes-not-written, the HTTP ingest)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aio_pika
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelInvalidStateError

from logship.receipts import WrittenReceipt, decode, receipts_exchange

log = logging.getLogger("logship.producer.written")

Listener = Callable[[WrittenReceipt], None]

# The queue outlives a lost connection (receipts published meanwhile wait in it) and goes once
# nobody consumed it for this long: a producer that is gone for good leaves nothing behind.
QUEUE_EXPIRES_MS = 10 * 60 * 1000
# a producer that stopped reading keeps at most this many receipts (the oldest go first)
QUEUE_MAX_LENGTH = 100_000
PREFETCH = 256
STOP_TIMEOUT = 0.5
SETTLE_ERRORS = (aiormq.exceptions.AMQPError, ChannelInvalidStateError, ConnectionError)


def queue_name(exchange: str, producer_id: str) -> str:
    """The producer's own receipts queue (the broker allows 255 bytes in a name)."""
    return f"{receipts_exchange(exchange)}.{producer_id}"[:255]


class WrittenFeed:
    """Receives the written receipts meant for this producer id: a queue bound to the receipts
    exchange with routing key = producer id, declared on a robust channel, so the queue, its
    binding and the consumer are declared again after a reconnect (aio-pika restores them).

    The queue is neither exclusive nor auto-delete, but expires once unused: an exclusive or
    auto-delete queue goes with the connection, and every receipt published before the
    reconnect would be lost (and with it the end of a gap the producer waits for), and
    re-declaring an exclusive queue whose old connection the broker has not seen closed yet is
    refused (RESOURCE_LOCKED). It is not durable: a classic queue lives on one node, and a
    durable one whose node is down cannot be declared again elsewhere, while a transient one goes
    with its node and is declared again on the next (receipts in it are lost then: they are
    advice). Producer ids must be unique: two producers with one id split one queue."""

    def __init__(
        self,
        *,
        exchange: str,
        producer_id: str,
        on_written: Listener | None = None,
        declare: bool = True,
        on_malformed: Callable[[], None] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._exchange = exchange
        self.producer_id = producer_id
        self._listeners: list[Listener] = [] if on_written is None else [on_written]
        self._declare = declare
        self._on_malformed = on_malformed
        self._timeout = timeout
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self.received = 0  # receipts handed to listeners since start

    @property
    def queue(self) -> str:
        return queue_name(self._exchange, self.producer_id)

    def add_listener(self, listener: Listener) -> None:
        """Another callback for every receipt (called in the order added, on the event loop).
        A receipt may come twice (one delivered again after a lost connection): listeners must
        take repeats."""
        self._listeners.append(listener)

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Declare (or, with declare off, check passively) the receipts exchange, declare and bind
        our queue, consume. Raises what the broker refuses (the caller decides how bad it is)."""
        channel = await asyncio.wait_for(connection.channel(), self._timeout)
        try:
            name = receipts_exchange(self._exchange)
            exchange: AbstractExchange
            if self._declare:
                exchange = await channel.declare_exchange(
                    name, aio_pika.ExchangeType.DIRECT, durable=True, timeout=self._timeout
                )
            else:
                exchange = await channel.get_exchange(name, ensure=True)
            queue = await channel.declare_queue(
                self.queue,
                durable=False,
                arguments={
                    "x-queue-type": "classic",
                    "x-expires": QUEUE_EXPIRES_MS,
                    "x-max-length": QUEUE_MAX_LENGTH,
                    "x-overflow": "drop-head",
                },
                timeout=self._timeout,
            )
            await queue.bind(exchange, routing_key=self.producer_id, timeout=self._timeout)
            # acknowledged after the listeners ran, not on delivery (no_ack): a receipt sent
            # into a connection that is already dead comes again on the next one
            await channel.set_qos(prefetch_count=PREFETCH, timeout=self._timeout)
            self._tag = await queue.consume(self._on_message, timeout=self._timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        self._channel, self._queue = channel, queue
        log.debug("receipts_feed_started", extra={"queue": self.queue})

    async def stop(self) -> None:
        """Stop consuming and close the channel, within STOP_TIMEOUT (a shutdown step with the
        broker away must not wait for it). The queue stays until it expires: receipts that come
        meanwhile wait for a producer that comes back with the same id."""
        channel, queue, tag = self._channel, self._queue, self._tag
        self._channel = self._queue = self._tag = None
        if channel is None or channel.is_closed:
            return
        with contextlib.suppress(Exception):  # the broker may be gone: closing is all we want
            if queue is not None and tag is not None:
                await queue.cancel(tag, timeout=STOP_TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(channel.close(), STOP_TIMEOUT)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._handle(message.body)
        # a lost ack only means the receipt comes again: listeners take repeats
        with contextlib.suppress(*SETTLE_ERRORS):
            await message.ack()

    def _handle(self, body: bytes) -> None:
        try:
            receipt = decode(body)
        except ValueError as error:
            log.warning(
                "receipt_malformed",
                extra={"queue": self.queue, "error": str(error), "bytes": len(body)},
            )
            if self._on_malformed is not None:
                self._on_malformed()
            return
        self.received += 1
        for listener in self._listeners:
            try:
                listener(receipt)
            except Exception as error:  # one listener's bug must not stop the others or the feed
                log.error(
                    "receipt_listener_failed",
                    extra={
                        "listener": getattr(listener, "__qualname__", repr(listener)),
                        "error": f"{type(error).__name__}: {error}",
                    },
                )
