"""Which archived batches a rebuild writes, and where in the archive it starts reading (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from consumer.archive import Bounds, OffsetSpec
from consumer.rebuild_settings import RebuildSettings
from logship.wire import Delivered

# the broker finds a time at chunk granularity, by its own clock: start this much earlier and
# select by the producer's read time, so a batch read after --since is never missed
SEEK_SLACK = timedelta(minutes=5)


@dataclass
class Selection:
    """Which archived batches a rebuild writes (pure)."""

    since_ns: int | None = None
    until_ns: int | None = None
    source: str | None = None
    path: str | None = None

    @classmethod
    def of(cls, settings: RebuildSettings) -> Selection:
        def ns(moment: datetime | None) -> int | None:
            return None if moment is None else int(moment.timestamp() * 1e9)

        return cls(ns(settings.since), ns(settings.until), settings.source, settings.path)

    def wants(self, item: Delivered, path: str | None) -> bool:
        if self.source is not None and item.source != self.source:
            return False
        if self.path is not None and path != self.path:
            return False
        if item.read_ns is not None:
            if self.since_ns is not None and item.read_ns < self.since_ns:
                return False
            if self.until_ns is not None and item.read_ns >= self.until_ns:
                return False
        return True

    def past_until(self, read: int | None) -> bool:
        """Read well after --until (beyond any clock skew): nothing later is wanted."""
        slack = int(SEEK_SLACK.total_seconds() * 1e9)
        return self.until_ns is not None and read is not None and read >= self.until_ns + slack


@dataclass
class Start:
    """Where reading starts, and whether the archive may lack part of what was asked (then the
    bytes of each source before its first archived batch are reported)."""

    spec: OffsetSpec
    resumed: bool = False
    check_gap: bool = False


def choose_start(
    settings: RebuildSettings, position: tuple[str, int] | None, found: Bounds
) -> Start:
    """A recorded position in this stream wins (a resume); else --from-offset, --since, the
    archive's first entry."""
    first = found.first
    if position is not None and position[0] == settings.archive.queue:
        after = position[1] + 1
        return Start(after, resumed=True, check_gap=first is not None and after < first)
    if settings.from_offset is not None:
        gap = first is not None and settings.from_offset < first
        return Start(settings.from_offset, check_gap=gap)
    if settings.since is not None:
        since_ns = int(settings.since.timestamp() * 1e9)
        gap = found.first_read_ns is not None and found.first_read_ns > since_ns
        return Start(settings.since - SEEK_SLACK, check_gap=gap)
    return Start("first", check_gap=True)
