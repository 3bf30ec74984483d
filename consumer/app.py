"""Wires the consumer: subscriber → decode → sink (append, fsync, state) → acknowledge, with write
retries that never acknowledge unwritten bytes and a bounded graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from consumer.archive import oldest_age
from consumer.metrics import ConsumerMetrics
from consumer.receipts import ReceiptSender, receipts_of
from consumer.reorder import ReorderHold
from consumer.settings import ConsumerSettings, FsyncPolicy
from consumer.sink import Plan, Sink
from consumer.subscriber import Subscriber
from logship.amqp import backoff_delays
from logship.lifecycle import EarlySignals, with_deadline
from logship.receipts import receipt_delays, receipts_to
from logship.service import Service
from logship.wire import Delivered, PoisonMessage, decode, now_ns

log = logging.getLogger("logship.consumer")

OUTPUT_CHECK_INTERVAL = 1.0
ARCHIVE_CHECK_INTERVAL = 60.0


class ConsumerApp:
    def __init__(self, settings: ConsumerSettings, metrics: ConsumerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stop = asyncio.Event()
        self.reopen_output = asyncio.Event()  # SIGHUP: follow a rotated output now
        self.sink = Sink(
            settings.output,
            fsync=settings.fsync is FsyncPolicy.always,
            on_rotated=lambda reason: metrics.output_rotations.labels(reason).inc(),
            on_lost=lambda reason, lost: metrics.output_bytes_lost.labels(reason).inc(lost),
            on_repaired=metrics.output_bytes_repaired.inc,
        )
        self.subscriber: Subscriber | None = None
        # batches that came before the ones in front of them (a failover) wait for those
        self.hold: ReorderHold[AbstractIncomingMessage] = ReorderHold(
            settings.reorder_wait, max_held=settings.prefetch
        )
        self._crowded_polls = 0  # queue depth polls in a row that saw other consumers
        # set when holding for order was switched off with batches held: the write loop, asleep
        # until the oldest one's deadline (up to reorder-wait), writes them now
        self._hold_released = asyncio.Event()
        self._last_activity = time.monotonic()
        self._queue_empty_since: float | None = None
        self._busy = False
        # set when a group was left unwritten at stop: from then on nothing is written or
        # acknowledged (a multiple ack of a later delivery would cover the unwritten one)
        self._left_unwritten = False
        self._created: list[Path] = []  # files this run created (removed after a refusal)
        self.consumer_id = settings.consumer_id
        self.receipts = ReceiptSender(
            settings.amqp,
            name="logship-consumer-receipts",
            count=lambda outcome: metrics.receipts.labels(outcome).inc(),
        )
        # when the last commit had written, synced and recorded its group (monotonic)
        self._committed = (0.0, 0.0, 0.0)

    def ready(self) -> bool:
        return self.subscriber is not None and self.subscriber.consuming

    def service(self) -> Service:
        """The shared skeleton runs this program: see logship/service.py."""
        return Service(
            self,
            name="logship-consumer",
            amqp=self.settings.amqp,
            http=self.settings.http,
            registry=self.metrics.registry,
            gc_pauses=self.metrics.gc_pauses,
            freeze_heap=True,
            connection_metrics=self.metrics.connection,
        )

    async def run(self, early: EarlySignals | None = None, *, signals: bool = True) -> int:
        return await self.service().run(early, signals=signals)

    async def prepare(self, service: Service) -> None:
        """Open the output before connecting, so a bad state file is reported without a broker;
        what this creates is removed again if the broker refuses the start (see close)."""
        self._created = [p for p in (self.sink.path, self.sink.state_path) if not p.exists()]
        self.sink.open()
        # also while the broker is away: a rotated output is let go of all the same
        service.spawn(self._follow_output(), "follow-output")

    async def start(self, connection: AbstractRobustConnection, service: Service) -> None:
        self.subscriber = Subscriber(
            connection,
            self.settings.amqp,
            prefetch=self.settings.prefetch,
            # room for batches held back for order (at most prefetch of them), so that the ones
            # they wait for can still be delivered
            reserve=self.settings.prefetch if self.settings.reorder_wait else 0,
            archive=self.settings.archive,
            observe_delivery=self.metrics.stage["publish_to_delivery"].observe,
        )
        await self.subscriber.start()  # a refused topology is said here, in one line, alone
        # receipts have a connection of their own; a backlog waiting since the last run gets its
        # receipts too, so it is ready (or known unavailable) before the first write (deliveries
        # wait in the inbox until main_loop)
        service.spawn(self.receipts.run(self.stop), "receipts")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.receipts.settled.wait(), self.settings.amqp.connect_timeout)
        log.info(
            "consumer_consuming",
            extra={
                "queue": self.settings.amqp.queue,
                "output": str(self.settings.output),
                "amqp": self.settings.amqp.redacted_url(),
                "node": str(getattr(connection, "node", None)),
                "prefetch": self.settings.prefetch,
                "fsync": self.settings.fsync.value,
                "http": service.telemetry.address,
                "id": self.consumer_id,
                "receipts": self.receipts.ready.is_set(),
            },
        )
        service.spawn(self._watch_queue(), "queue-depth")
        if self.settings.archive.enabled:
            self.metrics.archive_max_age.set(self.settings.archive.max_age_seconds())
            service.spawn(self._watch_archive(connection), "archive-age")

    async def main_loop(self) -> None:
        assert self.subscriber is not None, "start() first"
        await self._write_loop(self.subscriber)

    def _remove_if_refused(self) -> None:
        """A start the broker refused (credentials, topology) leaves no files behind: remove the
        output and state this run created, as long as nothing was written to them."""
        if self.sink.size == 0 and not self.sink.sources:
            for path in self._created:
                path.unlink(missing_ok=True)

    async def _next_group(self, subscriber: Subscriber) -> list[AbstractIncomingMessage]:
        """Wait for a delivery (or a held batch's deadline), then take everything already
        delivered: one write, one fsync and one acknowledgement for the lot (group commit)."""
        getter = asyncio.ensure_future(subscriber.inbox.get())
        stopping = asyncio.ensure_future(self.stop.wait())
        released = asyncio.ensure_future(self._hold_released.wait())
        deadline = self.hold.deadline()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait(
                {getter, stopping, released}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
            released.cancel()
            self._hold_released.clear()
        if not getter.done():
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getter
            if getter.cancelled():
                return []
        group = [getter.result()]
        while not subscriber.inbox.empty():
            group.append(subscriber.inbox.get_nowait())
        return group

    async def _write_loop(self, subscriber: Subscriber) -> None:
        while not self.stop.is_set():
            group = await self._next_group(subscriber)
            if group or self.hold.count:
                await self._handle(subscriber, group)

    async def _handle(
        self, subscriber: Subscriber, group: Sequence[AbstractIncomingMessage]
    ) -> None:
        """Write and acknowledge one group, unless an earlier group was left unwritten."""
        if self._left_unwritten:
            return
        self._busy = True
        self._last_activity = time.monotonic()
        self.metrics.in_hand.set(len(group) + subscriber.inbox.qsize())
        completed = False
        try:
            delivered_at = time.monotonic()
            oldest = subscriber.waiting_since if group else delivered_at
            good: list[tuple[AbstractIncomingMessage, Delivered]] = []
            for message in group:
                try:
                    good.append(
                        (message, decode(message.headers, message.body, message.content_encoding))
                    )
                except PoisonMessage as error:
                    await self._dead_letter(subscriber, message, error)
            was_holding = self.hold.count
            good = self.hold.take(good, self.sink.has_byte)
            if bool(was_holding) != bool(self.hold.count):
                event = "batches_held_for_order" if self.hold.count else "held_batches_released"
                log.info(event, extra={"held": self.hold.count or was_holding})
            if not good:
                completed = True
                return
            # receipts are wanted only by batches that name a producer (one header read each)
            wanted = [receipts_to(message.headers) for message, _ in good]
            plan = await self._write(good, wanted)
            if plan is None:
                return  # stopping while the disk refuses
            if await self._acknowledge(subscriber, good):
                acked = time.monotonic()
                self.metrics.ack_latency.observe(acked - delivered_at)
                self._observe_stages(oldest, acked)
            if plan.spans is not None:  # durable and recorded: now the producers may know
                self.receipts.send(
                    receipts_of(
                        plan, self.sink.written_at(plan), self.consumer_id, str(self.sink.path)
                    ),
                    receipt_delays(zip(wanted, (m.headers for m, _ in good), strict=True)),
                )
            finished_ns = now_ns()
            for _, item in good:
                if item.read_ns is not None and item.read_ns <= finished_ns:
                    self.metrics.end_to_end_latency.observe((finished_ns - item.read_ns) / 1e9)
            completed = True
        finally:
            if not completed:  # an error escaped mid-group: it may be unwritten
                self._left_unwritten = True
            self._busy = False
            self.metrics.in_hand.set(subscriber.inbox.qsize())

    async def _acknowledge(
        self, subscriber: Subscriber, written: list[tuple[AbstractIncomingMessage, Delivered]]
    ) -> bool:
        """One multiple ack through the last delivery when nothing is held back; else one ack
        each, since a multiple ack would cover a held, unwritten batch."""
        if not self.hold.count and self.hold.latest is not None:
            return await subscriber.ack_through(self.hold.latest)
        return await subscriber.ack_each([message for message, _ in written])

    async def _dead_letter(
        self, subscriber: Subscriber, message: AbstractIncomingMessage, error: PoisonMessage
    ) -> None:
        log.error(
            "message_dead_lettered",
            extra={
                "message_id": message.message_id,
                "delivery_tag": message.delivery_tag,
                "kind": error.kind,
                "reason": str(error),
            },
        )
        self.metrics.dead_lettered.labels(error.kind).inc()
        await subscriber.dead_letter(message, str(error))

    async def _write(
        self, good: list[tuple[AbstractIncomingMessage, Delivered]], wanted: list[str | None]
    ) -> Plan | None:
        """Write until it works; a failing disk pauses the consumer, it never acknowledges what is
        not written. The plan written; None only when asked to stop while still failing.
        `wanted`: per message, the producer that wants a written receipt of it, or None."""
        delays = backoff_delays(first=0.2, cap=self.settings.retry_max_delay)
        wants = wanted if any(wanted) else None
        while True:
            plan = self.sink.plan([item for _, item in good], wants)
            started = time.monotonic()
            try:
                fsync_s = self.sink.commit(plan)
            except OSError as error:
                self.sink.rollback(plan)
                self.metrics.write_errors.inc()
                delay = next(delays)
                log.error(
                    "write_failed",
                    extra={
                        "path": str(self.settings.output),
                        "error": error.strerror or str(error),
                        "retry_in": round(delay, 2),
                    },
                )
                if self.stop.is_set():
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                continue
            done = time.monotonic()
            self._count(plan, len(good), done - started - fsync_s, fsync_s)
            self._committed = (done - fsync_s, done - self.sink.last_record_s, done)
            return plan

    def _observe_stages(self, oldest: float, acked: float) -> None:
        """One observation per stage for the group just acknowledged (logship/stages.py)."""
        written, synced, recorded = self._committed
        stage = self.metrics.stage
        stage["delivery_to_written"].observe(max(0.0, written - oldest))
        stage["written_to_synced"].observe(synced - written)
        stage["synced_to_recorded"].observe(recorded - synced)
        stage["recorded_to_acked"].observe(acked - recorded)

    def _count(self, plan: Plan, messages: int, write_s: float, fsync_s: float) -> None:
        m = self.metrics
        m.write_latency.observe(write_s)
        if fsync_s:
            m.fsync_latency.observe(fsync_s)
        m.messages_written.inc(messages - plan.duplicates)
        m.lines_written.inc(plan.lines)
        m.bytes_written.inc(plan.bytes)
        if plan.duplicates:
            m.duplicates_skipped.inc(plan.duplicates)
            m.duplicate_bytes.inc(plan.duplicate_bytes)
        if plan.out_of_order:
            m.out_of_order.inc(plan.out_of_order)
            log.warning("batches_out_of_order", extra={"count": plan.out_of_order})

    async def _watch_queue(self) -> None:
        """Observe queue depth for metrics, and end the process once the queue stayed empty for
        exit_when_idle seconds (a Kubernetes Job draining a backlog)."""
        idle_limit = self.settings.exit_when_idle
        interval = self.settings.queue_poll_interval
        if idle_limit is not None:
            interval = min(interval, max(0.2, idle_limit / 4))
        while True:
            assert self.subscriber is not None
            depth = await self.subscriber.queue_depth()
            if depth is not None:
                ready, consumers = depth
                self.metrics.queue_messages_ready.set(ready)
                self.metrics.queue_consumers.set(consumers)
                # competing consumers each see every other batch: nothing to wait for then.
                # Two polls in a row, since a failover briefly shows our old consumer as well
                self._crowded_polls = self._crowded_polls + 1 if consumers > 1 else 0
                holding = self._crowded_polls < 2
                if self.hold.enabled and not holding and self.hold.count:
                    self._hold_released.set()
                self.hold.enabled = holding
                idle = (
                    ready == 0
                    and not self._busy
                    and self.subscriber.inbox.empty()
                    and not self.hold.count
                )
                now = time.monotonic()
                if not idle:
                    self._queue_empty_since = None
                elif self._queue_empty_since is None:
                    self._queue_empty_since = max(now, self._last_activity)
                if (
                    idle_limit is not None
                    and self._queue_empty_since is not None
                    and now - max(self._queue_empty_since, self._last_activity) >= idle_limit
                ):
                    log.info("queue_idle_exit", extra={"idle_s": idle_limit})
                    self.stop.set()
                    return
            await asyncio.sleep(interval)

    async def _watch_archive(self, connection: AbstractRobustConnection) -> None:
        """The age of the archive's first entry, for the alerts that compare it with its
        retention (older: retention is not applied; much younger: data went early). One
        delivery every ARCHIVE_CHECK_INTERVAL; the stream is only read."""
        while True:
            age = await oldest_age(
                connection, self.settings.archive.queue, self.settings.amqp.connect_timeout
            )
            if age is not None:
                self.metrics.archive_oldest_age.set(age)
            await asyncio.sleep(ARCHIVE_CHECK_INTERVAL)

    async def _follow_output(self) -> None:
        """Let go of a rotated output within OUTPUT_CHECK_INTERVAL even when no message comes
        (so logrotate can compress it), at once on SIGHUP. Writes check it themselves."""
        failing = ""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reopen_output.wait(), OUTPUT_CHECK_INTERVAL)
            self.reopen_output.clear()
            try:
                self.sink.follow()
                failing = ""
            except OSError as error:  # a write retries it with backoff; logged once a streak
                reason = error.strerror or str(error)
                if reason != failing:
                    failing = reason
                    log.error(
                        "output_reopen_failed", extra={"path": str(self.sink.path), "error": reason}
                    )

    async def drain(self, *, refused: bool) -> None:
        """Stop deliveries, finish and acknowledge what is in hand (fsync, close follow in
        `close`). Each step has a deadline; together they stay under shutdown_timeout (keep
        Kubernetes' terminationGracePeriodSeconds above it)."""
        budget = self.settings.shutdown_timeout
        if self.subscriber is not None:
            await with_deadline("cancel consumer", self.subscriber.cancel(), min(5, budget / 4))
            await with_deadline("finish in-hand messages", self._finish_inbox(), budget / 2)

    def close(self, *, refused: bool) -> None:
        self.sink.close()
        if refused:
            self._remove_if_refused()

    def stopped(self) -> None:
        if self.subscriber is not None:  # started: say how it ended
            log.info(
                "consumer_stopped",
                extra={
                    "lines_written": int(self.metrics.lines_written._value.get()),
                    "output_size": self.sink.size,
                },
            )

    async def _finish_inbox(self) -> None:
        assert self.subscriber is not None
        await asyncio.sleep(0)  # deliveries already read from the socket reach the inbox
        while not self.subscriber.inbox.empty() and not self._left_unwritten:
            group = []
            while not self.subscriber.inbox.empty():
                group.append(self.subscriber.inbox.get_nowait())
            await self._handle(self.subscriber, group)
