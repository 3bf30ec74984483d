"""Holding back a batch that arrives before the batches in front of it in its file, until they
come (or a deadline passes), so the output keeps the input's order through a broker failover.

Why it happens: when the node a consumer reads through dies, the messages it held unacknowledged
go back to the queue only once the queue's leader has noticed; a consumer that reconnected to
another node faster receives later batches first. Those earlier batches always come back, so
waiting a little for them keeps the output byte-identical to the input. Pure: no I/O, no clock of
its own beyond the one passed in."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from logship.wire import Delivered

T = TypeVar("T")


@dataclass
class _Held(Generic[T]):
    message: T
    item: Delivered
    since: float
    seq: int = field(compare=False)


class ReorderHold(Generic[T]):
    """Decides which delivered batches to write now and which to keep (unwritten and
    unacknowledged) because a batch before them in the same file has not arrived yet.

    Only `enabled` while this consumer is the queue's only one: with several consumers, each sees
    every other batch and every batch would wait. It starts enabled: a consumer that starts takes
    over the unacknowledged batches of the one before it, and those come back only once the queue
    noticed that one gone, after later batches were already delivered (a restarted consumer wrote
    them out of order under CI load, before its first queue poll); two polls that see other
    consumers switch it off. `wait` (seconds) bounds how long a batch waits; `max_held` bounds how
    many wait (memory, and the prefetch window they take)."""

    def __init__(
        self, wait: float, max_held: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.wait = wait
        self.max_held = max_held
        self.enabled = True
        self._clock = clock
        self._held: list[_Held[T]] = []
        self._seq = itertools.count()
        self.latest: T | None = None  # of the batches take() returned, the last to arrive

    @property
    def count(self) -> int:
        return len(self._held)

    def deadline(self) -> float | None:
        """When the oldest held batch must be written anyway (None: nothing held); now, once
        holding was switched off (another consumer joined the queue)."""
        if not self._held:
            return None
        if not self.enabled:
            return self._clock()
        return min(h.since for h in self._held) + self.wait

    def take(
        self, arrived: Sequence[tuple[T, Delivered]], written: Callable[[str, int], bool]
    ) -> list[tuple[T, Delivered]]:
        """The batches to write now, held ones included, in arrival order except that batches of
        one file go in file order. `written(source, offset)`: that byte is in the output."""
        now = self._clock()
        candidates = self._held + [
            _Held(message, item, now, next(self._seq)) for message, item in arrived
        ]
        if not self.enabled or self.wait <= 0:
            self._held = []
            ordered = sorted(candidates, key=lambda h: h.seq)
            self.latest = ordered[-1].message if ordered else None
            return [(h.message, h.item) for h in ordered]
        ready, held = self._split(candidates, written, now)
        if len(held) > self.max_held:  # bounded: the oldest go, out of order if need be
            ready, held = self._split(candidates, written, float("inf"))
        self._held = held
        self.latest = max(ready, key=lambda h: h.seq).message if ready else None
        return self._ordered(ready)

    def _split(
        self, candidates: list[_Held[T]], written: Callable[[str, int], bool], now: float
    ) -> tuple[list[_Held[T]], list[_Held[T]]]:
        ready: list[_Held[T]] = []
        held: list[_Held[T]] = []
        by_source: dict[str, list[_Held[T]]] = {}
        for candidate in candidates:
            source = candidate.item.source
            if source is None:
                ready.append(candidate)
            else:
                by_source.setdefault(source, []).append(candidate)
        for source, items in by_source.items():
            items.sort(key=lambda h: (h.item.start, h.seq))
            # a batch past its deadline goes, and so must every batch before it in the file
            due = max((i for i, h in enumerate(items) if now - h.since >= self.wait), default=-1)
            reach = -1
            for i, h in enumerate(items):
                start = h.item.start
                if i <= due or start == 0 or start <= reach or written(source, start - 1):
                    ready.append(h)
                    reach = max(reach, h.item.end)
                else:
                    held.append(h)
        return ready, held

    @staticmethod
    def _ordered(ready: list[_Held[T]]) -> list[tuple[T, Delivered]]:
        by_arrival = sorted(ready, key=lambda h: h.seq)
        in_file_order: dict[str | None, list[_Held[T]]] = {}
        for h in sorted(by_arrival, key=lambda h: (h.item.start, h.seq)):
            in_file_order.setdefault(h.item.source, []).append(h)
        result: list[tuple[T, Delivered]] = []
        cursors = dict.fromkeys(in_file_order, 0)
        for h in by_arrival:
            if h.item.source is None:
                result.append((h.message, h.item))
                continue
            source = h.item.source
            chosen = in_file_order[source][cursors[source]]
            cursors[source] += 1
            result.append((chosen.message, chosen.item))
        return result
