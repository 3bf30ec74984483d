"""The ingest API's receipts: one per POST, from `pending` (sent) to `confirmed` (durable in the
broker) to `written` (durable in an output), found by id, by Idempotency-Key and by byte range,
bounded in number and age. No I/O; asyncio only for waiting."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PENDING, CONFIRMED, WRITTEN = "pending", "confirmed", "written"


@dataclass(frozen=True, slots=True)
class Piece:
    """Where bytes [start, end) of a receipt's source landed: which consumer, which output, and
    the same bytes' place in that output (None: they were there already, delivered before, and
    the consumer no longer knows where)."""

    consumer: str
    output: str
    start: int
    end: int
    output_start: int | None
    output_end: int | None

    def as_json(self) -> dict[str, object]:
        return {
            "consumer": self.consumer,
            "output": self.output,
            "start": self.start,
            "end": self.end,
            "output_start": self.output_start,
            "output_end": self.output_end,
        }


@dataclass(eq=False, slots=True)
class Receipt:
    """One POST's bytes: [start, end) of `source`. `fingerprint` ties an Idempotency-Key to the
    body it first came with.

    Up to `receipts_max` (100,000) of these live for minutes, so each is one object the garbage
    collector tracks, no more: its future exists only while it is pending, its event only while
    someone waits for it, its pieces are tuples. With a future, an event (and its deque) and a
    list of piece objects each, 100,000 receipts were 600,000 tracked objects, and every full
    collection stopped the event loop for 170-260 ms (every POST waiting meanwhile)."""

    id: str
    source: str
    start: int
    end: int
    lines: int
    created: float
    key: str | None = None
    fingerprint: tuple[int, int] = (0, 0)
    confirmed: bool = False
    # the pieces as tuples of plain values, which the collector stops tracking
    placed: tuple[tuple[str, str, int, int, int | None, int | None], ...] = ()
    written_bytes: int = 0  # of [start, end), how many bytes the pieces cover
    # while pending: True once confirmed, False if it never will be (then dropped)
    settled: asyncio.Future[bool] | None = None
    changed: asyncio.Event | None = None  # while someone waits: set on every change
    waiters: int = 0

    @property
    def pieces(self) -> tuple[Piece, ...]:
        return tuple(Piece(*p) for p in self.placed)

    def notify(self) -> None:
        if self.changed is not None:
            self.changed.set()

    @property
    def state(self) -> str:
        if self.written_bytes >= self.end - self.start:
            return WRITTEN
        return CONFIRMED if self.confirmed else PENDING

    def as_json(self) -> dict[str, object]:
        answer: dict[str, object] = {
            "id": self.id,
            "state": self.state,
            "source": self.source,
            "start": self.start,
            "end": self.end,
            "lines": self.lines,
        }
        if self.state == WRITTEN:
            answer["written"] = [piece.as_json() for piece in self.pieces]
            first = self.pieces[0]
            answer.update(consumer=first.consumer, output=first.output)
            if len(self.pieces) == 1:  # the common case: one output, one contiguous range
                answer.update(output_start=first.output_start, output_end=first.output_end)
        return answer

    def add_piece(self, piece: Piece) -> None:
        """A piece that covers nothing new (a repeated receipt) is dropped, unless it has a
        place and replaces pieces without one."""
        pieces = self.pieces
        covered = _covered(pieces)
        kept = pieces
        if piece.output_start is not None:
            kept = tuple(
                p
                for p in pieces
                if p.output_start is not None or not piece.start <= p.start < p.end <= piece.end
            )
        if len(kept) == len(pieces) and _covered([*kept, piece]) == covered:
            return
        ordered = sorted([*kept, piece], key=lambda p: p.start)
        self.placed = tuple(
            (p.consumer, p.output, p.start, p.end, p.output_start, p.output_end) for p in ordered
        )
        self.written_bytes = _covered(ordered)
        self.notify()


def _covered(pieces: Sequence[Piece]) -> int:
    total, reach = 0, -1
    for piece in sorted(pieces, key=lambda p: p.start):
        start = max(piece.start, reach)
        if piece.end > start:
            total += piece.end - start
        reach = max(reach, piece.end)
    return total


class ReceiptStore:
    """Receipts by id (insertion order = age), by Idempotency-Key, and per source in byte order
    for the written notices that come back from consumers. At most `max_receipts`, none older
    than `ttl` seconds: the oldest go first, whatever their state (a client asking later gets a
    404, which the README documents). A pending receipt is invisible to `get`: its id was not
    given out yet."""

    def __init__(
        self, *, max_receipts: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_receipts = max_receipts
        self.ttl = ttl
        self._clock = clock
        self._by_id: OrderedDict[str, Receipt] = OrderedDict()
        self._by_key: dict[str, Receipt] = {}
        self._closed = False
        # per source: receipts in byte order, the first `head` of them gone (compacted lazily,
        # so evicting the oldest is O(1) and finding a range stays a bisect)
        self._by_source: dict[str, tuple[list[Receipt], list[int]]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def new(
        self,
        source: str,
        start: int,
        end: int,
        lines: int,
        *,
        key: str | None = None,
        fingerprint: tuple[int, int] = (0, 0),
    ) -> Receipt:
        """A pending receipt for bytes about to be sent. Byte ranges of one source are added in
        increasing order (the ingest API hands them out so)."""
        self.expire()
        receipt = Receipt(
            id=secrets.token_urlsafe(12),
            source=source,
            start=start,
            end=end,
            lines=lines,
            created=self._clock(),
            key=key,
            fingerprint=fingerprint,
        )
        receipt.settled = asyncio.get_running_loop().create_future()
        self._by_id[receipt.id] = receipt
        if key is not None:
            self._by_key[key] = receipt
        receipts, _ = self._by_source.setdefault(source, ([], [0]))
        receipts.append(receipt)
        while len(self._by_id) > self.max_receipts:
            self._evict()
        return receipt

    def get(self, receipt_id: str) -> Receipt | None:
        self.expire()
        receipt = self._by_id.get(receipt_id)
        return receipt if receipt is not None and receipt.state != PENDING else None

    def by_key(self, key: str) -> Receipt | None:
        self.expire()
        return self._by_key.get(key)

    def confirmed(self, receipt: Receipt) -> None:
        receipt.confirmed = True
        receipt.notify()
        _settle(receipt, True)

    def failed(self, receipt: Receipt) -> None:
        """Never confirmed (the producer stops): forgotten, so a retry with its key is new."""
        _settle(receipt, False)
        receipt.notify()
        if receipt.key is not None and self._by_key.get(receipt.key) is receipt:
            del self._by_key[receipt.key]
        self._by_id.pop(receipt.id, None)

    def written(self, source: str, start: int, end: int, piece: Piece) -> int:
        """Bytes [start, end) of `source` are durable where `piece` says (piece.start/end equal
        start/end): every receipt they overlap gets its part. Returns how many receipts moved."""
        entry = self._by_source.get(source)
        if entry is None:
            return 0
        receipts, head = entry
        first = bisect.bisect_right(receipts, start, lo=head[0], key=lambda r: r.start) - 1
        moved = 0
        for index in range(max(first, head[0]), len(receipts)):
            receipt = receipts[index]
            if receipt.start >= end:
                break
            lo, hi = max(start, receipt.start), min(end, receipt.end)
            if lo >= hi:
                continue
            place: tuple[int | None, int | None] = (None, None)
            if piece.output_start is not None:
                shift = piece.output_start - start
                place = (lo + shift, hi + shift)
            receipt.add_piece(Piece(piece.consumer, piece.output, lo, hi, *place))
            moved += 1
        return moved

    async def wait_written(self, receipt: Receipt, seconds: float) -> bool:
        """True once the receipt is written; False after `seconds`, if it is gone, or at stop."""
        deadline = self._clock() + seconds
        if receipt.changed is None:
            receipt.changed = asyncio.Event()
        changed = receipt.changed
        receipt.waiters += 1
        try:
            while receipt.state != WRITTEN:
                left = deadline - self._clock()
                if left <= 0 or receipt.id not in self._by_id or self._closed:
                    return False
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
            return True
        finally:
            receipt.waiters -= 1
            if receipt.waiters == 0:
                receipt.changed = None

    def close(self) -> None:
        """At shutdown: every waiter answers now with what it has."""
        self._closed = True
        for receipt in self._by_id.values():
            receipt.notify()

    def expire(self) -> None:
        cutoff = self._clock() - self.ttl
        while self._by_id:
            oldest = next(iter(self._by_id.values()))
            if oldest.created > cutoff or oldest.state == PENDING:
                return
            self._evict()

    def _evict(self) -> None:
        _, receipt = self._by_id.popitem(last=False)
        receipt.notify()
        if receipt.key is not None and self._by_key.get(receipt.key) is receipt:
            del self._by_key[receipt.key]
        entry = self._by_source.get(receipt.source)
        if entry is None:
            return
        receipts, head = entry
        while head[0] < len(receipts) and receipts[head[0]].id not in self._by_id:
            head[0] += 1
        if head[0] == len(receipts):
            del self._by_source[receipt.source]
        elif head[0] > len(receipts) // 2:
            del receipts[: head[0]]
            head[0] = 0


def _settle(receipt: Receipt, confirmed: bool) -> None:
    """Answer the POST waiting for it, and drop the future: a settled receipt needs none (a
    retry reads `confirmed`)."""
    if receipt.settled is not None and not receipt.settled.done():
        receipt.settled.set_result(confirmed)
    receipt.settled = None
