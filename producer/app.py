"""Wires the producer: tail → batch → publish ⇒ confirm → ledger → checkpoint, with backpressure (no
reading while the ledger is full) and a bounded shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import aiormq.exceptions
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError

from logship.amqp import backoff_delays
from logship.lifecycle import EarlySignals, with_deadline
from logship.receipts import WrittenReceipt
from logship.service import Service
from logship.wire import Batch
from producer.checkpoint import Checkpoint
from producer.discover import TailSet
from producer.follow import TailOptions
from producer.ledger import AckLedger
from producer.metrics import ProducerMetrics
from producer.notwritten import NotWritten
from producer.publisher import Publisher
from producer.settings import Compression, ProducerSettings
from producer.waker import Waker
from producer.written import WrittenFeed

if TYPE_CHECKING:
    from producer.ingest import IngestApi

log = logging.getLogger("logship.producer")

# after data was seen, re-read every batch_linger instead of waiting for an inotify event
ACTIVE_WINDOW_S = 1.0
# an active file's next read waits at most this long for a batch in flight to be confirmed
IN_FLIGHT_WAIT_S = 0.010
# while the input path names no file, stat it this often: inotify may not be watching yet
MISSING_FILE_POLL_S = 0.02
# a tailed file's written receipts may wait this long to go with later groups': they only move
# logship_producer_bytes_not_written, and one per consumer group (hundreds a second) cost both
# programs and the broker about a fifth of their CPU, which on two cores is latency
# (bench/README "Where the tail goes")
FILE_RECEIPTS_WITHIN_MS = 100
# what may go wrong while the receipts feed starts: retried, never fatal (receipts are advice)
FEED_ERRORS = (aiormq.exceptions.AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError)


def _ingest_api(
    settings: ProducerSettings, metrics: ProducerMetrics, stop: asyncio.Event
) -> IngestApi:
    """The HTTP ingest API, imported only when it is switched on (off by default): its modules
    (the API, its batcher, receipts store, OpenAPI document) are not loaded otherwise."""
    from producer.ingest import IngestApi
    from producer.ingest_batcher import Batching

    return IngestApi(
        settings.ingest,
        Batching(settings.batch_max_bytes, settings.batch_max_lines, settings.batch_linger),
        metrics.registry,
        stop=stop,
        receipts=settings.receipts,
    )


def waiting_text(path: str) -> str:
    return f"waiting for {path} to appear"


class ProducerApp:
    def __init__(self, settings: ProducerSettings, metrics: ProducerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stop = asyncio.Event()
        self.checkpoint = Checkpoint.load(settings.checkpoint)
        self.tails = TailSet(
            settings.input,
            self.checkpoint,
            TailOptions(
                max_bytes=settings.batch_max_bytes,
                max_lines=settings.batch_max_lines,
                rotation_grace=settings.rotation_grace,
                read_from_end=settings.read_from.value == "end",
            ),
            metrics,
        )
        self.publisher: Publisher | None = None
        self._waker: Waker | None = None
        self._announced: set[str] = set()  # input paths we said we wait for
        # the HTTP ingest API (POST /v1/lines), when switched on: see producer/ingest.py
        self.ingest = _ingest_api(settings, metrics, self.stop) if settings.ingest.enabled else None
        self.ledger = AckLedger(
            self.checkpoint,
            max_batches=settings.max_in_flight,
            max_bytes=settings.max_in_flight_bytes,
            gauge=metrics.in_flight,
        )
        self.producer_id = settings.producer_id
        # written receipts: the feed (others may add listeners before start) and what they say
        # of the files (None with receipts off)
        self.receipts: WrittenFeed | None = None
        self.not_written: NotWritten | None = None
        if settings.receipts:
            self.not_written = NotWritten()
            self.receipts = WrittenFeed(
                exchange=settings.amqp.exchange,
                producer_id=self.producer_id,
                on_written=self._on_written,
                declare=settings.amqp.declare,
                on_malformed=metrics.receipts.labels("malformed").inc,
                timeout=settings.amqp.connect_timeout,
            )
            if self.ingest is not None:
                self.receipts.add_listener(self.ingest.on_written)

    def ready(self) -> bool:
        """Connected and able to ship: also while the input file does not exist yet. Readiness
        says whether this process can do its job, and waiting for an application that has not
        written its log yet is part of that job: a 503 would only page someone (or, behind a
        Service, change nothing) for the normal state of a pod started before its application.
        `readiness_detail` says what it waits for."""
        return self.publisher is not None and self.publisher.ready

    def readiness_detail(self) -> list[str]:
        """/readyz's lines after ready / not ready: the input file it waits for, if any."""
        return [waiting_text(path) for path in self.tails.waiting_for()]

    def _announce_waiting(self) -> None:
        """Say once that the input path names no file (not on every poll), and once that it
        appeared. Not in --once mode: that run ships what exists and ends, it waits for nothing."""
        if self.settings.once:
            return
        waiting = set(self.tails.waiting_for())
        for path in sorted(waiting - self._announced):
            log.info("waiting_for_input", extra={"path": path, "detail": waiting_text(path)})
        for path in sorted(self._announced - waiting):
            log.info("input_appeared", extra={"path": path})
        self._announced = waiting

    def status(self) -> dict[str, object]:
        """/status: per source the offset read so far, which only this process knows."""
        return {"read": {f.source.id: f.read_offset for f in self.tails.open_files()}}

    def service(self) -> Service:
        """The shared skeleton runs this program: see logship/service.py."""
        return Service(
            self,
            name="logship-producer",
            amqp=self.settings.amqp,
            http=self.settings.http,
            registry=self.metrics.registry,
            gc_pauses=self.metrics.gc_pauses,
            freeze_heap=True,
            connection_metrics=self.metrics.connection,
            status=self.status,
            detail=self.readiness_detail,
            routes=self.ingest.routes() if self.ingest is not None else (),
        )

    async def run(self, early: EarlySignals | None = None, *, signals: bool = True) -> int:
        return await self.service().run(early, signals=signals)

    async def prepare(self, service: Service) -> None:
        """Nothing before connecting: the checkpoint was read in the constructor."""

    async def start(self, connection: AbstractRobustConnection, service: Service) -> None:
        self.publisher = Publisher(
            connection,
            self.settings.amqp,
            self.metrics,
            publish_timeout=self.settings.publish_timeout,
            compress=self.settings.compression is Compression.zstd,
            archive=self.settings.archive,
            receipts_to=self.producer_id if self.receipts is not None else None,
        )
        await self.publisher.start()
        if self.ingest is not None:
            publisher = self.publisher
            self.ingest.attach(publisher.submit, lambda: publisher.ready)
        # after the topology is declared: a refused one is the only line printed
        log.info(
            "producer_started",
            extra={
                "input": self.settings.input,
                "amqp": self.settings.amqp.redacted_url(),
                "node": str(getattr(connection, "node", None)),
                "exchange": self.settings.amqp.exchange,
                "queue_type": self.settings.amqp.queue_type.value,
                "http": service.telemetry.address,
                "id": self.producer_id,
                "receipts": self.receipts is not None,
                "ingest_source": self.ingest.source if self.ingest is not None else None,
            },
        )
        if self.receipts is not None:
            # before the first batch: a receipt that comes before the queue is bound is lost
            settled = asyncio.Event()
            service.spawn(self._receive_receipts(self.receipts, connection, settled), "receipts")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), self.settings.amqp.connect_timeout)
        self._waker = Waker(
            self.tails.directory,
            self.settings.input,
            poll=self.settings.poll,
            stop=self.stop,
            held=self.tails.held_files,
        )
        self._waker.open()
        service.spawn(self._waker.run(), "waker")
        service.spawn(self._checkpoint_writer(), "checkpointer")

    async def main_loop(self) -> None:
        assert self._waker is not None, "start() first"
        await self._read_loop(self._waker)

    async def _read_loop(self, waker: Waker) -> None:
        linger = self.settings.batch_linger
        last_data = 0.0
        self.tails.check()
        log.info(
            "producer_watching",
            extra={"input": self.settings.input, "files": len(self.tails.tails)},
        )
        self._announce_waiting()
        while not self.stop.is_set():
            # backpressure: no reading while too much awaits its confirm
            if not await self.ledger.wait_for_room(self.stop):
                break
            waker.covered()
            batch = self.tails.read(once=self.settings.once)
            if batch is None:
                # at the end of what we can read: a good moment to look for rotation
                self.tails.check()
                self._announce_waiting()
                batch = self.tails.read(once=self.settings.once)
            if batch is not None:
                last_data = time.monotonic()
                if not await self._identity_saved(waker):
                    break  # stopped: the batch was not published; a restart reads it again
                self._send(batch)
                continue
            if self.settings.once and self.tails.idle():
                await self._drain_in_flight(None)
                return
            if waker.kernel:
                await self._wait_for_change(waker, last_data)
                continue
            active = time.monotonic() - last_data < ACTIVE_WINDOW_S
            if active and linger > 0:
                await waker.wait(linger)
                # while a batch awaits its confirm, what came meanwhile waits for it (at most
                # IN_FLIGHT_WAIT_S) and goes as one batch: one message per linger, each a
                # publish, a confirm, a consumer's group with its fsyncs and a receipt, took
                # more CPU than the lines at low rates, and on two cores that CPU was the
                # broker's latency (bench/README "Where the tail goes")
                await self.ledger.wait_for_a_settle(IN_FLIGHT_WAIT_S)
                continue
            await waker.wait(self._pause())

    def _pause(self) -> float:
        """The longest wait for an event: the safety net's period."""
        if self.tails.waiting_for_a_file():
            return min(self.settings.poll_interval, MISSING_FILE_POLL_S)
        return self.settings.poll_interval

    async def _wait_for_change(self, waker: Waker, last_data: float) -> None:
        """With the kernel's events: until a change; then, if the last read found bytes less
        than the linger ago, until the linger is over (the least gap between two reads of a
        growing file: a batch per write would cost more than the lines); then until a batch in
        flight settles, if one is (see `_read_loop`)."""
        await waker.wait(self._pause())
        gap = last_data + self.settings.batch_linger - time.monotonic()
        if gap > 0:
            await asyncio.sleep(gap)
        await self.ledger.wait_for_a_settle(IN_FLIGHT_WAIT_S)

    async def _identity_saved(self, waker: Waker) -> bool:
        """Publishing waits while a new source's identity is not on disk (its write failed,
        say on a full disk): retried every poll interval; False if stopped meanwhile."""
        while self.checkpoint.identity_unsaved:
            self._save_checkpoint()
            if not self.checkpoint.identity_unsaved:
                break
            await waker.wait(self.settings.poll_interval)
            if self.stop.is_set():
                return False
        return True

    async def _receive_receipts(
        self, feed: WrittenFeed, connection: AbstractRobustConnection, settled: asyncio.Event
    ) -> None:
        """Start the feed (retried while the broker refuses it: receipts are advice, never a
        reason to stop shipping), keep it until shutdown; the robust channel re-declares its
        queue after reconnects."""
        delays = backoff_delays(first=1.0, cap=30.0)
        while True:
            try:
                await feed.start(connection)
                break
            except FEED_ERRORS as error:
                settled.set()  # shipping goes on without receipts meanwhile
                delay = next(delays)
                log.warning(
                    "receipts_feed_failed",
                    extra={"queue": feed.queue, "error": str(error), "retry_in": round(delay, 2)},
                )
                await asyncio.sleep(delay)
        settled.set()
        try:
            await asyncio.Event().wait()  # until cancelled at shutdown
        finally:
            await feed.stop()

    def _on_written(self, receipt: WrittenReceipt) -> None:
        self.metrics.receipts.labels("received").inc()
        if self.not_written is None:
            return
        for path in self.not_written.written(receipt):
            self.metrics.bytes_not_written.labels(path).set(self.not_written.value(path))

    def _send(self, batch: Batch) -> None:
        assert self.publisher is not None
        if self.not_written is not None:
            path = self.not_written.sent(batch.source, batch.path, batch.start, batch.end)
            self.metrics.bytes_not_written.labels(path).set(self.not_written.value(path))
        entry = self.ledger.sent(batch)
        self.metrics.batches_published.inc()
        confirmed = self.publisher.submit(batch, receipts_within_ms=FILE_RECEIPTS_WITHIN_MS)

        def settled(future: asyncio.Future[None]) -> None:
            if future.cancelled():
                self.ledger.abandoned(entry)
            else:
                self.ledger.confirmed(entry)

        confirmed.add_done_callback(settled)

    async def _checkpoint_writer(self) -> None:
        """Group commit: the checkpoint is written at most every checkpoint_interval, and only
        ever holds offsets the broker confirmed."""
        interval = max(self.settings.checkpoint_interval, 0.01)
        while True:
            await asyncio.sleep(interval)
            if self.checkpoint.dirty:
                self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        """A failed write is logged, not raised: a stale checkpoint only means re-sending (which
        the consumer skips); the next interval tries again."""
        try:
            self.checkpoint.save(prune_except=self.ledger.sources())
        except OSError as error:
            log.error(
                "checkpoint_write_failed",
                extra={"path": str(self.settings.checkpoint), "error": error.strerror},
            )
            return
        self.metrics.checkpoint_writes.inc()

    async def _ship_deleted(self) -> None:
        """A clean stop first reads what deleted files we hold still have (after it nobody can):
        within half the shutdown timeout, the rest of which waits for the confirms; what is
        left then is reported lost."""
        never = asyncio.Event()
        while self.tails.deleted_unread():
            await self.ledger.wait_for_room(never)
            batch = self.tails.read_deleted()
            if batch is None:
                return
            self._send(batch)

    async def _drain_in_flight(self, deadline: float | None) -> None:
        if self.publisher is None:
            return
        if deadline is None:
            await self.publisher.drain()
        else:
            await with_deadline("confirm in-flight batches", self.publisher.drain(), deadline)

    async def drain(self, *, refused: bool) -> None:
        """Ship what deleted files still hold, wait for the confirms, abandon the rest: within
        shutdown_timeout (keep Kubernetes' terminationGracePeriodSeconds above it)."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        if self.ingest is not None:
            self.ingest.close()  # POSTs get 503 from now; waiters answer with what they have
        if self.publisher is not None and not refused:
            await with_deadline(
                "ship what deleted files still hold",
                self._ship_deleted(),
                self.settings.shutdown_timeout / 2,
            )
        await self._drain_in_flight(max(0.1, deadline - time.monotonic()))
        if self.publisher is not None:
            await with_deadline("abandon unconfirmed batches", self.publisher.close(), 5)

    def close(self, *, refused: bool) -> None:
        if not refused:  # a start the broker refused leaves no checkpoint behind
            # a last look: what changed since the one before (say a copytruncate of a file we
            # had read nothing of) is known to the checkpoint written now. A rotation older
            # than that write counts as known at the next start, so one this look misses would
            # be missed for good
            if self.tails.started:
                self.tails.check()
            self.tails.report_deleted_unread()
            self._save_checkpoint()
        self.tails.close()
        self.checkpoint.close()
        if self._waker is not None:
            self._waker.close()

    def stopped(self) -> None:
        if self.publisher is not None:  # started: say how it ended
            log.info(
                "producer_stopped",
                extra={
                    "lines_read": int(self.metrics.lines_read._value.get()),
                    "in_flight_left": self.ledger.unconfirmed,
                },
            )
