"""One service skeleton for both programs, after uvicorn's `Server`: startup → main loop →
shutdown, with one exit-code policy. A program supplies only what differs (a `Program`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from prometheus_client import CollectorRegistry

from logship.amqp import BlockedWatchdog, FatalConnectError, TopologyError, connect
from logship.config import EXIT_BAD_SETTINGS, AmqpSettings, HttpSettings
from logship.connection_metrics import ConnectionMetrics
from logship.gcpauses import GcPauses
from logship.lifecycle import EarlySignals, install_stop_signals, stop_tasks, with_deadline
from logship.telemetry import TelemetryServer, tls_context

log = logging.getLogger("logship.service")

# The exit-code policy, the same for both programs (the README's "Exit codes" table):
EXIT_STOPPED = 0  # a graceful stop: a stop signal, --once done, --exit-when-idle
# a crash after start, or a cancellation nobody asked for (a library cancelled what we awaited):
# non-zero, so a draining Job is not taken as done; unacknowledged messages go back, the producer
# re-reads from its checkpoint
EXIT_FAILED = 1
EXIT_REFUSED = EXIT_BAD_SETTINGS  # the start was refused: a setting, the broker, a file (one line)
# and lifecycle.EXIT_FORCED (130): a second stop signal during a shutdown

# refusals by the broker at start: said in one line by the caller, and no files left behind
REFUSALS = (FatalConnectError, TopologyError)


class Program(Protocol):
    """What one program supplies to the Service; the rest (telemetry, connecting, the blocked
    connection watchdog, background tasks, signals, the order of shutdown, exit codes) is
    the Service's."""

    stop: asyncio.Event

    def ready(self) -> bool:
        """/readyz: able to do its job now."""

    async def prepare(self, service: Service) -> None:
        """Before connecting: what must fail without a broker (the consumer opens its output)."""

    async def start(self, connection: AbstractRobustConnection, service: Service) -> None:
        """Connected: declare, start publishing or consuming, spawn its own background tasks, log
        its started line. A refusal raised here leaves no files behind (see `close`)."""

    async def main_loop(self) -> None:
        """Until `stop` is set (or the work is done): returning is a graceful stop."""

    async def drain(self, *, refused: bool) -> None:
        """Shutdown, first steps: finish what is in hand, each step with a deadline
        (`with_deadline`), within the program's shutdown timeout. Background tasks still run."""

    def close(self, *, refused: bool) -> None:
        """Shutdown, after the background tasks stopped, before the connection closes: save and
        close files; after a refusal remove what this run created."""

    def stopped(self) -> None:
        """Log how it ended (not after a refusal: its one-line error comes alone)."""


class Service:
    """Runs a Program: telemetry, `prepare`, connect, `start`, the watchdog, `main_loop`, then
    one bounded shutdown whatever happened, and the exit code of the policy above. Errors before
    the program started (its `start` returned) are the caller's to say in one line (exit 2);
    after it, an error is a crash: logged with its traceback, exit 1."""

    def __init__(
        self,
        program: Program,
        *,
        name: str,
        amqp: AmqpSettings,
        http: HttpSettings,
        registry: CollectorRegistry,
        connection_metrics: ConnectionMetrics,
        status: Callable[[], object] | None = None,
        detail: Callable[[], list[str]] | None = None,
        routes: Sequence[web.RouteDef] = (),
        gc_pauses: GcPauses | None = None,
        freeze_heap: bool = False,
    ) -> None:
        self.program = program
        self._gc_pauses = gc_pauses
        self._freeze_heap = freeze_heap
        self.name = name
        self._amqp = amqp
        self._serve_http = bool(http.port)
        self._connection_metrics = connection_metrics
        self.telemetry = TelemetryServer(
            registry,
            program.ready,
            http.host,
            http.port,
            status=status,
            detail=detail,
            routes=routes,
            tls=tls_context(http.tls_cert, http.tls_key) if http.port else None,
        )
        self.connection: AbstractRobustConnection | None = None
        self.started = False  # the program's start returned: what fails later is a crash
        self.refused = False  # the broker refused the start (credentials, topology)
        self._background: list[asyncio.Task[None]] = []

    @property
    def stop(self) -> asyncio.Event:
        return self.program.stop

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """A background task: cancelled (with a deadline) at shutdown, after `drain`."""
        self._background.append(asyncio.create_task(work, name=name))

    async def run(self, early: EarlySignals | None = None, *, signals: bool = True) -> int:
        """The program's whole life; returns its exit code. `signals`: the first SIGTERM/SIGINT
        (or one `early` caught before the loop ran) sets `stop`, a second forces exit 130."""
        if signals:
            install_stop_signals(self.stop, early)
        if self._gc_pauses is not None:
            self._gc_pauses.install()
        try:
            return await self._run()
        finally:
            if self._gc_pauses is not None:
                self._gc_pauses.remove()

    async def _run(self) -> int:
        if self._serve_http:
            await self.telemetry.start()  # a port in use fails here, before any file is created
        try:
            await self.program.prepare(self)
        except BaseException:
            await self.telemetry.stop()
            raise
        try:
            await self._startup()
            await self.program.main_loop()
            return EXIT_STOPPED
        except asyncio.CancelledError:
            return self._cancelled()
        except REFUSALS:
            self.refused = True
            raise
        except Exception as error:
            if not self.started:
                raise  # a start error: one line from the caller
            return self._crashed(error)
        finally:
            await self._shutdown()

    async def _startup(self) -> None:
        self.connection = await connect(
            self._amqp,
            self.name,
            stop=self.stop,
            on_attempt_failed=self._connection_metrics.reconnects.inc,
        )
        self._connection_metrics.watch(self.connection)
        await self.program.start(self.connection, self)
        if self._freeze_heap:
            freeze_heap()
        watchdog = BlockedWatchdog(
            self.connection, self._amqp.blocked_timeout, self._connection_metrics
        )
        self.spawn(watchdog.run(), "blocked-watchdog")
        self.started = True

    def _cancelled(self) -> int:
        if self.stop.is_set():
            return EXIT_STOPPED
        # not a stop we were asked for: a library cancelled what we awaited
        log.error("cancelled_unexpectedly", extra={"program": self.name})
        return EXIT_FAILED

    def _crashed(self, error: Exception) -> int:
        log.error(
            "crashed",
            extra={
                "program": self.name,
                "error": f"{type(error).__name__}: {error}",
                "traceback": "".join(traceback.format_exception(error)),
            },
        )
        return EXIT_FAILED

    async def _shutdown(self) -> None:
        """The same order for both programs, each step bounded: the program drains what is in
        hand while its background tasks still run, then they stop, the program closes its
        files, the connection and the telemetry server close, and it says how it ended."""
        self.stop.set()
        await self.program.drain(refused=self.refused)
        await stop_tasks(self._background)
        self.program.close(refused=self.refused)
        if self.connection is not None:
            await with_deadline("close connection", self.connection.close(), 5)
        await self.telemetry.stop()
        if not self.refused:
            self.program.stopped()


def freeze_heap() -> None:
    """Move what start-up made (modules, settings, the connection: ~45,000 objects, alive until
    exit) out of the garbage collector's sight: otherwise every full collection scans them again
    with the event loop stopped. That matters where objects accumulate, as the ingest API's
    receipts do (full collections every few seconds at 1,000 POSTs/s; in one benchmark run on a
    loaded box, 16 s per target in the same rounds: 5 full collections pausing 208 ms in all,
    against 6 pausing 501 ms without). Frozen objects are still freed once unreferenced; only a
    cycle among them would stay, bounded by what start-up made."""
    gc.collect()
    gc.freeze()
