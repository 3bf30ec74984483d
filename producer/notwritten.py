"""Bytes read and sent and not yet reported written by a consumer, per input file: the producer's
end-to-end lag, fed by written receipts. Pure bookkeeping, no I/O."""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from logship.receipts import WrittenReceipt

# sources kept (a rotation starts a new one); past it the oldest is forgotten
MAX_SOURCES = 10_000


class _Source:
    """One source this run sent: [first, sent_end) sent, `starts`/`ends` the disjoint, sorted
    ranges of it reported written (clipped to what was sent from `first` on)."""

    __slots__ = ("ends", "first", "path", "sent_end", "starts")

    def __init__(self, path: str, first: int) -> None:
        self.path = path
        self.first = first
        self.sent_end = first
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        """Cover [start, end), merging with what it overlaps or touches."""
        start = max(start, self.first)
        if start >= end:
            return
        lo = bisect.bisect_left(self.ends, start)
        hi = bisect.bisect_right(self.starts, end)
        if lo < hi:
            start = min(start, self.starts[lo])
            end = max(end, self.ends[hi - 1])
        self.starts[lo:hi] = [start]
        self.ends[lo:hi] = [end]

    def not_written(self) -> int:
        covered = 0
        for start, end in zip(self.starts, self.ends, strict=True):
            if start >= self.sent_end:
                break
            covered += min(end, self.sent_end) - start
        return self.sent_end - self.first - covered


class NotWritten:
    """Per source, what this run sent and what receipts said is written; per file (the path a
    source was read from), the sum of the bytes sent and not yet written. Bytes sent before this
    run (below the first offset it sent of a source) are not counted: whether they were written
    is not known here. A source fully written that is no longer its file's newest is forgotten."""

    def __init__(self) -> None:
        self._sources: dict[str, _Source] = {}
        self._newest: dict[str, str] = {}  # path → its newest source
        self._by_path: dict[str, dict[str, _Source]] = {}

    def sent(self, source: str, path: str, start: int, end: int) -> str:
        """A batch [start, end) of `source`, read from `path`, was sent: returns the path."""
        entry = self._sources.get(source)
        if entry is None:
            entry = self._sources[source] = _Source(path, start)
            self._by_path.setdefault(path, {})[source] = entry
            previous = self._newest.get(path)
            self._newest[path] = source
            if previous is not None:
                self._forget_if_done(previous)
            if len(self._sources) > MAX_SOURCES:
                self._forget(next(iter(self._sources)))
        entry.sent_end = max(entry.sent_end, end)
        return entry.path

    def written(self, receipt: WrittenReceipt) -> set[str]:
        """Take a receipt's ranges (written now or before): returns the paths whose value
        changed. Ranges of sources this run did not send are ignored."""
        return self.covered(receipt.covered())

    def covered(self, ranges: Iterable[tuple[str, int, int]]) -> set[str]:
        changed: set[str] = set()
        for source, start, end in ranges:
            entry = self._sources.get(source)
            if entry is None:
                continue
            entry.add(start, end)
            changed.add(entry.path)
            self._forget_if_done(source)
        return changed

    def value(self, path: str) -> int:
        """Bytes sent this run from `path`'s sources and not reported written yet."""
        return sum(s.not_written() for s in self._by_path.get(path, {}).values())

    def __len__(self) -> int:
        """Sources tracked."""
        return len(self._sources)

    def _forget_if_done(self, source: str) -> None:
        entry = self._sources.get(source)
        if entry is not None and self._newest.get(entry.path) != source and not entry.not_written():
            self._forget(source)

    def _forget(self, source: str) -> None:
        entry = self._sources.pop(source)
        if self._newest.get(entry.path) == source:
            del self._newest[entry.path]
        same_path = self._by_path[entry.path]
        del same_path[source]
        if not same_path:
            del self._by_path[entry.path]
