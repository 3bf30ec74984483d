"""Discovering files: every path the input (a path or a glob) names now or later, and, after a
restart, where rotation moved the files we had not finished; round-robin reading between them."""

from __future__ import annotations

import fnmatch
import glob
import os
from pathlib import Path

from logship.wire import Batch
from producer.checkpoint import Checkpoint
from producer.follow import FileTail, TailOptions
from producer.metrics import ProducerMetrics

GLOB_CHARS = "*?["


class TailSet:
    """Every path the input pattern names now or later; round-robin between them. One descriptor
    per file identity even when two paths (say app.log and a rotated copy that matches the same
    glob) name one file."""

    def __init__(
        self,
        pattern: str,
        checkpoint: Checkpoint,
        options: TailOptions,
        metrics: ProducerMetrics,
    ) -> None:
        self.pattern = pattern
        self._is_glob = any(ch in pattern for ch in GLOB_CHARS)
        self._checkpoint = checkpoint
        self._options = options
        self._metrics = metrics
        self.tails: dict[str, FileTail] = {}
        self._next = 0
        self._started = False

    @property
    def directory(self) -> Path:
        return Path(self.pattern).parent

    def _paths(self) -> list[str]:
        if self._is_glob:
            return sorted(glob.glob(self.pattern))
        return [self.pattern]

    def _claimed(self) -> set[tuple[int, int]]:
        return {(f.dev, f.ino) for t in self.tails.values() for f in (*t.files, *t.late)}

    def _new_tail(self, path: str, *, at_startup: bool) -> FileTail:
        return FileTail(
            path,
            self._checkpoint,
            self._options,
            self._metrics,
            at_startup=at_startup,
            claimed=self._claimed,
        )

    def check(self) -> None:
        """Discover new paths, then let every tail look for rotation and truncation."""
        for path in self._paths():
            if path not in self.tails:
                self.tails[path] = self._new_tail(path, at_startup=not self._started)
        if not self._started:
            self._resume_rotated()
        self._started = True
        for tail in list(self.tails.values()):
            tail.check()

    def _resume_rotated(self) -> None:
        """After a restart, find unfinished sources whose file was renamed (app.log → app.log.1)
        while we were down, and drain them first."""
        unfinished = sorted(
            (e for e in self._checkpoint.entries.values() if not e.drained),
            key=lambda e: e.seq,
            reverse=True,
        )
        if not unfinished:
            return
        by_inode: dict[tuple[int, int], str] = {}
        try:
            with os.scandir(self.directory) as entries:
                for item in entries:
                    try:
                        st = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    by_inode[(st.st_dev, st.st_ino)] = item.path
        except OSError:
            return
        for entry in unfinished:
            candidate = by_inode.get((entry.dev, entry.ino))
            if candidate is None or os.path.abspath(candidate) == os.path.abspath(entry.path):
                continue
            tail = self.tails.get(entry.path)
            if tail is None and self._is_glob and fnmatch.fnmatch(entry.path, self.pattern):
                # renamed away and not yet re-created: the glob no longer names its path
                tail = self.tails[entry.path] = self._new_tail(entry.path, at_startup=True)
            if tail is not None:
                tail.resume_rotated(entry, candidate)

    def read(self, *, once: bool = False) -> Batch | None:
        tails = list(self.tails.values())
        for i in range(len(tails)):
            tail = tails[(self._next + i) % len(tails)]
            batch = tail.read(once=once)
            if batch is not None:
                self._next = (self._next + i + 1) % max(1, len(tails))
                return batch
        return None

    def idle(self) -> bool:
        """True when no file has a rotated-away predecessor still to drain."""
        return all(len(t.files) <= 1 for t in self.tails.values())

    def waiting_for_a_file(self) -> bool:
        """True when a path names no open file yet (missing at start, or between a rotation's
        rename and its create): worth a quick stat, since a file that appears and is renamed
        away before we open it is out of reach. Not for globs: their paths come and go."""
        return not self._is_glob and any(
            not t.files or t.files[-1].rotated_at is not None for t in self.tails.values()
        )

    def close(self) -> None:
        for tail in self.tails.values():
            tail.close()
