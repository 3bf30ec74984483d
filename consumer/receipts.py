"""Sending written receipts: after a group is durable and recorded, one receipt per producer that
asked, published on a connection of the consumer's own, never awaited by the write path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import aio_pika
import aiormq.abc
import aiormq.exceptions
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError

from consumer.sink import Plan
from logship.amqp import FatalConnectError, connect, refusals_explained
from logship.config import AmqpSettings
from logship.receipts import (
    CONTENT_TYPE,
    MESSAGE_TYPE,
    ReceiptCollector,
    WrittenReceipt,
    encode,
    receipts_exchange,
)

log = logging.getLogger("logship.consumer.receipts")

# outcome label values of logship_consumer_receipts_total
SENT = "sent"  # confirmed by the broker and routed to the producer's queue
UNROUTABLE = "unroutable"  # confirmed, but no queue for that producer id (it is gone)
FAILED = "failed"  # refused, timed out, or the channel or connection went
DROPPED = "dropped"  # not even tried: too many receipts already waiting for their confirm
OUTCOMES = (SENT, UNROUTABLE, FAILED, DROPPED)

# receipts in flight at most: past it a receipt is dropped (bounded memory while the broker is
# away or blocks the receipts connection)
MAX_PENDING = 1000
# ranges a held receipt gathers at most before it goes without waiting for the one in flight
MAX_HELD_RANGES = 1000
PUBLISH_TIMEOUT = 30.0
# at stop, how long receipts of the last groups get to leave
FLUSH_TIMEOUT = 1.0
# both within the 2 s a background task gets at shutdown (logship/lifecycle.py stop_tasks)
CLOSE_TIMEOUT = 0.8
PUBLISH_ERRORS = (
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.DeliveryError,
    ChannelInvalidStateError,
    ConnectionError,
    TimeoutError,
)


def receipts_of(plan: Plan, base: int, consumer: str, output: str) -> dict[str, WrittenReceipt]:
    """One receipt per producer id for a committed plan whose first byte is at `base` in the
    output. Bytes a copytruncate's copy took (the plan's first `skipped`) are durable, but not in
    this file: they are reported as written before, without a place."""
    collector = ReceiptCollector()
    for to, source, start, end, offset in plan.spans or ():
        if offset < plan.skipped:
            cut = min(end, start + plan.skipped - offset)
            collector.duplicate(to, source, start, cut)
            offset += cut - start
            start = cut
        collector.written(to, source, start, end, base + offset)
    for to, source, start, end in plan.repeats or ():
        collector.duplicate(to, source, start, end)
    return collector.receipts(consumer, output)


class _Held:
    """Receipts for one producer that wait (while another to it awaits its confirm, or until
    `due` when its batches said they can wait): merged into one, touching ranges joined
    (ReceiptCollector)."""

    __slots__ = ("collector", "consumer", "due", "output", "ranges", "timer", "to")

    def __init__(self, to: str, consumer: str, output: str, due: float) -> None:
        self.to, self.consumer, self.output = to, consumer, output
        self.due = due  # loop time by which it goes (once nothing to `to` is in flight)
        self.timer: asyncio.TimerHandle | None = None
        self.collector = ReceiptCollector()
        self.ranges = 0  # pieces added (an upper bound of the merged receipt's ranges)

    def takes(self, receipt: WrittenReceipt) -> bool:
        """Another output (the consumer moved on to a rotated one) is not one receipt."""
        return (receipt.consumer, receipt.output) == (self.consumer, self.output)

    def add(self, receipt: WrittenReceipt, due: float) -> None:
        for r in receipt.ranges:
            self.collector.written(self.to, r.source, r.start, r.end, r.output_start)
        for d in receipt.duplicates:
            self.collector.duplicate(self.to, d.source, d.start, d.end)
        self.ranges += len(receipt.ranges) + len(receipt.duplicates)
        self.due = min(self.due, due)

    def receipt(self) -> WrittenReceipt:
        self.drop()
        return self.collector.receipts(self.consumer, self.output)[self.to]

    def drop(self) -> None:
        """It goes now, or never: no timer is to send it later."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class ReceiptSender:
    """Owns the receipts connection (its own: a publishing connection that a broker alarm blocks
    must not hold the consuming one's acknowledgements) and its confirm channel. `send` only
    starts a publish; outcomes are counted by `count(outcome)` when the confirm comes.

    While a receipt to a producer awaits its confirm, the next ones to it wait, merged into one,
    and go when that confirm comes: at a group per delivery (a few hundred a second) a message
    per group cost the broker, this consumer and the producer more CPU than the groups' own
    writes, and that CPU was the broker's confirm latency on a small machine (bench/README
    "HTTP ingest, 2026-12-07"). A producer may also say its batches' receipts can wait
    (H_RECEIPTS_WITHIN: a tailed file's, which only move a gauge): they are held until then,
    merged with the next groups', so a file shipped at a few hundred groups a second costs a
    few receipts a second (bench/README "Where the tail goes")."""

    def __init__(
        self,
        settings: AmqpSettings,
        *,
        name: str,
        count: Callable[[str], None],
        max_pending: int = MAX_PENDING,
        timeout: float = PUBLISH_TIMEOUT,
    ) -> None:
        self._settings = settings
        self._name = name
        self._count = count
        self._max_pending = max_pending
        self._timeout = timeout
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}  # producer id → its receipts awaiting a confirm
        self._held: dict[str, _Held] = {}  # producer id → what waits for them
        self._failing = False  # in a streak of failures: logged at its first
        self._flushing = False  # stopping: held receipts go without waiting for their time
        self.ready = asyncio.Event()  # the exchange is there: receipts can go
        self.settled = asyncio.Event()  # ready, or known unavailable for this run

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (retrying while the broker is away), declare or check the receipts exchange,
        then keep the connection until cancelled at shutdown, when receipts still in flight get
        FLUSH_TIMEOUT to leave. A broker that refuses the exchange leaves receipts off: the data
        path does not depend on them."""
        try:
            try:
                self._connection = await connect(self._settings, self._name, stop=stop)
                self._exchange = await self._declare(self._connection)
            except (FatalConnectError, *PUBLISH_ERRORS) as error:
                log.warning("receipts_unavailable", extra={"error": str(error)})
                self.settled.set()
                await asyncio.Event().wait()
            self.ready.set()
            self.settled.set()
            await asyncio.Event().wait()
        finally:
            self.flush()  # a confirm sends what was held for that producer: wait for it too
            loop = asyncio.get_running_loop()
            deadline = loop.time() + FLUSH_TIMEOUT
            while self._pending and (left := deadline - loop.time()) > 0:
                await asyncio.wait(set(self._pending), timeout=left)
            if self._connection is not None:
                with contextlib.suppress(Exception):  # closing is all we want here
                    await asyncio.wait_for(self._connection.close(), CLOSE_TIMEOUT)

    def flush(self) -> None:
        """Stopping: from now on a held receipt goes as soon as nothing to its producer is in
        flight, without waiting for its time."""
        self._flushing = True
        for to in list(self._held):
            if not self._in_flight.get(to):
                self._start(to, self._held.pop(to).receipt())

    async def _declare(self, connection: AbstractRobustConnection) -> AbstractExchange:
        channel = await asyncio.wait_for(
            connection.channel(publisher_confirms=True, on_return_raises=False),
            self._settings.connect_timeout,
        )
        name = receipts_exchange(self._settings.exchange)
        async with refusals_explained(self._settings):
            if self._settings.declare:
                return await channel.declare_exchange(
                    name, aio_pika.ExchangeType.DIRECT, durable=True
                )
            return await channel.get_exchange(name, ensure=True)

    def send(
        self, receipts: dict[str, WrittenReceipt], within: Mapping[str, float] | None = None
    ) -> None:
        """Publish each receipt to its producer, or hold it while one to that producer awaits
        its confirm or for the `within[to]` seconds its batches said they can wait; returns at
        once."""
        now = asyncio.get_running_loop().time()
        for to, receipt in receipts.items():
            due = now + (within.get(to, 0.0) if within else 0.0)
            held = self._held.get(to)
            if held is None and due <= now and not self._in_flight.get(to):
                self._start(to, receipt)  # (no exchange yet: nothing in flight, dropped)
                continue
            if held is not None and not held.takes(receipt):
                self._start(to, self._held.pop(to).receipt())
                held = None
            if held is None:
                held = self._held[to] = _Held(to, receipt.consumer, receipt.output, due)
            held.add(receipt, due)
            if held.ranges >= MAX_HELD_RANGES:
                self._start(to, self._held.pop(to).receipt())
            elif not self._in_flight.get(to):
                self._release_when_due(to, held)

    def _release_when_due(self, to: str, held: _Held) -> None:
        """A receipt to `to` was confirmed, or none is in flight: its held receipt goes now if
        due, else at its time (`_due`, which waits for what is in flight then)."""
        loop = asyncio.get_running_loop()
        if self._flushing or held.due <= loop.time():
            self._start(to, self._held.pop(to).receipt())
        elif held.timer is None or held.timer.when() > held.due:
            if held.timer is not None:
                held.timer.cancel()
            held.timer = loop.call_at(held.due, self._due, to, held)

    def _due(self, to: str, held: _Held) -> None:
        held.timer = None
        if self._held.get(to) is held and not self._in_flight.get(to):
            self._start(to, self._held.pop(to).receipt())

    def _start(self, to: str, receipt: WrittenReceipt) -> None:
        if self._exchange is None or len(self._pending) >= self._max_pending:
            self._count(DROPPED)
            return
        task = asyncio.create_task(self._publish(self._exchange, to, receipt))
        self._pending.add(task)
        self._in_flight[to] = self._in_flight.get(to, 0) + 1
        task.add_done_callback(lambda done: self._finished(to, done))

    def _finished(self, to: str, task: asyncio.Task[None]) -> None:
        """A receipt's publish ended (confirmed or not): what was held for its producer goes."""
        self._pending.discard(task)
        left = self._in_flight[to] - 1
        if left:
            self._in_flight[to] = left
        else:
            del self._in_flight[to]
        held = self._held.get(to)
        if held is None:
            return
        if task.cancelled():  # shutting down: it would not leave either
            self._held.pop(to).drop()
            self._count(DROPPED)
            return
        self._release_when_due(to, held)

    async def _publish(self, exchange: AbstractExchange, to: str, receipt: WrittenReceipt) -> None:
        message = aio_pika.Message(
            encode(receipt),
            content_type=CONTENT_TYPE,
            type=MESSAGE_TYPE,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        try:
            result = await exchange.publish(message, to, mandatory=True, timeout=self._timeout)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # aiormq cancels pending confirms when the connection goes: not our cancellation
            self._failed(to, "confirm lost")
            return
        except PUBLISH_ERRORS as error:
            self._failed(to, f"{type(error).__name__}: {error}")
            return
        self._failing = False
        self._count(UNROUTABLE if isinstance(result, aiormq.abc.DeliveredMessage) else SENT)

    def _failed(self, to: str, error: str) -> None:
        self._count(FAILED)
        if not self._failing:
            self._failing = True
            log.warning("receipt_publish_failed", extra={"producer": to, "error": error})
