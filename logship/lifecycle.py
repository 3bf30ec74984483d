"""Run a service: SIGTERM/SIGINT set a stop event, a second signal forces the exit; startup → run →
shutdown, each shutdown step with a deadline."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any

log = logging.getLogger("logship.lifecycle")

EXIT_FORCED = 130
# glibc mallopt parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Batches are 0.5-4 MiB bytes objects made and freed hundreds of times a second. Above glibc's
# default mmap threshold each one is a fresh mmap: its pages are faulted in and zeroed by the
# kernel, then unmapped again. Serving them from the heap instead measured 30-45k → 2-3k page
# faults per 5M lines, -25 % CPU in each program and +15 % throughput, at the same peak RSS
# (bench/README.md).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


class EarlySignals:
    """Stop signals that arrive before the event loop runs: while the program imports (~0.4 s),
    reads its settings or connects. They are remembered and honoured as a graceful stop once the
    loop runs; without this, a SIGTERM in the first second (a pod deleted while it starts) ended
    the process with -15 instead of exit 0."""

    def __init__(self) -> None:
        self.received: list[int] = []

    @classmethod
    def catch(cls) -> EarlySignals:
        early = cls()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, early._note)
        return early

    def _note(self, signum: int, _frame: object) -> None:
        self.received.append(signum)

    def release(self) -> None:
        """Give the signals back to their defaults (for a command that installs no handlers of
        its own), delivering again one that was caught meanwhile."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.received:
            signal.raise_signal(self.received[0])


def install_stop_signals(stop: asyncio.Event, early: EarlySignals | None = None) -> None:
    """First signal: ask for a graceful stop. Second: exit now (unacked messages go back to the
    queue; the producer re-reads from its checkpoint). A signal `early` caught before the loop ran
    is the first one."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("forced_exit", extra={"signal": signal.Signals(signum).name})
            os._exit(EXIT_FORCED)
        log.info("stop_requested", extra={"signal": signal.Signals(signum).name})
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if early is not None and early.received:
        on_signal(early.received[0])


def install_reopen_signal(reopen: asyncio.Event) -> None:
    """SIGHUP asks to reopen output files now (logrotate's `postrotate kill -HUP` convention)."""
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        log.info("reopen_requested", extra={"signal": "SIGHUP"})
        reopen.set()

    loop.add_signal_handler(signal.SIGHUP, on_hup)


async def with_deadline(step: str, awaitable: Awaitable[object], seconds: float) -> None:
    """Run one shutdown step; log and move on if it overruns, so shutdown itself is bounded. Not
    `asyncio.wait_for`: that waits for the cancelled step to finish, and a library call that
    swallows the cancellation (aio-pika opening a channel) then holds the shutdown forever."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        task.result()  # its error, if any, is the caller's
        return
    task.cancel()
    log.warning("shutdown_step_timeout", extra={"step": step, "seconds": seconds})


async def stop_tasks(tasks: Collection[asyncio.Task[Any]], seconds: float = 2.0) -> None:
    """Cancel background tasks and give them `seconds` to end; one that ignores its cancellation
    is left behind (logged) instead of holding the shutdown."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in pending:
        log.warning("background_task_stuck", extra={"task": task.get_name()})


def tune_malloc() -> bool:
    """Keep large freed blocks in the heap for reuse (see MMAP_THRESHOLD_BYTES). False where the C
    library has no mallopt (musl) or refuses: nothing else depends on it."""
    try:
        # the symbols the process already has (the C library's among them): not
        # ctypes.util.find_library, whose imports (shutil, subprocess, tempfile) cost ~0.8 MB
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """asyncio.run with uvloop where available, after tuning malloc for big batches."""
    tune_malloc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, absent only on odd platforms
        return asyncio.run(main())
    return uvloop.run(main())
