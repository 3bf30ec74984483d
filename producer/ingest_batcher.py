"""Turns POSTed bodies into batches of the ingest source. Bodies follow each other in the source
(their byte ranges touch), so bodies that arrive while earlier batches await their confirm are
sent together, as the file path sends in one batch what accumulated since its last read: fewer,
larger messages for the broker and the consumer when requests are small and many."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from logship.wire import Batch, now_ns
from producer.batcher import Cut, cut_batch

INGEST_PATH = "http:/v1/lines"  # x-logship-path of ingest batches (informational)

# what batches are handed to: the producer's Publisher.submit (a future per batch)
Submit = Callable[[Batch], "asyncio.Future[None]"]


@dataclass(frozen=True, slots=True)
class Batching:
    """The file path's batch limits and linger, applied to POSTed bodies the same way."""

    max_bytes: int
    max_lines: int
    linger: float = 0.0


class Confirms:
    """The confirms of every batch holding part of one body; the last one settles it (True:
    all confirmed; False: one was abandoned, the producer stops). `submitted`: when the last of
    those batches went to the publisher, `settled` when the last confirm came (time.monotonic;
    0.0 until then): the ingest stages."""

    __slots__ = ("_left", "_ok", "_settle", "settled", "submitted")

    def __init__(self, settle: Callable[[bool], None]) -> None:
        self._settle = settle
        self._left = 0
        self._ok = True
        self.submitted = 0.0
        self.settled = 0.0

    def add(self, confirmed: asyncio.Future[None]) -> None:
        self._left += 1
        self.submitted = time.monotonic()
        confirmed.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[None]) -> None:
        self._ok = self._ok and not future.cancelled() and future.exception() is None
        self._left -= 1
        if self._left == 0:
            self.settled = time.monotonic()
            self._settle(self._ok)


@dataclass(slots=True)
class _Queued:
    body: bytes
    start: int
    lines: int
    confirms: Confirms


class IngestBatcher:
    """Bodies in, batches out, in offset order. A body is sent at once while nothing of ours
    awaits a confirm; otherwise it waits for company until the first of: a confirm comes back
    (the broker is ready for more), `linger` has passed, a batch is full. Waiting for the linger
    alone held every body its full 2 ms even when the confirm came sooner, and sending every
    body at once while one batch was in flight cost the broker a message per POST: both measured
    slower (bench/README "Where the HTTP tail goes"). `release(n)`: n bytes of the confirm window
    are settled."""

    def __init__(
        self, source: str, batching: Batching, submit: Submit, release: Callable[[int], None]
    ) -> None:
        self.source = source
        self.batching = batching
        self._submit = submit
        self._release = release
        self._queued: list[_Queued] = []
        self._queued_bytes = 0
        self._unconfirmed = 0  # our batches awaiting their confirm
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None

    def add(self, body: bytes, start: int, lines: int, confirms: Confirms) -> None:
        self._queued.append(_Queued(body, start, lines, confirms))
        self._queued_bytes += len(body)
        if self._queued_bytes >= self.batching.max_bytes:
            self.flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            if self._unconfirmed and self.batching.linger > 0:
                self._timer = loop.call_later(self.batching.linger, self.flush)
            else:  # after the bodies that complete in this turn of the loop
                self._timer = loop.call_soon(self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queued, self._queued, self._queued_bytes = self._queued, [], 0
        if not queued:
            return
        data = queued[0].body if len(queued) == 1 else b"".join(q.body for q in queued)
        lines = sum(q.lines for q in queued)
        start = queued[0].start
        view = memoryview(data)
        position = 0
        first = 0  # the first queued body the next batch overlaps
        while position < len(data):
            cut = self._cut(data, position, lines if position == 0 else None)
            batch = Batch(
                self.source,
                INGEST_PATH,
                start + position,
                start + position + cut.length,
                cut.lines,
                now_ns(),
                view[position : position + cut.length],
            )
            confirmed = self._submit(batch)
            self._unconfirmed += 1
            confirmed.add_done_callback(self._settled(cut.length))
            end = batch.end
            while first < len(queued) and queued[first].start < end:
                body = queued[first]
                body.confirms.add(confirmed)
                if body.start + len(body.body) > end:
                    break  # it goes on in the next batch
                first += 1
            position += cut.length

    def _cut(self, data: bytes, position: int, lines: int | None) -> Cut:
        """The next batch from `position`: all of it when it fits the limits (the common case,
        no copy), else cut as the file path cuts a chunk."""
        limits = self.batching
        if lines is not None and len(data) <= limits.max_bytes and lines <= limits.max_lines:
            return Cut(len(data), lines, oversized=False)
        chunk = data[position : position + limits.max_bytes]
        return cut_batch(chunk, max_bytes=limits.max_bytes, max_lines=limits.max_lines)

    def _settled(self, size: int) -> Callable[[asyncio.Future[None]], None]:
        def settled(future: asyncio.Future[None]) -> None:
            self._unconfirmed -= 1
            self._release(size)
            # a confirm: what waited for company goes now (a cancellation is the publisher
            # closing, which takes nothing more)
            if self._queued and not future.cancelled():
                self.flush()

        return settled
