"""How a rebuild shows its progress: a bar on a terminal (lines, bytes, rate, time left against
the stream's end), a structured log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

log = logging.getLogger("logship.consumer.rebuild")

LOG_EVERY_S = 5.0


class Progress(Protocol):
    def update(self, offset: int, lines: int, written: int) -> None: ...


class LogProgress:
    """`rebuild_progress` every LOG_EVERY_S seconds, and never more often."""

    def __init__(self, first: int, end: int | None) -> None:
        self._first, self._end = first, end
        self._started = self._last = time.monotonic()

    def update(self, offset: int, lines: int, written: int) -> None:
        now = time.monotonic()
        if now - self._last < LOG_EVERY_S:
            return
        self._last = now
        rate = lines / max(1e-9, now - self._started)
        log.info(
            "rebuild_progress",
            extra={
                "offset": offset,
                "end_offset": self._end,
                "lines": lines,
                "bytes": written,
                "lines_per_s": round(rate),
            },
        )


class BarProgress:
    """A rich progress bar over the offsets from where reading started to the stream's end."""

    def __init__(self, first: int, end: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self._first = first
        self._started = time.monotonic()
        self.bar = Bar(
            TextColumn("rebuild"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[lines]:,} lines  {task.fields[size]}  {task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        total = None if end is None else max(1, end - first + 1)
        self._task = self.bar.add_task("rebuild", total=total, lines=0, size="0 B", rate="")

    def update(self, offset: int, lines: int, written: int) -> None:
        elapsed = max(1e-9, time.monotonic() - self._started)
        self.bar.update(
            self._task,
            completed=max(0, offset - self._first + 1),
            lines=lines,
            size=_size(written),
            rate=f"{lines / elapsed:,.0f} lines/s",
        )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@contextmanager
def make_progress(first: int, end: int | None) -> Iterator[Progress]:
    """A bar when stderr is a terminal, log lines otherwise."""
    if not sys.stderr.isatty():
        yield LogProgress(first, end)
        return
    bar = BarProgress(first, end)
    with bar.bar:
        yield bar
