"""Which bytes of each source are already in the output: disjoint, sorted [start, end) ranges.
Pure bookkeeping, no I/O; the sink uses it to skip or trim what it already wrote."""

from __future__ import annotations

import bisect

MAX_RANGES_PER_SOURCE = 4096


class RangeSet:
    """A sorted list of disjoint, non-touching [start, end) ranges."""

    __slots__ = ("_ends", "_starts", "version")

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.version = 0  # changes with every add: lets an encoding of it be kept until then
        for start, end in ranges or []:
            self.add(start, end)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def contiguous_end(self) -> int:
        """End of the first range when it starts at 0: everything before it is written."""
        return self._ends[0] if self._starts and self._starts[0] == 0 else 0

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of [start, end) not covered yet, in order."""
        gaps: list[tuple[int, int]] = []
        position = start
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        while position < end and i < len(self._starts):
            s, e = self._starts[i], self._ends[i]
            if e <= position:
                i += 1
                continue
            if s >= end:
                break
            if s > position:
                gaps.append((position, s))
            position = max(position, e)
            i += 1
        if position < end:
            gaps.append((position, end))
        return gaps

    def add(self, start: int, end: int) -> None:
        """Cover [start, end), merging with overlapping or touching ranges."""
        if start >= end:
            return
        self.version += 1
        lo = bisect.bisect_left(self._ends, start)
        hi = bisect.bisect_right(self._starts, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]
        if len(self._starts) > MAX_RANGES_PER_SOURCE:
            # Bounded memory when several consumers share a queue (each sees every other batch):
            # the oldest gap is taken as written elsewhere; only a redelivery that old would pass.
            self._starts[0:2] = [self._starts[0]]
            self._ends[0:2] = [self._ends[1]]
