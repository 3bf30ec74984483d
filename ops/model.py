"""The status model and how it is built from what was read: pure, no I/O (gather.py reads)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from consumer.sink import SavedState
from producer.checkpoint import SourceEntry


@dataclass
class FileSeen:
    """Where a source's bytes are now (its path may have changed by rotation), as stat saw it."""

    path: str
    size: int
    mtime: float


@dataclass
class SourceStatus:
    """One input source: a file's life between creation (or truncation) and its end."""

    id: str
    path: str  # where the file is now, else where the producer found it
    finished: bool  # rotated away (or truncated) and read to its end
    exists: bool  # the file holding it was found (finished sources fully written are looked
    # for only with --all)
    size: int | None  # bytes to ship: the file's size, or where reading ended once finished
    read: int | None  # only a running producer knows (None: not asked or not running)
    confirmed: int  # by the broker: in the checkpoint
    written: int | None  # in the output: everything before it (None: no state file)
    lag_bytes: int | None
    lag_seconds: float | None


@dataclass
class OutputSource:
    id: str
    path: str | None  # the input path, if the checkpoint still knows the source
    written: int


@dataclass
class OutputStatus:
    path: str
    exists: bool
    size: int | None  # of the file now
    recorded: int | None  # size the consumer recorded as durable (None: no state file)
    last_write_age_s: float | None  # since the consumer last wrote any source
    sources: list[OutputSource] = field(default_factory=list)


@dataclass
class QueueStatus:
    name: str
    messages: int | None  # ready (not yet delivered) messages
    consumers: int | None
    error: str | None = None


@dataclass
class BrokerStatus:
    url: str  # redacted
    connected: bool  # answered the passive checks
    error: str | None = None
    queue: QueueStatus | None = None
    dead_letters: QueueStatus | None = None


@dataclass
class ProcessStatus:
    url: str
    state: str  # "ready", "not ready", "unreachable" or "not asked"


@dataclass
class Status:
    time: float
    checkpoint: str
    checkpoint_exists: bool
    sources: list[SourceStatus]
    hidden_sources: int  # finished and fully written, not listed (shown with --all)
    output: OutputStatus
    broker: BrokerStatus
    producer: ProcessStatus
    consumer: ProcessStatus


def written_offset(state: SavedState | None, source: str) -> int | None:
    """Everything of `source` before this offset is in the output (the end of its first written
    range); 0 when the consumer has not written any of it yet, None without a state file."""
    if state is None:
        return None
    ranges = state.sources.get(source)
    if ranges is None or not len(ranges):
        return 0
    return ranges.ranges()[0][1]


def may_lag(entry: SourceEntry, state: SavedState | None) -> bool:
    """False for a finished source written (or, without a state file, confirmed) to its end:
    its file need not be looked for."""
    if not entry.finished or entry.end is None:
        return True
    written = written_offset(state, entry.id)
    return (written if written is not None else entry.offset) < entry.end


def source_status(
    entry: SourceEntry,
    seen: FileSeen | None,
    read: int | None,
    state: SavedState | None,
    now: float,
) -> SourceStatus:
    """One source's offsets and lag. Lag is measured against the written offset, or against the
    confirmed one when there is no state file; seconds are how long ago the file last changed
    while bytes lag (a lower bound for the oldest unwritten byte's age)."""
    if entry.finished and entry.end is not None:
        size: int | None = entry.end
    else:
        size = seen.size if seen is not None else None
    if read is None and entry.finished:
        read = entry.end
    written = written_offset(state, entry.id)
    shipped = written if written is not None else entry.offset
    lag_bytes = max(0, size - shipped) if size is not None else None
    lag_seconds: float | None
    if lag_bytes == 0:
        lag_seconds = 0.0
    elif lag_bytes is not None and seen is not None:
        lag_seconds = round(max(0.0, now - seen.mtime), 3)
    else:
        lag_seconds = None
    return SourceStatus(
        id=entry.id,
        path=seen.path if seen is not None else entry.path,
        finished=entry.finished,
        exists=seen is not None,
        size=size,
        read=read,
        confirmed=entry.offset,
        written=written,
        lag_bytes=lag_bytes,
        lag_seconds=lag_seconds,
    )


def output_status(
    path: str,
    seen: FileSeen | None,
    state: SavedState | None,
    paths: Mapping[str, str],
    now: float,
) -> OutputStatus:
    """The output file, what the consumer recorded of it, and its sources by input path (as
    `paths`, source id → path, names them: None for a source the checkpoint no longer holds)."""
    sources = []
    last_write = None
    if state is not None:
        for source in sorted(state.sources, key=lambda s: state.touched.get(s, 0.0)):
            written = written_offset(state, source) or 0
            sources.append(OutputSource(source, paths.get(source), written))
        last_write = max(state.touched.values(), default=None)
    return OutputStatus(
        path=path,
        exists=seen is not None,
        size=seen.size if seen is not None else None,
        recorded=state.size if state is not None else None,
        last_write_age_s=round(max(0.0, now - last_write), 3) if last_write is not None else None,
        sources=sources,
    )


def listed(sources: Iterable[SourceStatus], *, everything: bool) -> list[SourceStatus]:
    """What the screen lists: every source still being read or still lagging (all with
    `everything`); rotated-away files fully written are only counted."""
    return [s for s in sources if everything or not s.finished or s.lag_bytes != 0]
