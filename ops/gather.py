"""Reading what `logship status` shows: checkpoint, state file and files (stat), the broker (passive
declares) and the programs' HTTP endpoints. Read-only: nothing here writes, locks or declares."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import aio_pika
import aiormq.exceptions
from yarl import URL

from consumer.sink import SavedState, parse_state
from consumer.statefile import StateFileError, read_record
from logship.amqp import describe_connect_error
from logship.config import AmqpSettings
from logship.nodes import Node
from ops.model import (
    BrokerStatus,
    FileSeen,
    ProcessStatus,
    QueueStatus,
    Status,
    listed,
    may_lag,
    output_status,
    source_status,
)
from ops.settings import StatusSettings
from producer.checkpoint import Checkpoint, CheckpointError, SourceEntry

HTTP_TIMEOUT_S = 2.0
# a directory holding more names than this is not searched for a rotated file (it is shown gone)
MAX_DIRECTORY_SCAN = 2000


class StatusError(RuntimeError):
    """What status needs to read is there but cannot be read: one line, exit 2."""


def load_state(output: Path) -> SavedState | None:
    """The consumer's state record for `output` (read like the consumer reads it, without
    writing), or None when there is none."""
    path = output.with_name(output.name + ".state")
    try:
        found = read_record(path)
        return None if found is None else parse_state(found[2])
    except (StateFileError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise StatusError(f"state file {path} is unreadable ({error})") from None
    except OSError as error:
        raise StatusError(f"state file {path}: {error.strerror or error}") from None


def load_checkpoint(path: Path) -> Checkpoint:
    try:
        return Checkpoint.load(path)
    except CheckpointError as error:
        raise StatusError(str(error).split("; ")[0]) from None
    except OSError as error:
        raise StatusError(f"checkpoint {path}: {error.strerror or error}") from None


def stat_file(path: Path | str) -> FileSeen | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileSeen(str(path), st.st_size, st.st_mtime)


class FileFinder:
    """Finds the file holding a source by device and inode: at its recorded path, else under
    another name in the same directory (rotated). Each directory is read once per refresh."""

    def __init__(self) -> None:
        self._by_identity: dict[str, dict[tuple[int, int], FileSeen]] = {}

    def _directory(self, directory: str) -> dict[tuple[int, int], FileSeen]:
        if directory not in self._by_identity:
            found: dict[tuple[int, int], FileSeen] = {}
            try:
                with os.scandir(directory) as scan:
                    for _, item in zip(range(MAX_DIRECTORY_SCAN), scan, strict=False):
                        try:
                            st = item.stat()
                        except OSError:
                            continue
                        found.setdefault(
                            (st.st_dev, st.st_ino), FileSeen(item.path, st.st_size, st.st_mtime)
                        )
            except OSError:
                pass
            self._by_identity[directory] = found
        return self._by_identity[directory]

    def find(self, entry: SourceEntry) -> FileSeen | None:
        try:
            st = os.stat(entry.path)
            if (st.st_dev, st.st_ino) == (entry.dev, entry.ino):
                return FileSeen(entry.path, st.st_size, st.st_mtime)
        except OSError:
            pass
        directory = self._directory(os.path.dirname(entry.path) or ".")
        return directory.get((entry.dev, entry.ino))


def _http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET, or (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), b""
    except (urllib.error.URLError, OSError, ValueError):
        return 0, b""


def ask_process(base: str, *, status: bool) -> tuple[ProcessStatus, dict[str, int]]:
    """Readiness of a running program, and (producer) the read offsets its /status serves."""
    if not base:
        return ProcessStatus("", "not asked"), {}
    base = base.rstrip("/")
    code, _ = _http_get(f"{base}/readyz")
    state = {200: "ready", 503: "not ready", 0: "unreachable"}.get(code, f"HTTP {code}")
    read: dict[str, int] = {}
    if status and code:
        code, body = _http_get(f"{base}/status")
        if code == 200:
            try:
                found = json.loads(body).get("read", {})
                read = {str(k): int(v) for k, v in found.items()}
            except (ValueError, AttributeError, TypeError):
                read = {}
    return ProcessStatus(base, state), read


async def _queue(connection: aio_pika.abc.AbstractConnection, name: str) -> QueueStatus:
    """Depth and consumers of one queue from a passive declare on a channel of its own (a
    refused declare closes the channel)."""
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            declared = queue.declaration_result
            return QueueStatus(
                name, int(declared.message_count or 0), int(declared.consumer_count or 0)
            )
        finally:
            if not channel.is_closed:
                await channel.close()
    except aiormq.exceptions.ChannelNotFoundEntity:
        return QueueStatus(name, None, None, "does not exist")
    except aiormq.exceptions.ChannelAccessRefused:
        return QueueStatus(name, None, None, "access refused")


def _connect_error(error: BaseException) -> str:
    if isinstance(error, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(error):
        # the broker closed the connection in answer to connection.open (as logship.amqp.connect)
        return "broker refused access to the virtual host (unknown vhost or no permission)"
    if isinstance(error, TimeoutError):
        return "no answer within --amqp.connect-timeout"
    return describe_connect_error(error)


async def _open(settings: AmqpSettings, node: Node) -> aio_pika.abc.AbstractConnection:
    """Connect to one node; a failed attempt is closed here, not left to the connection's
    __del__, which a garbage collection in another thread turns into a never-awaited close."""
    connection = aio_pika.Connection(URL(settings.connection_url(node)))
    try:
        await asyncio.wait_for(
            connection.connect(timeout=settings.connect_timeout), settings.connect_timeout + 1
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await connection.close()
        raise
    return connection


async def ask_broker(settings: AmqpSettings) -> BrokerStatus:
    """Queue and dead-letter depth; an unreachable broker is a status, not a failure."""
    url = settings.redacted_url()
    nodes = settings.nodes
    for node in nodes:  # a cluster: the first node that answers
        try:
            connection = await _open(settings, node)
            break
        except (TimeoutError, OSError, ssl.SSLError, aiormq.exceptions.AMQPError) as error:
            if node == nodes[-1]:
                return BrokerStatus(url, False, _connect_error(error))
    try:
        return await asyncio.wait_for(_queues(connection, settings), settings.connect_timeout)
    except (TimeoutError, aiormq.exceptions.AMQPError) as error:
        return BrokerStatus(url, False, _connect_error(error))
    finally:
        # a connection that broke under us has nothing left to close cleanly
        with contextlib.suppress(TimeoutError, OSError, aiormq.exceptions.AMQPError):
            await asyncio.wait_for(connection.close(), 5)


async def _queues(
    connection: aio_pika.abc.AbstractConnection, settings: AmqpSettings
) -> BrokerStatus:
    queue = await _queue(connection, settings.queue)
    dead = await _queue(connection, settings.dead_letter_queue)
    return BrokerStatus(settings.redacted_url(), True, None, queue, dead)


async def gather(settings: StatusSettings) -> Status:
    """One status: local files first (an unreadable one fails before anything is asked), then
    the broker and both programs at once, the input files last. Downstream facts are read
    before upstream ones (written, then confirmed, then read, then sizes), so a pipeline moving
    while we look shows read <= size and lag that is, if anything, a little high, never low."""
    state = load_state(settings.output)
    checkpoint = load_checkpoint(settings.checkpoint)
    broker, (producer, read), (consumer, _) = await asyncio.gather(
        ask_broker(settings.amqp),
        asyncio.to_thread(ask_process, settings.producer_url, status=True),
        asyncio.to_thread(ask_process, settings.consumer_url, status=False),
    )
    now = time.time()
    finder = FileFinder()
    entries = sorted(checkpoint.entries.values(), key=lambda e: e.seq)
    sources = [
        source_status(
            entry,
            finder.find(entry) if settings.all_sources or may_lag(entry, state) else None,
            read.get(entry.id),
            state,
            now,
        )
        for entry in entries
    ]
    shown = listed(sources, everything=settings.all_sources)
    return Status(
        time=now,
        checkpoint=str(settings.checkpoint),
        checkpoint_exists=settings.checkpoint.exists(),
        sources=shown,
        hidden_sources=len(sources) - len(shown),
        output=output_status(
            str(settings.output),
            stat_file(settings.output),
            state,
            {s.id: s.path for s in sources},
            now,
        ),
        broker=broker,
        producer=producer,
        consumer=consumer,
    )
