"""`logship-consumer rebuild`: append what the archive stream holds to an output through the same
exactly-once sink as the consumer (only the ranges it lacks), its stream offset recorded in the
output's state with the bytes, so a stopped or killed rebuild resumes where it was; `--follow`
keeps reading as a second sink. Says what retention took instead of starting later silently."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from consumer.archive import (
    Bounds,
    Feed,
    OffsetSpec,
    bounds,
    oldest_age,
    read_ns,
    stream_offset,
)
from consumer.rebuild_metrics import RebuildMetrics
from consumer.rebuild_progress import Progress, make_progress
from consumer.rebuild_select import Selection, Start, choose_start
from consumer.rebuild_settings import RebuildSettings
from consumer.settings import FsyncPolicy
from consumer.sink import Sink
from logship.amqp import FatalConnectError, TopologyError, connect, refusals_explained
from logship.lifecycle import stop_tasks
from logship.telemetry import TelemetryServer, tls_context
from logship.wire import H_PATH, Delivered, PoisonMessage, decode

log = logging.getLogger("logship.consumer.rebuild")

EXIT_DONE = 0
EXIT_STOPPED = 1  # stopped before the end: run the same command again to resume
EXIT_INCOMPLETE = 3  # done, but the archive no longer holds part of what was asked
OLDEST_CHECK_S = 60.0


@dataclass
class Tally:
    """What one run did: written, skipped by kind, each source's first archived byte."""

    lines: int = 0
    bytes: int = 0
    duplicate_bytes: int = 0
    poison: int = 0
    foreign: int = 0
    offset: int = 0  # of the last message handled
    first_start: dict[str, int] = field(default_factory=dict)


class Rebuild:
    def __init__(self, settings: RebuildSettings, metrics: RebuildMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stop = asyncio.Event()
        self.sink = Sink(settings.output, fsync=settings.fsync is FsyncPolicy.always)
        self.selection = Selection.of(settings)
        self.tally = Tally()
        self._reading = False

    async def run(self) -> int:
        telemetry = TelemetryServer(
            self.metrics.registry,
            lambda: self._reading,
            self.settings.http.host,
            self.settings.http.port,
            tls=tls_context(self.settings.http.tls_cert, self.settings.http.tls_key),
        )
        if self.settings.http.port:
            await telemetry.start()
        # a start the broker refuses leaves no files behind (as the consumer's)
        created = [p for p in (self.sink.path, self.sink.state_path) if not p.exists()]
        refused = False
        connection: AbstractRobustConnection | None = None
        try:
            self.sink.open()
            connection = await connect(self.settings.amqp, "logship-rebuild", stop=self.stop)
            return await self._rebuild(connection)
        except asyncio.CancelledError:
            if self.stop.is_set():
                return EXIT_STOPPED
            raise
        except (FatalConnectError, TopologyError):
            refused = True
            raise
        finally:
            self.sink.close()
            if refused and self.sink.size == 0 and not self.sink.sources:
                for path in created:
                    path.unlink(missing_ok=True)
            if connection is not None:
                with contextlib.suppress(Exception):  # leaving anyway
                    await asyncio.wait_for(connection.close(), 5)
            await telemetry.stop()

    async def _rebuild(self, connection: AbstractRobustConnection) -> int:
        stream = self.settings.archive.queue
        timeout = self.settings.amqp.connect_timeout
        async with refusals_explained(self.settings.amqp):
            channel = await asyncio.wait_for(connection.channel(), timeout)
            await asyncio.wait_for(channel.get_queue(stream, ensure=True), timeout)
            await channel.close()
        found = await bounds(connection, stream, wait_s=timeout, last=not self.settings.follow)
        start = choose_start(self.settings, self.sink.archive_position, found)
        self._announce(found, start)
        end = None if self.settings.follow else found.last
        if not self.settings.follow and (
            end is None or (isinstance(start.spec, int) and start.spec > end)
        ):
            return self._finish(found, start, stopped=False)

        def resume() -> OffsetSpec:
            position = self.sink.archive_position
            if position is not None and position[0] == stream:
                return position[1] + 1
            return start.spec

        feed = Feed(
            connection,
            stream,
            prefetch=self.settings.prefetch,
            timeout=timeout,
            max_delay=self.settings.amqp.reconnect_max_delay,
            stop=self.stop,
            resume=resume,
        )
        watch = [asyncio.create_task(self._watch_oldest(connection))] if end is None else []
        with make_progress(self._first_offset(start, found), end) as progress:
            try:
                self._reading = await feed.open()
                stopped = not self._reading or not await self._read(feed, end, progress)
            finally:
                self._reading = False
                await stop_tasks(watch)
                await feed.close()
        return self._finish(found, start, stopped=stopped)

    async def _watch_oldest(self, connection: AbstractRobustConnection) -> None:
        """A --follow sink runs for long: look at the archive's first entry now and then, so its
        age (retention at work, or not) stays current in the metrics."""
        while True:
            await asyncio.sleep(OLDEST_CHECK_S)
            age = await oldest_age(
                connection, self.settings.archive.queue, self.settings.amqp.connect_timeout
            )
            if age is not None:
                self.metrics.oldest_age.set(age)

    @staticmethod
    def _first_offset(start: Start, found: Bounds) -> int:
        if isinstance(start.spec, int):
            return max(start.spec, found.first or 0)
        return found.first or 0

    def _announce(self, found: Bounds, start: Start) -> None:
        if found.first_read_ns is not None:
            self.metrics.oldest_age.set(max(0.0, time.time() - found.first_read_ns / 1e9))
        if found.last is not None:
            self.metrics.end_offset.set(found.last)
        log.info(
            "rebuild_started",
            extra={
                "output": str(self.settings.output),
                "stream": self.settings.archive.queue,
                "start": str(start.spec),
                "resumed": start.resumed,
                "first_offset": found.first,
                "end_offset": found.last,
                "follow": self.settings.follow,
            },
        )
        if start.check_gap and found.first is not None and not start.resumed:
            begins = _when(found.first_read_ns)
            if self.settings.since is not None or self.settings.from_offset is not None:
                _say(
                    f"the archive begins at {begins} (offset {found.first}), after what was "
                    f"asked: rebuilding from there"
                )

    async def _read(self, feed: Feed, end: int | None, progress: Progress) -> bool:
        """Write groups of deliveries until the end offset (True) or a stop (False)."""
        while not self.stop.is_set():
            group = await feed.next_group()
            if not group:
                continue
            done = await self._handle(group, end)
            progress.update(self.tally.offset, self.tally.lines, self.tally.bytes)
            if done:
                return True
        return False

    async def _handle(self, group: list[AbstractIncomingMessage], end: int | None) -> bool:
        """Write what this group adds, record the offset with it, then grant more credit. True
        once the end is reached."""
        wanted: list[Delivered] = []
        last: AbstractIncomingMessage | None = None
        last_offset: int | None = None
        done = False
        for message in group:
            offset = stream_offset(message)
            if end is not None and offset is not None and offset > end:
                done = True
                break
            last, last_offset = message, offset if offset is not None else last_offset
            if self.selection.past_until(read_ns(message)):
                done = True
                break
            item = self._decode(message, offset)
            if item is not None and self.selection.wants(item, _path(message)):
                wanted.append(item)
                assert item.source is not None  # _decode keeps logship batches only
                first = self.tally.first_start.get(item.source)
                if first is None or item.start < first:
                    self.tally.first_start[item.source] = item.start
        if last is None:
            return True
        position = None if last_offset is None else (self.settings.archive.queue, last_offset)
        plan = self.sink.plan(wanted)
        try:
            self.sink.commit(plan, position)
        except OSError:
            self.sink.rollback(plan)
            raise
        self._count(plan.lines, plan.bytes, plan.duplicate_bytes, last_offset)
        with contextlib.suppress(Exception):  # credit only: a lost channel ends the read anyway
            await last.ack(multiple=True)
        return done or (end is not None and last_offset is not None and last_offset >= end)

    def _decode(self, message: AbstractIncomingMessage, offset: int | None) -> Delivered | None:
        try:
            item = decode(message.headers, message.body, message.content_encoding)
        except PoisonMessage as error:
            self.tally.poison += 1
            self.metrics.skipped.labels(error.kind).inc()
            log.warning(
                "archive_message_skipped",
                extra={"offset": offset, "kind": error.kind, "reason": str(error)},
            )
            return None
        if item.source is None:  # not logship's: it has no place in an output it rebuilds
            self.tally.foreign += 1
            self.metrics.skipped.labels("foreign").inc()
            return None
        return item

    def _count(self, lines: int, written: int, duplicate: int, offset: int | None) -> None:
        self.tally.lines += lines
        self.tally.bytes += written
        self.tally.duplicate_bytes += duplicate
        self.metrics.lines.inc(lines)
        self.metrics.bytes.inc(written)
        if offset is not None:
            self.metrics.offset.set(offset)
            self.tally.offset = offset

    def missing(self) -> dict[str, tuple[int, int]]:
        """Per source seen: (first archived byte, bytes before it the output lacks)."""
        found: dict[str, tuple[int, int]] = {}
        for source, first in sorted(self.tally.first_start.items()):
            ranges = self.sink.sources.get(source)
            lacking = first if ranges is None else sum(b - a for a, b in ranges.missing(0, first))
            if lacking:
                found[source] = (first, lacking)
        return found

    def _finish(self, found: Bounds, start: Start, *, stopped: bool) -> int:
        missing = self.missing() if start.check_gap else {}
        for source, (first, lacking) in missing.items():
            self.metrics.bytes_missing.labels(source).set(lacking)
            log.warning(
                "archive_bytes_missing",
                extra={"source": source, "first_archived_byte": first, "bytes": lacking},
            )
            _say(
                f"source {source}: the archive holds it from byte {first}; {lacking} byte(s) "
                "before that are not in the archive and not in the output"
            )
        if missing:
            _say(
                f"the archive begins at {_when(found.first_read_ns)} (offset {found.first}): "
                "it can rebuild from then on"
            )
        log.info(
            "rebuild_finished" if not stopped else "rebuild_stopped",
            extra={
                "output": str(self.settings.output),
                "lines": self.tally.lines,
                "bytes": self.tally.bytes,
                "duplicate_bytes": self.tally.duplicate_bytes,
                "poison_skipped": self.tally.poison,
                "foreign_skipped": self.tally.foreign,
                "offset": self.sink.archive_position[1] if self.sink.archive_position else None,
                "sources_incomplete": len(missing),
            },
        )
        if stopped:
            return EXIT_DONE if self.settings.follow else EXIT_STOPPED
        return EXIT_INCOMPLETE if missing else EXIT_DONE


def _path(message: AbstractIncomingMessage) -> str | None:
    value = (message.headers or {}).get(H_PATH)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _when(ns: int | None) -> str:
    if ns is None:
        return "an unknown time"
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def _say(text: str) -> None:
    """What a person running the command must read, whatever the log format."""
    print(f"logship: warning: {text}", file=sys.stderr, flush=True)
