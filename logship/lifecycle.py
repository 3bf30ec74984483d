"""Run a service: SIGTERM/SIGINT set a stop event, a second signal forces the exit; startup → run →
shutdown, each shutdown step with a deadline."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("logship.lifecycle")

EXIT_FORCED = 130


def install_stop_signals(stop: asyncio.Event) -> None:
    """First signal: ask for a graceful stop. Second: exit now (unacked messages go back to the
    queue; the producer re-reads from its checkpoint)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("forced_exit", extra={"signal": signal.Signals(signum).name})
            os._exit(EXIT_FORCED)
        log.info("stop_requested", extra={"signal": signal.Signals(signum).name})
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def with_deadline(step: str, awaitable: Awaitable[object], seconds: float) -> None:
    """Run one shutdown step; log and move on if it overruns, so shutdown itself is bounded."""
    try:
        await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        log.warning("shutdown_step_timeout", extra={"step": step, "seconds": seconds})


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """asyncio.run with uvloop where available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, absent only on odd platforms
        return asyncio.run(main())
    return uvloop.run(main())
