"""Connecting to RabbitMQ (heartbeat, TLS, retry with backoff, blocked-connection timeout) and the
topology both sides declare the same way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from yarl import URL

from logship.config import AmqpSettings, ArchiveSettings, QueueType
from logship.connection_metrics import ConnectionMetrics
from logship.nodes import Node, NodeRing

log = logging.getLogger("logship.amqp")

# how long a node that refused or dropped us is skipped while other nodes remain
NODE_HOLD = 30.0

FATAL_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.ProbableAuthenticationError,
    aiormq.exceptions.AuthenticationError,
    aiormq.exceptions.ConnectionNotAllowed,
    aiormq.exceptions.IncompatibleProtocolError,
    ssl.SSLCertVerificationError,
)


class JitteredRobustConnection(aio_pika.RobustConnection):
    """A robust connection whose pause between reconnect attempts grows exponentially with full
    jitter (aio-pika's is a constant), so a restarted broker is not hit by every client at once.
    The pause starts small again once a connection is made."""

    MAX_DELAY = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._attempts = 0
        super().__init__(*args, **kwargs)
        self.reconnect_callbacks.add(self._reset_backoff)
        self.max_delay = self.MAX_DELAY

    def _reset_backoff(self, *_: object) -> None:
        self._attempts = 0

    @property
    def reconnect_interval(self) -> float:
        self._attempts += 1
        ceiling = min(self.max_delay, self._base_interval * 2 ** min(self._attempts, 16))
        return random.uniform(ceiling / 2, ceiling)

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        self._base_interval = value


class ClusterConnection(JitteredRobustConnection):
    """A robust connection to one node of a cluster at a time: every connection attempt goes to
    the node the ring chooses next, and a node that refused the attempt or dropped the
    connection is held down in the ring. `node` is the node connected to (or being tried).

    aio-pika reconnects by calling `Connection.connect`, which reads `self.url`, after setting
    `self.transport = None`; that assignment is the one hook it gives per attempt, so `transport`
    and `url` are properties here (aio-pika is pinned; tests/integration/test_nodes.py fails
    loudly if a new version stops rotating)."""

    def __init__(
        self, url: str, *args: Any, ring: NodeRing, urls: dict[Node, str], **kwargs: Any
    ) -> None:
        self._ring = ring
        self._urls = urls
        self._node: Node | None = None
        self._pending = False  # an attempt to self._node has not connected yet
        self._transport: Any = None
        super().__init__(url, *args, **kwargs)

    @property
    def node(self) -> Node | None:
        return self._node

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self._ring.nodes

    @property
    def url(self) -> URL:
        node = self._node if self._node is not None else self._ring.nodes[0]
        return URL(self._urls[node])

    @url.setter
    def url(self, value: URL) -> None:
        # Connection.__init__ and update_secret set it; the node URLs are ours
        pass

    @property
    def transport(self) -> Any:
        return self._transport

    @transport.setter
    def transport(self, value: Any) -> None:
        self._transport = value
        if value is not None:
            if self._node is not None:
                self._ring.up(self._node)
            self._pending = False
            return
        connected = getattr(self, "connected", None)
        if connected is None or connected.is_set() or getattr(self, "_close_in_progress", False):
            return  # Connection.__init__, or close(): not an attempt
        if self._node is not None and self._pending:
            self._ring.down(self._node)
            log.warning("amqp_node_unreachable", extra={"node": str(self._node)})
        self._node = self._ring.next()
        self._pending = True

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not self._close_called and self._node is not None and not self._pending:
            # a connection that was up is gone (an attempt that failed is the setter's to count)
            self._ring.down(self._node)
            log.warning("amqp_node_lost", extra={"node": str(self._node)})
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()
        # the first connection at debug: a refused topology's one-line error must come alone,
        # and the programs' started lines name the node
        level = logging.INFO if self.connection_attempt > 1 else logging.DEBUG
        log.log(level, "amqp_node_connected", extra={"node": str(self._node)})


class FatalConnectError(RuntimeError):
    """The broker answered but will never let us in: wrong credentials, vhost, CA. Not retried."""


class TopologyError(RuntimeError):
    """The broker refused our topology at start: a queue or exchange that exists with other
    arguments, one that is missing while declaring is off, or no permission. Not retried."""


REFUSALS = (
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.ChannelNotFoundEntity,
    aiormq.exceptions.ChannelAccessRefused,
)
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<kind>queue|exchange) '(?P<name>[^']*)'"
    r".*?: received (?P<wanted>.+?) but current is (?P<current>.+)$"
)
_MISSING = re.compile(r"no (?P<kind>queue|exchange) '(?P<name>[^']*)' in vhost '(?P<vhost>[^']*)'")
_DENIED = re.compile(
    r"access to (?P<kind>queue|exchange) '(?P<name>[^']*)' in vhost '(?P<vhost>[^']*)' "
    r"refused for user '(?P<user>[^']*)'"
)
_QUOTED = re.compile(r"'([^']*)'")


def _value(text: str) -> str | None:
    """`the value 'x' of type 'longstr'` or `'x'` → x; `none` (argument absent) → None."""
    quoted = _QUOTED.search(text)
    return quoted.group(1) if quoted else None


def _queue_hint(arg: str, current: str | None) -> str:
    flag = {
        "x-queue-type": "--amqp.queue-type",
        "x-delivery-limit": "--amqp.delivery-limit",
        "x-dead-letter-exchange": "--amqp.dead-letter-exchange",
        "x-quorum-initial-group-size": "--amqp.quorum-initial-group-size",
        "x-max-age": "--archive.max-age",
        "x-max-length-bytes": "--archive.max-bytes",
        "x-stream-max-segment-size-bytes": "--archive.segment-bytes",
    }.get(arg)
    if flag is not None and current is not None:
        return f"delete it or set {flag} {current}"
    why = " (without it, poison messages are dropped)" if arg == "x-dead-letter-exchange" else ""
    return (
        f"delete it so it is declared again{why}, or declare it yourself and set --no-amqp.declare"
    )


def describe_refusal(error: BaseException, settings: AmqpSettings) -> str:
    """One line that says what the broker refused and what to do about it."""
    text = str(error.args[0] if error.args else error)
    reply = text.split(" - ", 1)[-1]
    if match := _INEQUIVALENT.search(reply):
        arg, kind, name = match["arg"], match["kind"], match["name"]
        current, wanted = _value(match["current"]), _value(match["wanted"])
        there = "none" if current is None else f"'{current}'"
        differs = f"{there} there, {'none' if wanted is None else repr(wanted)} wanted"
        if kind == "exchange":
            flag = (
                "--amqp.dead-letter-exchange"
                if name == settings.dead_letter_exchange
                else "--amqp.exchange"
            )
            return (
                f"exchange '{name}' exists with a different {arg} ({differs}): delete it or set "
                f"{flag} to another name"
            )
        return (
            f"queue '{name}' exists with different arguments ({arg}: {differs}): "
            f"{_queue_hint(arg, current)}"
        )
    if match := _MISSING.search(reply):
        hint = (
            "declare it beforehand, or drop --no-amqp.declare so logship declares it"
            if not settings.declare
            else "check the --amqp names, or start the producer or consumer once to declare it"
        )
        return (
            f"{match['kind']} '{match['name']}' does not exist in vhost '{match['vhost']}': {hint}"
        )
    if match := _DENIED.search(reply):
        hint = (
            "grant configure permission on it, or declare the topology beforehand and set "
            "--no-amqp.declare"
            if settings.declare
            else "grant the permission this program needs (producer: write on the exchange; "
            "consumer: read on the queue)"
        )
        return (
            f"broker refused user '{match['user']}' access to {match['kind']} '{match['name']}'"
            f": {hint}"
        )
    return f"broker refused the topology: {reply}"


@contextlib.asynccontextmanager
async def refusals_explained(settings: AmqpSettings) -> AsyncIterator[None]:
    """Turn the broker refusing a declare, a passive check or a consume at start into a
    TopologyError with one clear line."""
    try:
        yield
    except REFUSALS as error:
        raise TopologyError(describe_refusal(error, settings)) from None


def backoff_delays(first: float = 0.2, cap: float = 10.0) -> Any:
    """Exponential backoff with full jitter, so a restarted broker is not hit by every client at
    once."""
    delay = first
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)


def _tls_cause(error: BaseException) -> ssl.SSLError | None:
    """aiormq wraps TLS failures in AMQPConnectionError: find the SSL error underneath."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


CREDENTIALS_HINT = (
    "check --amqp.username / LOGSHIP_AMQP__USERNAME and --amqp.password / "
    "LOGSHIP_AMQP__PASSWORD, or the user and password in --amqp.url / LOGSHIP_AMQP__URL"
)
VHOST_HINT = "the vhost is the path of --amqp.url / LOGSHIP_AMQP__URL ('/' when none is given)"
CA_HINT = "give the CA that signed it with --amqp.ca-file / LOGSHIP_AMQP__CA_FILE"


def describe_connect_error(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate of the broker not trusted ({error.verify_message}): {CA_HINT}"
    if isinstance(
        error,
        aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError,
    ):
        return f"broker refused the credentials (wrong user or password): {CREDENTIALS_HINT}"
    if isinstance(error, aiormq.exceptions.ConnectionNotAllowed):
        return (
            "broker refused access to the virtual host (unknown vhost or no permission): "
            + VHOST_HINT
        )
    return f"{type(error).__name__}: {error}"


async def _attempt(connection: ClusterConnection, seconds: float) -> None:
    """One connection attempt; a failed one is closed here, not left to its __del__ (which may
    run in another thread's garbage collection, where it cannot close anything)."""
    try:
        await connection.connect(timeout=seconds)
    except BaseException:
        with contextlib.suppress(Exception):
            await connection.close()
        raise


async def connect(
    settings: AmqpSettings,
    name: str,
    *,
    stop: asyncio.Event | None = None,
    on_attempt_failed: Callable[[], None] | None = None,
) -> AbstractRobustConnection:
    """Open a robust connection, retrying while the broker is unreachable (it may start after us
    in Kubernetes). Raise FatalConnectError at once when retrying cannot help, and
    asyncio.CancelledError when `stop` is set while waiting to retry."""
    delays = backoff_delays(cap=settings.reconnect_max_delay)
    nodes = settings.nodes
    ring = NodeRing(nodes, hold=NODE_HOLD)
    urls = {node: settings.connection_url(node) for node in nodes}
    while True:
        connection = ClusterConnection(
            urls[nodes[0]],
            ring=ring,
            urls=urls,
            reconnect_interval=0.25,
            client_properties={"connection_name": name},
        )
        connection.max_delay = settings.reconnect_max_delay
        try:
            await _attempt(connection, settings.connect_timeout)
        except FATAL_CONNECT_ERRORS as error:
            raise FatalConnectError(describe_connect_error(error)) from None
        except aiormq.exceptions.InvalidFrameError as error:
            if "Connection.Close" in str(error) or "Connection.OpenOk" in str(error):
                # the broker closed the connection in answer to connection.open: the vhost
                raise FatalConnectError(
                    "broker refused access to the virtual host (unknown vhost or no permission): "
                    + VHOST_HINT
                ) from None
            raise
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as error:
            tls_error = _tls_cause(error)
            if isinstance(tls_error, ssl.SSLCertVerificationError):
                raise FatalConnectError(describe_connect_error(tls_error)) from None
            if tls_error is not None:
                raise FatalConnectError(
                    f"TLS handshake with the broker failed ({tls_error})"
                ) from None
            if connection.node is not None:
                ring.down(connection.node)
            # the next node straight away; the backoff once every node failed in a row
            delay = next(delays) if ring.all_down() else 0.0
            log.warning(
                "amqp_connect_failed",
                extra={
                    "url": settings.redacted_url(),
                    "node": str(connection.node),
                    "error": describe_connect_error(error),
                    "retry_in": round(delay, 2),
                },
            )
            if on_attempt_failed is not None:
                on_attempt_failed()
            if stop is not None:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    continue
                # asked to stop while the broker is away: a graceful stop, not this error
                raise asyncio.CancelledError from None
            await asyncio.sleep(delay)
            continue
        # debug: the topology may still be refused, and then its one-line error must come
        # alone; the programs' started lines say where they connected
        log.debug(
            "amqp_connected",
            extra={
                "url": settings.redacted_url(),
                "node": str(connection.node),
                "connection": name,
            },
        )
        return connection


def queue_arguments(settings: AmqpSettings) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-queue-type": settings.queue_type.value,
        "x-dead-letter-exchange": settings.dead_letter_exchange,
    }
    if settings.queue_type is QueueType.quorum:
        arguments["x-delivery-limit"] = settings.delivery_limit
        arguments.update(replica_arguments(settings))
    return arguments


def replica_arguments(settings: AmqpSettings) -> dict[str, Any]:
    """How many nodes hold a new quorum queue; absent, the broker puts a replica on every
    cluster node (up to its own limit), which is what survives a node loss."""
    if settings.queue_type is not QueueType.quorum or settings.quorum_initial_group_size is None:
        return {}
    return {"x-quorum-initial-group-size": settings.quorum_initial_group_size}


async def declare_topology(
    channel: AbstractChannel, settings: AmqpSettings, archive: ArchiveSettings | None = None
) -> None:
    """Exchange `logs` → queue `logs` (quorum by default) with a dead-letter exchange and queue,
    and, when the archive is on, → stream `logs.archive` beside it (same routing key: every
    published batch lands in both). With `declare` off nothing is declared: each side then checks
    passively what it needs."""
    if not settings.declare:
        return
    async with refusals_explained(settings):
        await _declare(channel, settings)
        if archive is not None and archive.enabled:
            await declare_archive(channel, settings, archive)


async def declare_archive(
    channel: AbstractChannel, settings: AmqpSettings, archive: ArchiveSettings
) -> None:
    """The archive stream, bound to the exchange with the work queue's routing key. A stream is
    replicated on every node of a cluster by default, as the quorum work queue is."""
    exchange = await channel.declare_exchange(
        settings.exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    stream = await channel.declare_queue(archive.queue, durable=True, arguments=archive.arguments())
    await stream.bind(exchange, routing_key=settings.routing_key)


async def _declare(channel: AbstractChannel, settings: AmqpSettings) -> None:
    dead_exchange = await channel.declare_exchange(
        settings.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead_queue = await channel.declare_queue(
        settings.dead_letter_queue,
        durable=True,
        arguments={"x-queue-type": settings.queue_type.value, **replica_arguments(settings)},
    )
    await dead_queue.bind(dead_exchange, routing_key="#")
    exchange = await channel.declare_exchange(
        settings.exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    queue = await channel.declare_queue(
        settings.queue, durable=True, arguments=queue_arguments(settings)
    )
    await queue.bind(exchange, routing_key=settings.routing_key)


class BlockedWatchdog:
    """pika's blocked_connection_timeout for aio-pika: aiormq only clears a private event on
    connection.blocked (see shared NOTES), so poll it and drop a connection that stays blocked
    longer than the timeout; the robust connection then reconnects."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        timeout: float,
        metrics: ConnectionMetrics,
        *,
        interval: float = 0.5,
    ) -> None:
        self._connection = connection
        self._timeout = timeout
        self._metrics = metrics
        self._interval = interval
        self.blocked_since: float | None = None

    def _unblocked_event(self) -> asyncio.Event | None:
        transport = self._connection.transport
        if transport is None:
            return None
        event = getattr(transport.connection, "_Connection__connection_unblocked", None)
        return event if isinstance(event, asyncio.Event) else None

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self._interval)
            now = time.monotonic()
            event = self._unblocked_event()
            blocked = event is not None and not event.is_set()
            if blocked and self.blocked_since is None:
                self.blocked_since = now
                self._metrics.blocked_events.inc()
                self._metrics.set_blocked(True)
                log.warning("amqp_connection_blocked", extra={"timeout": self._timeout})
            elif not blocked and self.blocked_since is not None:
                log.info(
                    "amqp_connection_unblocked",
                    extra={"blocked_s": round(now - self.blocked_since, 3)},
                )
                self.blocked_since = None
                self._metrics.set_blocked(False)
            if self.blocked_since is not None:
                self._metrics.blocked_seconds.inc(now - last)
                if now - self.blocked_since > self._timeout:
                    await self._drop()
            last = now

    async def _drop(self) -> None:
        log.warning("amqp_blocked_timeout", extra={"timeout": self._timeout})
        self.blocked_since = None
        self._metrics.set_blocked(False)
        transport = self._connection.transport
        if transport is not None:
            await transport.connection.close(
                aiormq.exceptions.ConnectionClosed(320, "blocked connection timeout")
            )
