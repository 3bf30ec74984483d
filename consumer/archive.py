"""Reading the archive stream: where it begins and ends, and its deliveries from an offset or a
time. A stream is read, not consumed: acknowledgements only grant credit, nothing is removed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

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
    reader = StreamReader(connection, stream, prefetch=PROBE_PREFETCH, timeout=wait_s)
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
