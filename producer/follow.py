"""Following one path through rename rotation, copytruncate, deletion and re-creation: reads large
chunks at byte offsets, in order across rotations, and hands out batches; knows no AMQP."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from logship.wire import Batch, now_ns
from producer.batcher import cut_batch
from producer.checkpoint import HEAD_BYTES, Checkpoint, SourceEntry, head_digest
from producer.metrics import ProducerMetrics

log = logging.getLogger("logship.producer.tail")

RECENT_BYTES = 64


@dataclass
class OpenFile:
    """An open file descriptor and where we are in it. Holding the descriptor keeps a rotated or
    deleted file readable, and keeps its inode from being reused while we drain it."""

    fd: int
    path: str
    dev: int
    ino: int
    source: SourceEntry
    read_offset: int
    rotated_at: float | None = None
    in_oversized_line: bool = False
    last_growth: float = field(default_factory=time.monotonic)
    # the last bytes read (up to RECENT_BYTES, ending at read_offset): a copytruncate copy
    # holds them at the same offset
    recent: bytes = b""

    @classmethod
    def at(
        cls,
        fd: int,
        path: str,
        st: os.stat_result,
        source: SourceEntry,
        offset: int,
        rotated_at: float | None = None,
    ) -> OpenFile:
        """An open file about to be read from `offset`, knowing the bytes just before it."""
        opened = cls(fd, path, st.st_dev, st.st_ino, source, offset, rotated_at)
        start = max(0, offset - RECENT_BYTES)
        opened.recent = os.pread(fd, offset - start, start)
        return opened

    def head(self) -> bytes:
        return os.pread(self.fd, HEAD_BYTES, 0)

    def read_head(self) -> bytes:
        """The first bytes the fingerprint covers, widened only as far as we have read: one that
        covered bytes written later would not match a copy made before they were."""
        length = max(self.source.head_len, min(HEAD_BYTES, self.read_offset))
        return os.pread(self.fd, length, 0)

    def advance(self, body: bytes) -> None:
        self.read_offset += len(body)
        self.recent = (self.recent + body[-RECENT_BYTES:])[-RECENT_BYTES:]


@dataclass(frozen=True)
class TailOptions:
    max_bytes: int
    max_lines: int
    rotation_grace: float
    read_from_end: bool


def _end_of_last_line(fd: int, size: int) -> int:
    """Offset just past the last newline: reading from the end still ships the line being
    written now whole, from its first byte."""
    window = 64 * 1024
    position = size
    while position > 0:
        start = max(0, position - window)
        last = os.pread(fd, position - start, start).rfind(b"\n")
        if last >= 0:
            return start + last + 1
        position = start
    return 0


class FileTail:
    """One path. Files it has opened are read strictly in order: a rotated-away file is drained
    before the file that replaced it, so lines keep their order across rotations."""

    def __init__(
        self,
        path: str,
        checkpoint: Checkpoint,
        options: TailOptions,
        metrics: ProducerMetrics,
        *,
        at_startup: bool,
        claimed: Callable[[], set[tuple[int, int]]],
    ) -> None:
        self.path = path
        # every file identity any tail of the set holds: one descriptor per file, copies included
        self._claimed = claimed
        self._checkpoint = checkpoint
        self._options = options
        self._metrics = metrics
        self._at_startup = at_startup
        self.files: deque[OpenFile] = deque()
        # rotated files retired early because the writer moved on, still read for late writes
        # (another writer process) until their grace ends
        self.late: list[OpenFile] = []

    # -- opening ---------------------------------------------------------------------------------

    def _open(self) -> OpenFile | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except PermissionError:
            log.error("input_unreadable", extra={"path": self.path})
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in self._claimed():
            os.close(fd)
            return None
        head = os.pread(fd, HEAD_BYTES, 0)
        entry = self._checkpoint.find(st.st_dev, st.st_ino, head)
        if entry is not None and entry.offset <= st.st_size:
            offset = entry.offset
            log.info(
                "source_resumed", extra={"path": self.path, "source": entry.id, "offset": offset}
            )
        else:
            # A file seen for the first time: from the end only if it was there when we started
            # for the first time; a file that replaced a known one while we were down is new data.
            start = 0
            if (
                self._at_startup
                and self._options.read_from_end
                and not self._checkpoint.knows_path(self.path)
            ):
                start = _end_of_last_line(fd, st.st_size)
            entry = self._checkpoint.new_source(self.path, st.st_dev, st.st_ino, head, start)
            offset = start
            log.info("source_new", extra={"path": self.path, "source": entry.id, "offset": offset})
        return OpenFile.at(fd, self.path, st, entry, offset)

    def resume_rotated(self, entry: SourceEntry, candidate: str) -> None:
        """Reopen an unfinished source found under another name after a restart."""
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        st = os.fstat(fd)
        if not entry.matches(st.st_dev, st.st_ino, os.pread(fd, HEAD_BYTES, 0)):
            os.close(fd)
            return
        log.info(
            "source_resumed_rotated",
            extra={"path": candidate, "source": entry.id, "offset": entry.offset},
        )
        entry.updated = time.time()  # being read again: not stale, whenever it was finished
        self.files.appendleft(OpenFile.at(fd, candidate, st, entry, entry.offset, time.monotonic()))

    # -- checking for rotation and truncation ------------------------------------------------------

    def check(self) -> None:
        """stat the path and decide from inode, size and offset; watch events are only a hint."""
        try:
            st: os.stat_result | None = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        current = self.files[-1] if self.files else None
        if current is not None and current.rotated_at is None:
            if st is None or (st.st_dev, st.st_ino) != (current.dev, current.ino):
                current.rotated_at = time.monotonic()
                self._metrics.rotations.inc()
                log.info(
                    "file_rotated",
                    extra={
                        "path": self.path,
                        "source": current.source.id,
                        "offset": current.read_offset,
                        "deleted": st is None,
                    },
                )
                current = None
            else:
                self._check_truncation(current)
        elif current is not None:
            current = None
        if current is None and st is not None:
            opened = self._open()
            if opened is not None:
                self.files.append(opened)
        self._at_startup = False  # a file that appears later was not there when we started
        self._update_behind()

    def _check_truncation(self, current: OpenFile) -> None:
        size = os.fstat(current.fd).st_size
        truncated = size < current.read_offset
        if not truncated and current.source.head_len:
            head = current.read_head()
            truncated = not current.source.matches(current.dev, current.ino, head)
            if not truncated:
                self._checkpoint.widen_head(current.source, head)
        elif not truncated and current.read_offset:
            self._checkpoint.widen_head(current.source, current.read_head())
        if truncated:
            self._metrics.truncations.inc()
            log.warning(
                "file_truncated",
                extra={
                    "path": self.path,
                    "source": current.source.id,
                    "offset": current.read_offset,
                    "size": size,
                },
            )
            if not self._drain_copy_of(current):
                self._checkpoint.finish(current.source, current.read_offset)
            current.source = self._checkpoint.new_source(
                self.path, current.dev, current.ino, current.head(), 0
            )
            current.read_offset = 0
            current.recent = b""
            current.in_oversized_line = False

    def _drain_copy_of(self, truncated: OpenFile) -> bool:
        """copytruncate: the lines written since our last read are in the copy it made. Drain the
        copy from our offset under the same source before the truncated file starts over, as
        for a rename rotation."""
        entry = truncated.source
        if not entry.head_len or not truncated.recent:
            return False
        found = self._find_copy(entry, truncated)
        if found is None:
            return False
        fd, path, st = found
        log.info(
            "truncated_copy_found",
            extra={"path": path, "source": entry.id, "offset": truncated.read_offset},
        )
        self._checkpoint.relocate(entry, st.st_dev, st.st_ino)  # a restart finds it there
        copy = OpenFile.at(fd, path, st, entry, truncated.read_offset, time.monotonic())
        copy.in_oversized_line = truncated.in_oversized_line
        self.files.insert(len(self.files) - 1, copy)  # before the truncated file, always last
        return True

    def _find_copy(
        self, entry: SourceEntry, truncated: OpenFile
    ) -> tuple[int, str, os.stat_result] | None:
        """A regular file in the same directory, held by no tail, longer than what we read, with
        our fingerprint at its start and the bytes we read last just before our offset."""
        claimed = self._claimed()
        try:
            with os.scandir(os.path.dirname(self.path) or ".") as items:
                candidates = [item.path for item in items if item.is_file(follow_symlinks=False)]
        except OSError:
            return None
        for path in candidates:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if self._is_copy(fd, st, entry, truncated, claimed):
                    return fd, path, st
            except OSError:
                pass
            os.close(fd)
        return None

    @staticmethod
    def _is_copy(
        fd: int,
        st: os.stat_result,
        entry: SourceEntry,
        truncated: OpenFile,
        claimed: set[tuple[int, int]],
    ) -> bool:
        if (
            not stat.S_ISREG(st.st_mode)
            or (st.st_dev, st.st_ino) in claimed
            or st.st_size <= truncated.read_offset
        ):
            return False
        recent = truncated.recent
        return (
            head_digest(os.pread(fd, entry.head_len, 0)) == entry.head_sha
            and os.pread(fd, len(recent), truncated.read_offset - len(recent)) == recent
        )

    def _update_behind(self) -> None:
        behind = 0
        for f in (*self.files, *self.late):
            try:
                behind += max(0, os.fstat(f.fd).st_size - f.source.offset)
            except OSError:
                continue
        self._metrics.bytes_behind.labels(self.path).set(behind)

    # -- reading ---------------------------------------------------------------------------------

    def read(self, *, once: bool) -> Batch | None:
        """The next batch of the oldest open file, or None when there is nothing complete."""
        if self.late:
            batch = self._read_late(once=once)
            if batch is not None:
                return batch
        while self.files:
            f = self.files[0]
            if f.rotated_at is None:
                # before reading on: a file truncated and rewritten past our offset since the
                # last look would otherwise be read at the old offset under the old source
                self._check_truncation(f)
                f = self.files[0]  # the copy of a truncated file, if found, comes first
            grace_over = f.rotated_at is not None and (once or self._grace_over(f))
            retiring = grace_over or (f.rotated_at is not None and self._successor_written())
            # an unterminated end ships only when the grace is over: another writer may still
            # finish that line
            batch = self._read_from(f, final=grace_over)
            if batch is not None or not retiring:
                return batch
            self.files.popleft()
            if grace_over:
                self._retire(f)
            else:
                self.late.append(f)
        return None

    def _grace_over(self, f: OpenFile) -> bool:
        assert f.rotated_at is not None
        return time.monotonic() - f.rotated_at >= self._options.rotation_grace

    def _read_from(self, f: OpenFile, *, final: bool) -> Batch | None:
        data = os.pread(f.fd, self._options.max_bytes, f.read_offset)
        if not data:
            return None
        f.last_growth = time.monotonic()
        cut = cut_batch(
            data,
            max_bytes=self._options.max_bytes,
            max_lines=self._options.max_lines,
            final=final and len(data) < self._options.max_bytes,
        )
        if not cut.length:
            return None
        return self._batch(f, data, cut.length, cut.lines, cut.oversized)

    def _read_late(self, *, once: bool) -> Batch | None:
        """Late writes to files retired early (out of order with the successor, not lost);
        each is closed once its grace is over and nothing is left in it."""
        for f in list(self.late):
            grace_over = once or self._grace_over(f)
            batch = self._read_from(f, final=grace_over)
            if batch is not None:
                log.info(
                    "late_write_shipped",
                    extra={"path": f.path, "source": f.source.id, "offset": batch.start},
                )
                return batch
            if grace_over:
                self.late.remove(f)
                self._retire(f)
        return None

    def _successor_written(self) -> bool:
        """The writer has moved on to the next file: no late write to the old one is coming, so
        stop waiting out the grace (a copytruncate of the new file could otherwise overtake us)."""
        if len(self.files) < 2:
            return False
        successor = self.files[1]
        try:
            return os.fstat(successor.fd).st_size > successor.read_offset
        except OSError:
            return False

    def _batch(self, f: OpenFile, data: bytes, length: int, lines: int, oversized: bool) -> Batch:
        if oversized and not f.in_oversized_line:
            self._metrics.oversized_lines.inc()
            log.warning(
                "line_oversized",
                extra={
                    "path": f.path,
                    "source": f.source.id,
                    "offset": f.read_offset,
                    "max_bytes": self._options.max_bytes,
                },
            )
        f.in_oversized_line = oversized
        start = f.read_offset
        body = data if length == len(data) else data[:length]
        f.advance(body)
        if start < HEAD_BYTES and f.source.head_len < HEAD_BYTES:
            self._checkpoint.widen_head(f.source, f.read_head())  # fingerprint what we read
        self._metrics.lines_read.inc(lines)
        self._metrics.bytes_read.inc(length)
        return Batch(f.source.id, f.path, start, start + length, lines, now_ns(), body)

    def _retire(self, f: OpenFile) -> None:
        log.info(
            "file_finished", extra={"path": f.path, "source": f.source.id, "offset": f.read_offset}
        )
        os.close(f.fd)
        self._checkpoint.finish(f.source, f.read_offset)

    def close(self) -> None:
        while self.files:
            os.close(self.files.popleft().fd)
        while self.late:
            os.close(self.late.pop().fd)
