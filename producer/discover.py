"""Discovering files: every path the input (a path or a glob) names now or later, and, after a
restart, where rotation moved the files we had not finished; round-robin reading between them."""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from logship.wire import Batch
from producer.checkpoint import Checkpoint, SourceEntry
from producer.follow import FileTail, OpenFile, TailOptions, report_lost
from producer.identity import (
    COMPRESSED_SUFFIXES,
    HEAD_BYTES,
    Opened,
    file_generation,
    open_if,
    rotation_of,
)
from producer.metrics import ProducerMetrics

log = logging.getLogger("logship.producer.discover")

GLOB_CHARS = "*?["


Taken = set[tuple[int, int]]
_LOST: Opened = (-1, "", os.stat_result((0,) * 10))
Located = Opened | None


def _directory_files(directory: str) -> list[tuple[str, os.stat_result]]:
    """Every regular file in the directory (not following symlinks), with its stat."""
    found = []
    try:
        with os.scandir(directory or ".") as items:
            for item in items:
                try:
                    if item.is_file(follow_symlinks=False):
                        found.append((item.path, item.stat(follow_symlinks=False)))
                except OSError:
                    continue
    except OSError:
        pass
    return found


def _head(fd: int) -> bytes:
    return os.pread(fd, HEAD_BYTES, 0)


def _starts_as_seen(entry: SourceEntry) -> Callable[[int, int], bool]:
    return lambda fd, _: entry.starts_as_seen(fd)


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
    def started(self) -> bool:
        """The first look was taken (resuming what rotation moved while we were down)."""
        return self._started

    @property
    def directory(self) -> Path:
        return Path(self.pattern).parent

    def _paths(self) -> list[str]:
        if self._is_glob:
            return sorted(glob.glob(self.pattern))
        return [self.pattern]

    def open_files(self) -> Iterator[OpenFile]:
        """Every file held open: each tail's current and rotated files, and late ones."""
        return (f for t in self.tails.values() for f in (*t.files, *t.late))

    def _claimed(self) -> set[tuple[int, int]]:
        return {(f.dev, f.ino) for f in self.open_files()}

    def _held(self) -> dict[str, int]:
        return {f.source.id: f.fd for f in self.open_files()}

    def held_files(self) -> dict[tuple[int, int], int]:
        """Every file held open, (device, inode) → its descriptor (the waker watches them)."""
        return {(f.dev, f.ino): f.fd for f in self.open_files()}

    def _new_tail(self, path: str, *, at_startup: bool) -> FileTail:
        return FileTail(
            path,
            self._checkpoint,
            self._options,
            self._metrics,
            at_startup=at_startup,
            claimed=self._claimed,
            held=self._held,
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
        """After a restart, before any current file is opened: drain first what rotation moved
        while we were down. Unfinished sources are found where they went (renamed: by inode;
        copied by copytruncate: by content), oldest first; what is found nowhere is counted as
        lost. Then the rotations of the input written while we were down that no source knows
        (created and rotated away before we could open them), oldest first."""
        files = _directory_files(str(self.directory))
        taken: set[tuple[int, int]] = set()
        unfinished = sorted(
            (e for e in self._checkpoint.entries.values() if not e.drained), key=lambda e: e.seq
        )
        for entry in unfinished:
            tail = self._tail_of(entry.path)
            if tail is None:
                continue
            found = self._locate(entry, files, taken)
            if found is None:
                continue  # where it was: the tail resumes it when it opens its path
            if found is _LOST:
                self._lost(entry, files)
                continue
            fd, path, st = found
            if (st.st_dev, st.st_ino) != (entry.dev, entry.ino):
                self._checkpoint.relocate(entry, st.st_dev, st.st_ino, file_generation(fd))
            taken.add((st.st_dev, st.st_ino))
            tail.adopt(fd, path, st, entry)
        written_at = self._checkpoint.written_at_ns
        tail = self.tails.get(self.pattern)
        if tail is not None and written_at is not None and self._checkpoint.knows_path(tail.path):
            # (a glob's rotations are the files it names, each followed in its own right)
            tail.scan_since = written_at - 1

    def _tail_of(self, path: str) -> FileTail | None:
        tail = self.tails.get(path)
        if tail is None and self._is_glob and fnmatch.fnmatch(path, self.pattern):
            # renamed away and not yet re-created: the glob no longer names its path
            tail = self.tails[path] = self._new_tail(path, at_startup=True)
        return tail

    def _is_rotation(self, entry_path: str, path: str) -> bool:
        """A name rotation of the source's path gives (or, for a glob, a name the glob names)."""
        name = os.path.basename(entry_path)
        if rotation_of(name, os.path.basename(path)) is not None:
            return True
        return self._is_glob and fnmatch.fnmatch(path, self.pattern)

    def _locate(
        self, entry: SourceEntry, files: list[tuple[str, os.stat_result]], taken: Taken
    ) -> Located:
        """Where the source's unread bytes are: None when still at its own path (resumed by the
        tail), an open file elsewhere, or _LOST."""
        home = os.path.abspath(entry.path)
        if not entry.head_len:
            return self._locate_unread(entry, files, home)
        for path, st in files:
            if (st.st_dev, st.st_ino) != (entry.dev, entry.ino):
                continue
            if not self._may_be_its_file(entry, path, home):
                continue
            opened = open_if(path, lambda fd, size: entry.held_by(fd, size, by_inode=True))
            if opened is not None and os.path.abspath(path) == home:
                os.close(opened[0])
                return None
            if opened is not None:
                return opened
        if entry.rotated:
            return _LOST  # nobody copies a rotated file: gone with its inode
        for path, st in files:
            if (st.st_dev, st.st_ino) in taken or not self._is_rotation(entry.path, path):
                continue
            if path.endswith(COMPRESSED_SUFFIXES):
                continue
            # and no other source's file: a short fingerprint (a half line's first bytes) starts
            # many files (model chaos seed 600009115 read an older rotation again as the copy)
            opened = open_if(
                path,
                lambda fd, size: (
                    entry.held_by(fd, size, by_inode=False) and not self._known_elsewhere(entry, fd)
                ),
            )
            if opened is not None:
                log.info("source_copy_found", extra={"path": path, "source": entry.id})
                return opened
        return _LOST

    def _may_be_its_file(self, entry: SourceEntry, path: str, home: str) -> bool:
        """The file on the source's inode number at `path` may be its file: only at its path or
        a rotation of it, as for an unread source (an inode number is soon reused, and a
        consumer's output beside the input holds the very same bytes: model chaos seed
        600009090 read output.txt as its input, in a loop); and a rotated file never at its path
        (a new file there got its number back, and may begin with the same bytes: seed
        620011227 resumed one at the old offset, its first line lost)."""
        if os.path.abspath(path) == home:
            return not entry.rotated
        return self._is_rotation(entry.path, path)

    def _locate_unread(
        self, entry: SourceEntry, files: list[tuple[str, os.stat_result]], home: str
    ) -> Located:
        """A source with no fingerprint: nothing of it was read or published, so whichever file
        ships its bytes duplicates nothing; only order and loss reports are at stake. Its inode
        number alone proves little (a deleted file's number is soon reused, by any file, even
        our own checkpoint's temp file): the file on it at a rotation name is taken for it only
        if last written before our last checkpoint write (we held the number until then) and
        known as no other source. One written since, ours renamed or a new file on a reused
        number, is left to the scan for rotations written while we were down, which ships it
        in order with the others; so is a copy of it. At its own path, whatever holds its inode
        number is read as a new file from its start. What we saw of it (a half line, kept in
        the checkpoint) and find in no file is reported lost."""
        ours = {os.path.abspath(p) for p in self._checkpoint.own_files()}
        written_at = self._checkpoint.written_at_ns
        for path, st in files:
            here = os.path.abspath(path)
            if (st.st_dev, st.st_ino) != (entry.dev, entry.ino) or here in ours:
                continue
            if here != home and not self._is_rotation(entry.path, path):
                continue
            if here == home:
                cut = st.st_size < entry.size or (
                    entry.seen_len > 0 and not open_if(path, _starts_as_seen(entry), close=True)
                )
                if cut and self._seen_elsewhere(entry, files):
                    pass  # in a copy the scan ships
                elif st.st_size < entry.size:
                    report_lost(self._metrics, entry.path, entry.id, 0, entry.size, "deleted")
                else:
                    self._emptied_while_down(entry, st)
                self._checkpoint.finish(entry, 0)
                return None
            self._emptied_while_down(entry, st)
            if written_at is not None and st.st_mtime_ns <= written_at:
                opened = open_if(path, lambda fd, _: not self._known_elsewhere(entry, fd))
                if opened is not None:
                    return opened
                continue
            if entry.size and not (
                open_if(path, _starts_as_seen(entry), close=True)
                or self._seen_elsewhere(entry, files)
            ):
                report_lost(
                    self._metrics, entry.path, entry.id, 0, entry.size, "deleted", at_least=True
                )
            self._checkpoint.finish(entry, 0)
            return None
        if self._seen_elsewhere(entry, files):
            self._checkpoint.finish(entry, 0)
            return None
        return _LOST

    def _known_elsewhere(self, entry: SourceEntry, fd: int) -> bool:
        return self._checkpoint.knows_file(fd, os.fstat(fd), besides=entry.id, live=self._held())

    def _seen_elsewhere(self, entry: SourceEntry, files: list[tuple[str, os.stat_result]]) -> bool:
        """What we saw of an unread source is at the start of a rotation of its path written
        since our last checkpoint (a copy made while we were down, or the file itself renamed),
        which the scan for rotations ships: not lost."""
        written_at = self._checkpoint.written_at_ns
        if not entry.seen_len or written_at is None:
            return False
        name = os.path.basename(entry.path)
        return any(
            st.st_mtime_ns > written_at
            and not path.endswith(COMPRESSED_SUFFIXES)
            and rotation_of(name, os.path.basename(path)) is not None
            and open_if(path, _starts_as_seen(entry), close=True)
            for path, st in files
        )

    def _emptied_while_down(self, entry: SourceEntry, st: os.stat_result) -> None:
        """The file of a source read nothing of, found empty but changed since our last
        checkpoint write: written and cut while we were down (a copytruncate whose copy is
        gone, a truncate). How much it held nobody can tell: reported as at least nothing."""
        written_at = self._checkpoint.written_at_ns
        if st.st_size == 0 and written_at is not None and st.st_mtime_ns > written_at:
            report_lost(self._metrics, entry.path, entry.id, 0, 0, "truncated", at_least=True)

    def _lost(self, entry: SourceEntry, files: list[tuple[str, os.stat_result]]) -> None:
        """An unfinished source found nowhere: its unread bytes are counted as lost, once."""
        name = os.path.basename(entry.path)
        compressed = any(
            st.st_mtime >= entry.updated
            for path, st in files
            if (r := rotation_of(name, os.path.basename(path))) is not None and r.compressed
        )
        # still there, cut or rewritten in place (copytruncate), or gone (an inode reused by a
        # new file holds other first bytes; a rotated file's, at the path, whatever it holds)
        home = os.path.abspath(entry.path)
        in_place = any(
            open_if(
                path,
                lambda fd, _: entry.matches(entry.dev, entry.ino, _head(fd), file_generation(fd)),
                close=True,
            )
            for path, st in files
            if (st.st_dev, st.st_ino) == (entry.dev, entry.ino)
            and not (entry.rotated and os.path.abspath(path) == home)
        )
        reason = "copy_compressed" if compressed else "copy_missing" if in_place else "deleted"
        end = max(entry.end or 0, entry.size)
        # what it held past the last size we saw was written while we were down: unknown
        report_lost(self._metrics, entry.path, entry.id, entry.offset, end, reason, at_least=True)
        self._checkpoint.finish(entry, entry.offset)

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

    def waiting_for(self) -> list[str]:
        """The input path while it names no file and nothing of it is left to read (missing at
        start, or deleted and drained): what the producer waits for. Not for globs, whose paths
        come and go as a matter of course."""
        if self._is_glob:
            return []
        return [t.path for t in self.tails.values() if t.missing]

    def deleted_unread(self) -> bool:
        """Some held file is deleted with bytes not read yet (see FileTail.deleted_unread)."""
        return any(t.deleted_unread() for t in self.tails.values())

    def read_deleted(self) -> Batch | None:
        """At stop: the next batch on the way to what deleted files still hold, read as at the
        end of a --once run (a rotated file's unterminated end ships: nobody can finish it)."""
        for tail in self.tails.values():
            if tail.deleted_unread():
                tail.check()  # a deleted current file is a rotated one
                batch = tail.read(once=True)
                if batch is not None:
                    return batch
        return None

    def report_deleted_unread(self) -> None:
        for tail in self.tails.values():
            tail.report_deleted_unread()

    def close(self) -> None:
        for tail in self.tails.values():
            tail.close()
