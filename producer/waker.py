"""When the reader reads again: at the kernel's word that a held file or the input directory
changed (inotify on the event loop), else at watchfiles' events, and in every case on a timer
(the safety net for missed events, and the only source in --poll mode)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import watchfiles

from producer.inotify import Inotify, InotifyUnavailable, wanted_name

log = logging.getLogger("logship.producer")


class Waker:
    """Wakes the reader. With inotify (`kernel`), a wait ends at the first change made after the
    last `covered()` read, so a growing file is read when it grows, not polled; without it
    (another OS, or out of inotify instances) watchfiles' debounced events wake the reader and
    the caller polls an active file itself."""

    def __init__(
        self,
        directory: Path,
        pattern: str,
        *,
        poll: bool,
        stop: asyncio.Event,
        held: Callable[[], dict[tuple[int, int], int]],
    ) -> None:
        """`held`: the files the tailer holds open, (device, inode) → a descriptor, each
        watched while held (through /proc/self/fd: a renamed or deleted file is still heard)."""
        self._directory = directory
        self._pattern = str(Path(pattern).name)
        self._poll = poll
        self._stop = stop
        self._held = held
        self._inotify: Inotify | None = None
        self._refusal_told = False
        self.event = asyncio.Event()

    @property
    def kernel(self) -> bool:
        """Reads are driven by the kernel's events: an active file need not be polled."""
        return self._inotify is not None

    def _wanted(self, _change: watchfiles.Change, path: str) -> bool:
        return wanted_name(Path(path).name, self._pattern)

    def open(self) -> None:
        """Take an inotify descriptor (not in --poll mode), before the first read: a reader
        that waited without one would hear nothing until the timer. Without one, `run`
        watches with watchfiles."""
        if self._poll or self._inotify is not None:
            return
        try:
            self._inotify = Inotify(str(self._directory), self._pattern)
        except InotifyUnavailable as error:
            log.info("inotify_unavailable", extra={"error": str(error)})

    async def run(self) -> None:
        """Until the stop, which wakes the reader too: a long --poll-interval must not hold a
        SIGTERM for that long."""
        try:
            if self._poll or self._inotify is not None:
                await self._stop.wait()
            else:
                await self._watch()
        finally:
            self.event.set()

    def close(self) -> None:
        """After the reader's last wait (its descriptor is registered with the loop while it
        waits: closed under it, the number could be another file's by the time it is removed)."""
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    async def _watch(self) -> None:
        async for _ in watchfiles.awatch(
            self._directory,
            watch_filter=self._wanted,
            debounce=50,
            step=5,
            rust_timeout=1000,
            yield_on_timeout=True,
            stop_event=self._stop,
            recursive=False,
        ):
            self.event.set()

    def covered(self) -> None:
        """A read begins: every change so far is what it will find, so none of them is a reason
        to read again."""
        if self._inotify is not None:
            self._inotify.drain()
            self.event.clear()

    async def wait(self, seconds: float) -> None:
        """Until an event (with inotify: a change since the last `covered()`), `seconds` at
        most."""
        inotify = self._inotify
        if inotify is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), seconds)
            self.event.clear()
            return
        # a new watch missed what came before it, and a change since the read is news
        watched = inotify.watch_directory()
        if inotify.follow(self._held()):
            if inotify.refused is not None and not self._refusal_told:
                self._refusal_told = True
                log.warning(
                    "inotify_watch_refused",
                    extra={"error": inotify.refused, "detail": "hearing the directory instead"},
                )
            return
        if watched or inotify.drain() or self._stop.is_set():
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(inotify.fd, self._readable, inotify)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), seconds)
        finally:
            loop.remove_reader(inotify.fd)
        self.event.clear()

    def _readable(self, inotify: Inotify) -> None:
        if inotify.drain():
            self.event.set()
