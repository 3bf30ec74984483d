"""Reading the archive stream: where it begins and ends, and its deliveries from an offset or a
time. A stream is read, not consumed: acknowledgements only grant credit, nothing is removed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelInvalidStateError

from logship.amqp import backoff_delays
from logship.wire import H_TS

log = logging.getLogger("logship.consumer.archive")

STREAM_OFFSET = "x-stream-offset"
# the broker starts a consumer at the first message, the last chunk, an offset or a time
OffsetSpec = str | int | datetime
# the last chunk comes at once after a consume; its end is reached once nothing more comes for
# this long (a producer publishing meanwhile only moves the end a little further)
SETTLE_S = 0.3
PROBE_WAIT_S = 2.0
PROBE_MAX_S = 2.0
PROBE_PREFETCH = 8


def stream_offset(message: AbstractIncomingMessage) -> int | None:
    """The delivery's offset in the stream (the header the broker adds), or None."""
    value = (message.headers or {}).get(STREAM_OFFSET)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_ns(message: AbstractIncomingMessage) -> int | None:
    value = (message.headers or {}).get(H_TS)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Bounds:
    """The archive's first entry (offset, producer read time) and last offset when asked; all
    None for an empty archive."""

    first: int | None
    first_read_ns: int | None
    last: int | None


class StreamReader:
    """One consumer on the archive stream with a prefetch; deliveries land in `inbox` and the
    caller acknowledges them (`ack_through`) to get more."""

    def __init__(
        self, connection: AbstractRobustConnection, stream: str, *, prefetch: int, timeout: float
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._prefetch = prefetch
        self._timeout = timeout
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._channel: AbstractChannel | None = None

    async def start(self, offset: OffsetSpec) -> None:
        self._channel = await _open(self._connection, self._stream, self._prefetch, self._timeout)
        queue = await self._channel.get_queue(self._stream, ensure=False)
        await queue.consume(self._deliver, no_ack=False, arguments={STREAM_OFFSET: offset})

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self.inbox.put_nowait(message)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):  # leaving anyway; the broker cleans up
                await asyncio.wait_for(self._channel.close(), 5)


async def _open(
    connection: AbstractRobustConnection, stream: str, prefetch: int, wait_s: float
) -> AbstractChannel:
    channel = await asyncio.wait_for(connection.channel(publisher_confirms=False), wait_s)
    await channel.set_qos(prefetch_count=prefetch)  # a stream consumer needs one
    return channel


async def _probe(
    connection: AbstractRobustConnection, stream: str, spec: str, wait_s: float
) -> list[AbstractIncomingMessage]:
    """The first delivery of a consumer at `spec`, and for "last" every one that follows at once
    (the last chunk). Empty when the stream is."""
    prefetch = 1 if spec == "first" else PROBE_PREFETCH  # one batch is all "first" needs
    reader = StreamReader(connection, stream, prefetch=prefetch, timeout=wait_s)
    try:
        await reader.start(spec)
        try:
            got = [await asyncio.wait_for(reader.inbox.get(), PROBE_WAIT_S)]
        except TimeoutError:
            return []
        if spec != "last":
            return got
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_MAX_S
        while loop.time() < deadline:
            # credit for the rest of a chunk longer than the prefetch (kept small: batches are
            # up to batch-max-bytes each); only offsets are kept, not bodies
            await got[-1].ack(multiple=True)
            got = got[-1:]
            try:
                got.append(await asyncio.wait_for(reader.inbox.get(), SETTLE_S))
            except TimeoutError:
                break
        return got
    finally:
        await reader.close()


async def bounds(
    connection: AbstractRobustConnection, stream: str, *, wait_s: float, last: bool = True
) -> Bounds:
    """Where the archive begins (and, with `last`, ends) now."""
    first = await _probe(connection, stream, "first", wait_s)
    if not first:
        return Bounds(None, None, None)
    end: int | None = None
    if last:
        offsets = [stream_offset(m) for m in await _probe(connection, stream, "last", wait_s)]
        end = max((o for o in offsets if o is not None), default=None)
    return Bounds(stream_offset(first[0]), read_ns(first[0]), end)


READ_ERRORS = (
    aiormq.exceptions.AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    TimeoutError,
    RuntimeError,  # "connection was not opened": the broker is away
)


class Feed:
    """Groups of deliveries from the archive, across lost connections. aio-pika restores no
    consumer on a queue it did not declare, and one that it did would start again where the
    first consume began; so after the robust connection is back, reading starts again at
    `resume()` (the place recorded with the output) on a new channel, and what the old one
    delivered is dropped (it comes again)."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        stream: str,
        *,
        prefetch: int,
        timeout: float,
        max_delay: float,
        stop: asyncio.Event,
        resume: Callable[[], OffsetSpec],
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._prefetch = prefetch
        self._timeout = timeout
        self._max_delay = max_delay
        self._stop = stop
        self._resume = resume
        self._reader: StreamReader | None = None
        self._reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(self._on_reconnect)

    def _on_reconnect(self, *_: object) -> None:
        self._reconnected.set()

    async def open(self) -> bool:
        """Start reading at `resume()`, retrying while the broker is away; False if stopped."""
        delays = backoff_delays(cap=self._max_delay)
        while not self._stop.is_set():
            self._reconnected.clear()
            spec = self._resume()
            reader = StreamReader(
                self._connection, self._stream, prefetch=self._prefetch, timeout=self._timeout
            )
            try:
                await asyncio.wait_for(reader.start(spec), self._timeout)
            except READ_ERRORS as error:
                await reader.close()
                delay = next(delays)
                log.warning(
                    "archive_read_failed",
                    extra={"error": type(error).__name__, "retry_in": round(delay, 2)},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            self._reader = reader
            log.debug("archive_reading", extra={"stream": self._stream, "start": str(spec)})
            return True
        return False

    async def next_group(self) -> list[AbstractIncomingMessage]:
        """Wait for a delivery, then take every one already delivered. Empty on a stop."""
        while not self._stop.is_set():
            if self._reconnected.is_set() or self._reader is None:
                await self._drop_reader()
                log.warning("archive_reader_reopened", extra={"start": str(self._resume())})
                if not await self.open():
                    return []
                continue
            assert self._reader is not None
            inbox = self._reader.inbox
            getter = asyncio.ensure_future(inbox.get())
            others = [
                asyncio.ensure_future(self._stop.wait()),
                asyncio.ensure_future(self._reconnected.wait()),
            ]
            try:
                await asyncio.wait({getter, *others}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in others:
                    waiter.cancel()
            if not getter.done():
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
                if getter.cancelled():
                    continue
            group = [getter.result()]
            while not inbox.empty():
                group.append(inbox.get_nowait())
            return group
        return []

    async def _drop_reader(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.close()

    async def close(self) -> None:
        self._connection.reconnect_callbacks.discard(self._on_reconnect)
        await self._drop_reader()
