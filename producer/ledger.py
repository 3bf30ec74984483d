"""The acknowledgement ledger: the one owner of batches in flight. It alone turns broker confirms
into checkpoint progress (in order, per source) and into backpressure (room to read)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass

from prometheus_client import Gauge

from logship.wire import Batch
from producer.checkpoint import Checkpoint


@dataclass(slots=True)
class Entry:
    """One batch between its publish and its confirm (or its abandonment at shutdown)."""

    source: str
    start: int
    end: int
    confirmed: bool = False
    settled: bool = False

    @property
    def size(self) -> int:
        return self.end - self.start


class AckLedger:
    """Batches are recorded when sent, in the order they were read. A confirm marks its batch; the
    checkpoint then moves over every leading confirmed batch of that source, never past an
    unconfirmed one (Vector's ordered finalizer is the model): a crash re-sends from the first
    unconfirmed byte, and the consumer's byte ranges absorb what was already delivered.

    Reading waits while `max_batches` batches or `max_bytes` bytes are unsettled. Bytes bound memory
    when batches are large (a fast file); the count keeps many small batches (a slow file, sent at
    once for latency) from queueing behind each other. At most max_bytes - 1 plus one batch are in
    flight."""

    def __init__(
        self, checkpoint: Checkpoint, *, max_batches: int, max_bytes: int, gauge: Gauge
    ) -> None:
        self._checkpoint = checkpoint
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self._gauge = gauge
        self._by_source: dict[str, deque[Entry]] = {}
        self.batches = 0
        self.bytes = 0
        self._changed = asyncio.Event()

    def sent(self, batch: Batch) -> Entry:
        """Record a batch about to be published; settle it with `confirmed` or `abandoned`."""
        entry = Entry(batch.source, batch.start, batch.end)
        self._by_source.setdefault(batch.source, deque()).append(entry)
        self.batches += 1
        self.bytes += entry.size
        self._gauge.inc()
        return entry

    def confirmed(self, entry: Entry) -> None:
        """The broker confirmed this batch: advance its source over the leading confirmed ones."""
        if not self._settle(entry):
            return
        entry.confirmed = True
        pending = self._by_source.get(entry.source)
        if pending is None:
            return
        while pending and pending[0].confirmed:
            self._checkpoint.advance(entry.source, pending.popleft().end)
        if not pending:
            del self._by_source[entry.source]

    def abandoned(self, entry: Entry) -> None:
        """Never confirmed (shutting down): frees its room; the checkpoint stays before it, so
        the next start reads it again."""
        self._settle(entry)

    def _settle(self, entry: Entry) -> bool:
        if entry.settled:
            return False
        entry.settled = True
        self.batches -= 1
        self.bytes -= entry.size
        self._gauge.dec()
        self._changed.set()
        return True

    @property
    def unconfirmed(self) -> int:
        """Batches recorded and not confirmed (abandoned ones included): what a restart re-sends."""
        return sum(1 for pending in self._by_source.values() for e in pending if not e.confirmed)

    def sources(self) -> set[str]:
        """Sources with a batch not yet confirmed: their checkpoint entries must be kept."""
        return set(self._by_source)

    def full(self) -> bool:
        return self.batches >= self.max_batches or self.bytes >= self.max_bytes

    async def wait_for_a_settle(self, at_most: float) -> None:
        """Until a batch in flight settles (confirmed, or abandoned at a stop), `at_most` seconds
        at most: nothing to wait for returns at once."""
        if not self.batches:
            return
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), at_most)

    async def wait_for_room(self, stop: asyncio.Event) -> bool:
        """True once there is room to read another batch; False when `stop` is set first."""
        while self.full():
            if stop.is_set():
                return False
            self._changed.clear()
            changed = asyncio.ensure_future(self._changed.wait())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            stopping.cancel()
        return True
