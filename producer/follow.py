"""Following one path through rename rotation, copytruncate, deletion and re-creation: reads large
chunks at byte offsets, in order across rotations, and hands out batches; knows no AMQP."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from logship.stages import change_to_read
from logship.wire import Batch, now_ns
from producer.batcher import cut_batch
from producer.checkpoint import Checkpoint, SourceEntry
from producer.identity import (
    BEFORE_BYTES,
    HEAD_BYTES,
    NotRegularFile,
    Opened,
    Rotation,
    bytes_before,
    digest,
    file_clock_ns,
    file_generation,
    gzip_copy_size,
    open_if,
    open_regular,
    rotation_of,
)
from producer.metrics import ProducerMetrics

log = logging.getLogger("logship.producer.tail")

RECENT_BYTES = BEFORE_BYTES
SEEN_HEAD_BYTES = 64


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
    # the last bytes read (up to RECENT_BYTES, ending at read_offset): the file still holds
    # them there unless it was rewritten, and a copytruncate copy holds them at the same offset
    recent: bytes = b""
    # the largest size the file was seen at while it was intact: what a truncation cost
    size_seen: int = 0
    # its first bytes as last seen while no line of it was read yet (no fingerprint): a file
    # cut and refilled before its first line was read is told by them
    seen_head: bytes = b""
    # when we opened it, on the clock file times come from: a copy made of it later is newer,
    # a file already there when we opened it is not
    opened_at_ns: int = 0
    # when its current source began (its opening, or the truncation that started it over): a
    # copy of the source is newer than that
    source_at_ns: int = 0
    # rewritten after it was rotated away: nothing more to read from it
    gone: bool = False
    # the last read that reached the file's end (monotonic; 0: none yet), and whether it found
    # bytes: when the bytes of the next batch can have appeared (logship/stages.py)
    looked_at: float = 0.0
    growing: bool = False

    @classmethod
    def at(
        cls,
        fd: int,
        path: str,
        st: os.stat_result,
        source: SourceEntry,
        offset: int,
        rotated_at: float | None = None,
        opened_at_ns: int | None = None,
    ) -> OpenFile:
        """An open file about to be read from `offset`, knowing the bytes just before it;
        `opened_at_ns` is when it was opened and its stat taken (the file clock), if earlier."""
        opened = cls(fd, path, st.st_dev, st.st_ino, source, offset, rotated_at)
        opened.recent = bytes_before(fd, offset, RECENT_BYTES)
        # what is there beyond the offset is ours only once a check sees the file intact
        opened.size_seen = offset
        opened.opened_at_ns = file_clock_ns() if opened_at_ns is None else opened_at_ns
        opened.source_at_ns = opened.opened_at_ns
        return opened

    def head(self) -> bytes:
        return os.pread(self.fd, HEAD_BYTES, 0)

    def read_head(self) -> bytes:
        """The first bytes the fingerprint covers, widened only as far as we have read: one that
        covered bytes written later would not match a copy made before they were."""
        length = max(self.source.head_len, min(HEAD_BYTES, self.read_offset))
        return os.pread(self.fd, length, 0)

    def start_over(self, source: SourceEntry) -> None:
        """Read the file from its start again, as `source` (begun from its first bytes, taken
        just before). Its size is taken now, after those bytes: a size a look took before the
        file was cut (and written again) would make the new source's first lines, once read,
        look like a second cut: counted as lost, then shipped again."""
        self.source = source
        self.read_offset = 0
        self.recent = b""
        self.seen_head = b""
        self.size_seen = os.fstat(self.fd).st_size
        # the new source begins now: a copy made before is no copy of it
        self.source_at_ns = file_clock_ns()
        self.in_oversized_line = False

    def advance(self, body: bytes) -> None:
        self.read_offset += len(body)
        self.recent = (self.recent + body[-RECENT_BYTES:])[-RECENT_BYTES:]

    def intact(self) -> bool:
        """The bytes just before the read offset are still the ones we read there: otherwise
        the file was rewritten (same inode, other bytes), whatever its first bytes say."""
        return (
            not self.recent
            or os.pread(self.fd, len(self.recent), self.read_offset - len(self.recent))
            == self.recent
        )


@dataclass(frozen=True)
class TailOptions:
    max_bytes: int
    max_lines: int
    rotation_grace: float
    read_from_end: bool


def report_lost(
    metrics: ProducerMetrics,
    path: str,
    source: str,
    start: int,
    end: int,
    reason: str,
    *,
    at_least: bool = False,
) -> None:
    """Bytes nobody can read any more: counted and logged once (the contract a monitor parses:
    event bytes_lost with path, source, start, end, bytes, reason). With `at_least`, `end` is
    only as far as we know (a file gone while we were down may have grown first, by any amount):
    logged even when that is nothing, since the loss may not be."""
    if end <= start and not at_least:
        return
    end = max(start, end)
    metrics.bytes_lost.labels(reason).inc(end - start)
    log.warning(
        "bytes_lost",
        extra={
            "path": path,
            "source": source,
            "start": start,
            "end": end,
            "bytes": end - start,
            "reason": reason,
            "at_least": at_least,
        },
    )


def _written_since(path: str, since_ns: int) -> bool:
    """A non-empty file last written after `since_ns` (file clock), by its stat alone."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_size > 0 and st.st_mtime_ns > since_ns


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
        held: Callable[[], dict[str, int]],
    ) -> None:
        self.path = path
        # every file identity any tail of the set holds: one descriptor per file, copies included
        self._claimed = claimed
        # source → the descriptor of its file, for every file any tail of the set holds
        self._held = held
        self._checkpoint = checkpoint
        self._options = options
        self._metrics = metrics
        self._at_startup = at_startup
        # the kind of thing at the path we last refused to read (logged once until it changes)
        self._refused: str | None = None
        # look for rotations of our path written after this (file clock, ns) and known to no
        # source, when the next file at the path is opened: set after a rotation, and at start
        self.scan_since: int | None = None
        self.files: deque[OpenFile] = deque()
        # rotated files retired early because the writer moved on, still read for late writes
        # (another writer process) until their grace ends
        self.late: list[OpenFile] = []
        # the path named nothing at the last check
        self._absent = False

    @property
    def missing(self) -> bool:
        """The path named nothing at the last check and no file of it is held: nothing to
        read until one appears there."""
        return self._absent and not self.files and not self.late

    # -- opening ---------------------------------------------------------------------------------

    def _open(self) -> OpenFile | None:
        # before anything else: a checkpoint write (fsync) comes before OpenFile.at, and a copy
        # made meanwhile must count as newer than our opening
        opened_at = file_clock_ns()
        try:
            fd, st = open_regular(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except NotRegularFile as error:
            self._refuse(error.kind, error.strerror)
            return None
        except OSError as error:
            self._refuse("unreadable", error.strerror)
            return None
        self._refused = None
        if (st.st_dev, st.st_ino) in self._claimed():
            os.close(fd)
            return None
        head = os.pread(fd, HEAD_BYTES, 0)
        # a finished source has nothing left to send: a file at our path on its inode number
        # that starts with its (maybe short) fingerprint is a new file that reused the number
        gen = file_generation(fd)
        entry = self._checkpoint.find(st.st_dev, st.st_ino, head, resumable=True, gen=gen)
        if entry is not None and not (entry.offset <= st.st_size and entry.same_bytes_before(fd)):
            # same inode and first bytes, other bytes before the offset: rewritten in place
            log.info(
                "source_rewritten",
                extra={"path": self.path, "source": entry.id, "offset": entry.offset},
            )
            entry = None
        if entry is not None:
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
            entry = self._checkpoint.new_source(
                self.path, st.st_dev, st.st_ino, head, start, gen=gen
            )
            offset = start
            log.info("source_new", extra={"path": self.path, "source": entry.id, "offset": offset})
        return OpenFile.at(fd, self.path, st, entry, offset, opened_at_ns=opened_at)

    def _refuse(self, kind: str, reason: str | None) -> None:
        """Something at the path we cannot read: said once (until it changes), never waited on."""
        if self._refused == kind:
            return
        self._refused = kind
        log.error("input_not_readable", extra={"path": self.path, "kind": kind, "error": reason})

    def adopt(self, fd: int, path: str, st: os.stat_result, entry: SourceEntry) -> None:
        """Drain a file found at start (a known source where rotation moved it, or a rotation
        written while we were down) before the current file, in the order adopted."""
        log.info(
            "source_resumed_rotated",
            extra={"path": path, "source": entry.id, "offset": entry.offset},
        )
        entry.updated = time.time()  # being read again: not stale, whenever it was finished
        if os.path.abspath(path) != os.path.abspath(entry.path):
            self._checkpoint.mark_rotated(entry)
        self.files.append(OpenFile.at(fd, path, st, entry, entry.offset, time.monotonic()))

    # -- checking for rotation and truncation ------------------------------------------------------

    def check(self) -> None:
        """stat the path and decide from inode, size and offset; watch events are only a hint."""
        looked_at = file_clock_ns()
        try:
            st: os.stat_result | None = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is None and not self.files and self.scan_since is None:
            # nothing at the path: a file created and rotated away before our next look is
            # found by the scan for rotations written since this one
            self.scan_since = looked_at
        current = self.files[-1] if self.files else None
        if current is not None and current.rotated_at is None:
            if st is None or (st.st_dev, st.st_ino) != (current.dev, current.ino):
                self._rotated(current, deleted=st is None)
                current = None
            else:
                self._check_truncation(current)
        elif current is not None:
            current = None
        if current is None:
            # the file at the path is opened before rotations are looked for: one renamed away
            # in between is then a rotation, never missed by both
            opened = self._open() if st is not None else None
            group: list[OpenFile] = []
            if opened is not None:
                held = len(self.files)
                self.files.append(opened)
                # copytruncated since it was opened (say during its checkpoint write)? Its
                # copy, if found, goes before it
                self._check_truncation(opened)
                group = [self.files.pop() for _ in range(len(self.files) - held)][::-1]
            if self.scan_since is None:
                self.files.extend(group)
            else:
                self._adopt_unknown_rotations(self.scan_since, group)
        self._at_startup = False  # a file that appears later was not there when we started
        self._absent = st is None
        self._update_behind()

    def _check_truncation(self, current: OpenFile) -> None:
        size = os.fstat(current.fd).st_size
        # shorter than what we read, or than what we saw (a half line not read yet)
        truncated = size < max(current.read_offset, current.size_seen)
        if not truncated and not current.read_offset and not current.source.head_len:
            truncated = self._unread_head_changed(current, size)
        if not truncated and current.source.head_len:
            head = current.read_head()
            truncated = not current.source.matches(current.dev, current.ino, head)
            if not truncated:
                self._checkpoint.widen_head(current.source, head)
        elif not truncated and current.read_offset:
            self._checkpoint.widen_head(current.source, current.read_head())
        copy = None
        if not truncated and not current.read_offset and not current.source.head_len:
            # nothing read yet, so no content to tell a copytruncate by: only a new copy can.
            # Empty too: written, copied and cut back to nothing between two looks (a loaded
            # machine), the copy is all that is left of it
            copy = self._unread_copy(current)
        if truncated or copy is not None:
            self._truncated(current, size, copy)
        else:
            current.size_seen = max(current.size_seen, size)
            current.source.size = max(current.source.size, size)

    def _unread_head_changed(self, current: OpenFile, size: int) -> bool:
        """Nothing read yet: true when the first bytes we saw are no longer there (the file was
        cut and written again between two looks); else remember what we see now, in the
        checkpoint too: after a restart they tell where a rotation moved the file."""
        if not size:
            return False
        head = os.pread(current.fd, SEEN_HEAD_BYTES, 0)
        seen = current.seen_head
        common = min(len(head), len(seen))
        if head[:common] != seen[:common]:
            return True
        if len(head) > len(seen):
            current.seen_head = head
            self._checkpoint.saw_head(current.source, head)
        return False

    def _truncated(
        self,
        current: OpenFile,
        size: int,
        copy: tuple[int, str, os.stat_result] | None = None,
    ) -> None:
        """The file was cut (or rewritten) in place: what we had not read is in copytruncate's
        copy if we find one (drained first, under the same source); what is in no copy is lost,
        and counted. The file itself starts over as a new source."""
        self._metrics.truncations.inc()
        source = current.source
        log.warning(
            "file_truncated",
            extra={
                "path": self.path,
                "source": source.id,
                "offset": current.read_offset,
                "size": size,
            },
        )
        if copy is None and source.head_len and current.recent:
            copy = self._find_copy(source, current)
        elif copy is None and not current.recent:
            copy = self._unread_copy(current, truncated=True)
        known_end = max(current.size_seen, source.size)
        if copy is not None:
            lost_from, reason = self._drain_copy(current, *copy), "truncated"
        else:
            self._checkpoint.finish(source, current.read_offset)
            lost_from, reason = current.read_offset, "truncated"
            compressed = self._compressed_since(current)
            if compressed is not None:
                reason = "copy_compressed"
                held = gzip_copy_size(compressed, source.head_len, source.head_sha)
                known_end = max(known_end, held or 0)
        # nothing past what we read was ever seen: whatever was written after our last look
        # and before the cut (if anything) is gone, unseen. Said, as at least nothing, unless
        # a copy holds all we read and no more (copytruncate after we caught up: nothing lost)
        unseen = (
            copy is None
            and known_end <= lost_from
            and not (source.head_len and self._copy_of_all_we_read(source, current))
        )
        report_lost(
            self._metrics, self.path, source.id, lost_from, known_end, reason, at_least=unseen
        )
        current.start_over(
            self._checkpoint.new_source(
                self.path,
                current.dev,
                current.ino,
                current.head(),
                0,
                gen=file_generation(current.fd),
            )
        )

    def _drain_copy(self, truncated: OpenFile, fd: int, path: str, st: os.stat_result) -> int:
        """copytruncate: the lines written since our last read are in the copy it made. Drain the
        copy from our offset under the same source before the truncated file starts over, as
        for a rename rotation. Returns where the copy ends."""
        entry = truncated.source
        log.info(
            "truncated_copy_found",
            extra={"path": path, "source": entry.id, "offset": truncated.read_offset},
        )
        # a restart finds it there
        self._checkpoint.relocate(entry, st.st_dev, st.st_ino, file_generation(fd))
        copy = OpenFile.at(fd, path, st, entry, truncated.read_offset, time.monotonic())
        copy.in_oversized_line = truncated.in_oversized_line
        self.files.insert(len(self.files) - 1, copy)  # before the truncated file, always last
        return st.st_size

    def _candidates(self) -> list[str]:
        try:
            with os.scandir(os.path.dirname(self.path) or ".") as items:
                return [item.path for item in items if item.is_file(follow_symlinks=False)]
        except OSError:
            return []

    def _rotations(self) -> list[Rotation]:
        name = os.path.basename(self.path)
        found = (rotation_of(name, os.path.basename(path), path) for path in self._candidates())
        return [rotation for rotation in found if rotation is not None]

    def _copies(self) -> list[str]:
        """Where a copytruncate copy of our file can be: the rotations of our path, not
        compressed. Never any other file beside it, whatever its bytes: a consumer's output
        next to its input holds the very same bytes (model chaos seed 630012239 took output.txt
        for the copy of a file cut while the producer started, and said nothing of the loss)."""
        return [r.path for r in self._rotations() if not r.compressed]

    def _copy_of_all_we_read(self, entry: SourceEntry, truncated: OpenFile) -> bool:
        found = self._find_copy(entry, truncated, longer=False)
        if found is not None:
            os.close(found[0])
        return found is not None

    def _find_copy(
        self, entry: SourceEntry, truncated: OpenFile, *, longer: bool = True
    ) -> tuple[int, str, os.stat_result] | None:
        """A rotation of our path (`_copies`), held by no tail, longer than what we read (or,
        not `longer`, exactly as long: then only whether there is one counts), with our
        fingerprint at its start and the bytes we read last just before our offset."""
        claimed = self._claimed()
        recent = truncated.recent
        for path in self._copies():
            try:
                fd, st = open_regular(path)
            except OSError:
                continue
            try:
                if (
                    (st.st_dev, st.st_ino) not in claimed
                    and (
                        st.st_size > truncated.read_offset
                        if longer
                        else st.st_size == truncated.read_offset
                    )
                    and digest(os.pread(fd, entry.head_len, 0)) == entry.head_sha
                    and bytes_before(fd, truncated.read_offset, len(recent)) == recent
                ):
                    return fd, path, st
            except OSError:
                pass
            os.close(fd)
        return None

    def _unread_copy(
        self, current: OpenFile, *, truncated: bool = False
    ) -> tuple[int, str, os.stat_result] | None:
        """A file truncated before we read any of it (say opened after a rotation, then written,
        copied and truncated before our next look) has no bytes we read to recognise its copy
        by. Its copy is a rotation of our path written since we opened the file, that no
        source is known by, that starts with our fingerprint (as far as we took one); and, if
        the truncation itself is not known, whose bytes are not where our file starts (a plain
        `copy` of it, not truncated, would be)."""
        claimed = self._claimed()
        source = current.source
        ours = os.pread(current.fd, HEAD_BYTES, 0)
        for path in self._copies():
            if not _written_since(path, current.source_at_ns):
                continue  # (looked at on every look while the file is empty: no open)
            try:
                fd, st = open_regular(path)
            except OSError:
                continue
            try:
                head = os.pread(fd, HEAD_BYTES, 0)
                if (
                    (st.st_dev, st.st_ino) not in claimed
                    and st.st_size > 0
                    and st.st_mtime_ns > current.source_at_ns
                    and digest(head[: source.head_len]) == source.head_sha
                    and (truncated or not ours.startswith(head))
                    and not self._checkpoint.knows_file(
                        fd,
                        st,
                        besides=source.id,
                        live=self._held(),
                        # it starts with the bytes we saw: a shipped rotation it was written
                        # over (or whose inode number it reused) is not it (seed 610010059)
                        grown_is_other=truncated
                        and bool(current.seen_head)
                        and head.startswith(current.seen_head),
                    )
                    and (truncated or self._copy_not_successor(current, st))
                ):
                    return fd, path, st
            except OSError:
                pass
            os.close(fd)
        return None

    def _copy_not_successor(self, current: OpenFile, st: os.stat_result) -> bool:
        """A new rotation of our path is a copy of our file, not our successor renamed away,
        when our path still names our file (the successor was never at the path), or when it
        was last written before our file was (a copy is made before the truncation and the
        writes after it; a successor is written after our file stopped being written)."""
        return self._still_at_path(current) or st.st_mtime_ns < os.fstat(current.fd).st_mtime_ns

    def _still_at_path(self, current: OpenFile) -> bool:
        """Our path still names the file: a new rotation of it, written since we opened the
        file, cannot then be the file itself renamed, only a copy."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (current.dev, current.ino)

    def _rotated(self, f: OpenFile, *, deleted: bool) -> None:
        """The path no longer names the file: drain it (within the grace), and look for files
        created and rotated away between our last look and this one."""
        f.rotated_at = time.monotonic()
        self._checkpoint.mark_rotated(f.source)
        self._metrics.rotations.inc()
        log.info(
            "file_rotated",
            extra={
                "path": self.path,
                "source": f.source.id,
                "offset": f.read_offset,
                "deleted": deleted,
            },
        )
        self.scan_since = min(self.scan_since or f.opened_at_ns, f.opened_at_ns)

    def _adopt_unknown_rotations(self, since_ns: int, group: list[OpenFile]) -> None:
        """Rotations of our path written after `since_ns` that no source knows: files created
        and rotated away before we could open them (between two looks, or while we were down).
        Drained oldest first (mtime, then the rotation's own order), after what we hold and
        before the file just opened at the path (last in `group`, after a copy of it if one was
        found), unless that was itself rotated away meanwhile (its checkpoint write may take a
        while): then the group takes its place among them by age, and the next look opens the
        file now at the path."""
        claimed = self._claimed() | {(f.dev, f.ino) for f in group}
        live = self._held() | {f.source.id: f.fd for f in group}
        current = group[-1] if group else None
        found = []
        for rotation in self._rotations():
            try:
                st = os.stat(rotation.path)
            except OSError:
                continue
            if (
                not rotation.compressed
                and st.st_mtime_ns > since_ns
                and (st.st_dev, st.st_ino) not in claimed
            ):
                found.append((st.st_mtime_ns, rotation.age_key, rotation.path))
        adopted: list[tuple[int, tuple[int, str], list[OpenFile]]] = []
        for _, age_key, path in sorted(found):
            try:
                fd, st = open_regular(path)
            except OSError:
                continue
            # (at start: written after the checkpoint, the files we scan for)
            known = self._checkpoint.knows_file(
                fd, st, since_checkpoint=self._at_startup, live=live
            )
            if (st.st_dev, st.st_ino) in claimed or known:
                os.close(fd)
                continue
            head = os.pread(fd, HEAD_BYTES, 0)
            entry = self._checkpoint.new_source(
                self.path, st.st_dev, st.st_ino, head, 0, gen=file_generation(fd)
            )
            log.info("rotation_never_opened", extra={"path": path, "source": entry.id})
            self._checkpoint.mark_rotated(entry)
            opened = OpenFile.at(fd, path, st, entry, 0, time.monotonic())
            adopted.append((st.st_mtime_ns, age_key, [opened]))
            # a later one starting with its (maybe short) fingerprint is no copy of it unless it
            # agrees with it
            live[entry.id] = fd
        if current is not None and not self._still_at_path(current):
            self._rotated(current, deleted=False)
            adopted.append((os.fstat(current.fd).st_mtime_ns, (0, ""), group))
            group = []
        if adopted:
            adopted += self._untouched_rotations()
        appended = [f for *_, files in sorted(adopted, key=lambda item: item[:2]) for f in files]
        if group:
            appended += group
            self.scan_since = None
        if adopted:
            # the file at the path got its source before the older rotations found now: a
            # restart resumes unfinished sources in sequence order, which must be this one
            self._checkpoint.renumber([f.source for f in appended])
        self.files.extend(appended)

    def _untouched_rotations(self) -> list[tuple[int, tuple[int, str], list[OpenFile]]]:
        """The rotated files at the end of our queue nothing was read of yet, taken off it to be
        ordered again with the rotations just found: a scan that missed one (the storm on a
        loaded machine, 2026-12-06: .38 found a look after .39 was queued) must not ship it
        after a newer one. With one writer, the order of last writes is the order of the
        lines."""
        untouched: list[tuple[int, tuple[int, str], list[OpenFile]]] = []
        while (
            self.files and self.files[-1].rotated_at is not None and not self.files[-1].read_offset
        ):
            f = self.files.pop()
            try:
                written = os.fstat(f.fd).st_mtime_ns
            except OSError:
                self.files.append(f)
                break
            untouched.append((written, (0, ""), [f]))
        return untouched

    def _compressed_since(self, current: OpenFile) -> str | None:
        """A compressed rotation of our path written since we opened the file: where the bytes
        we had not read most likely went (copytruncate, then compress without delaycompress)."""
        for rotation in self._rotations():
            try:
                if rotation.compressed and (
                    os.stat(rotation.path).st_mtime_ns > current.source_at_ns
                ):
                    return rotation.path
            except OSError:
                continue
        return None

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
            # an unterminated end ships when the grace is over, or at once when the writer has
            # moved on to the successor: waiting would put it after the successor's first lines
            # (torn and out of order); a late completion by another writer is a late write
            batch = self._read_from(f, final=retiring)
            if batch is None and self.files[0] is not f:
                continue  # a copy of what it held went before it (_replaced_before_read)
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
        return f.gone or time.monotonic() - f.rotated_at >= self._options.rotation_grace

    def _read_from(self, f: OpenFile, *, final: bool) -> Batch | None:
        if f.gone:
            return None
        now = time.monotonic()
        data = os.pread(f.fd, self._options.max_bytes, f.read_offset)
        previous, growing = f.looked_at, f.growing
        if len(data) < self._options.max_bytes:
            f.looked_at, f.growing = now, bool(data)
        if not data:
            return None
        if not f.intact():
            # checked after the read: a rewrite that came before it shows here, so these
            # bytes are never shipped under the old source
            self._rewritten(f)
            return None
        if not self._head_intact(f) or self._shorter_than_seen(f, data):
            rotated = f.rotated_at is not None
            self._replaced_before_read(f)
            # a rotated file read on at once under its new source (returning nothing would
            # retire it) unless its copy went before it; at our path, the copy (if found)
            # comes first, on the next read
            again = rotated and self.files[0] is f and self._head_intact(f) and not f.gone
            return self._read_from(f, final=final) if again else None
        f.size_seen = max(f.size_seen, f.read_offset + len(data))
        f.last_growth = time.monotonic()
        cut = cut_batch(
            data,
            max_bytes=self._options.max_bytes,
            max_lines=self._options.max_lines,
            final=final and len(data) < self._options.max_bytes,
        )
        if not cut.length:
            return None
        if previous:  # the first read of a file finds bytes of unknown age
            self._observe_wait(f, now, previous, growing=growing)
        return self._batch(f, data, cut.length, cut.lines, cut.oversized)

    def _shorter_than_seen(self, f: OpenFile, data: bytes) -> bool:
        """Nothing read yet, and the file ends before the size a look saw: cut since, and maybe
        written again with the same first bytes (a rewrite sharing a banner, model chaos seed
        580007059): these bytes are not the ones seen."""
        return not f.read_offset and len(data) < self._options.max_bytes and len(data) < f.size_seen

    @staticmethod
    def _head_intact(f: OpenFile) -> bool:
        """Nothing read yet: the file still starts with its fingerprint (or the first bytes a look
        saw). A file cut and written again between the look that fingerprinted it and this
        read (the rotation storm on a loaded machine: copytruncate and the next lines in
        between) would otherwise have its new bytes shipped under the old source, the old ones'
        size taken for seen, and the copy never looked for."""
        if f.read_offset:  # after a read, `intact` checks the bytes before the offset
            return True
        length = f.source.head_len
        if not length:
            # no fingerprint yet: what a look saw of its first bytes stands for one
            head = os.pread(f.fd, len(f.seen_head), 0)
            return f.seen_head.startswith(head) or head.startswith(f.seen_head)
        return digest(os.pread(f.fd, length, 0)) == f.source.head_sha

    def _replaced_before_read(self, f: OpenFile) -> None:
        """The file no longer starts as it did when we took it, and nothing of it was read:
        cut and written again (copytruncate, then new lines) before our first read. At our
        path, that is a truncation: its copy, if found, is read first. Rotated away since, its
        old bytes are in the copy, read first under the old source (if a scan has not queued
        it already), or gone; what it holds now is a new source in its place."""
        if f.rotated_at is None:
            self._truncated(f, os.fstat(f.fd).st_size)
            return
        old = f.source
        copy = self._copy_of_replaced(old) if old.head_len else None
        if copy is not None:
            fd, path, st = copy
            log.info("truncated_copy_found", extra={"path": path, "source": old.id, "offset": 0})
            self._checkpoint.relocate(old, st.st_dev, st.st_ino, file_generation(fd))
            opened = OpenFile.at(fd, path, st, old, 0, time.monotonic())
            self.files.insert(self.files.index(f), opened)
        else:
            self._checkpoint.finish(old, 0)
            if old.head_len and not self._fingerprint_found(old):
                report_lost(
                    self._metrics,
                    f.path,
                    old.id,
                    0,
                    max(f.size_seen, old.size),
                    "truncated",
                    at_least=True,
                )
        f.start_over(
            self._checkpoint.new_source(
                f.path, f.dev, f.ino, f.head(), 0, gen=file_generation(f.fd)
            )
        )
        self._checkpoint.mark_rotated(f.source)
        self._checkpoint.renumber([g.source for g in self.files])
        log.info(
            "source_replaced",
            extra={"path": f.path, "source": f.source.id, "replaced": old.id},
        )

    def _copy_of_replaced(self, entry: SourceEntry) -> Opened | None:
        """A file no tail holds that starts with the source's fingerprint and that no other
        source knows: the copy a copytruncate made of what the source's file held."""
        claimed = self._claimed()
        live = self._held()

        def ours(fd: int, _: int) -> bool:
            st = os.fstat(fd)
            return (
                (st.st_dev, st.st_ino) not in claimed
                and digest(os.pread(fd, entry.head_len, 0)) == entry.head_sha
                and not self._checkpoint.knows_file(fd, st, besides=entry.id, live=live)
            )

        for path in self._copies():
            found = open_if(path, ours)
            if found is not None:
                return found
        return None

    def _fingerprint_found(self, entry: SourceEntry) -> bool:
        """Some rotation of our path (`_copies`) starts with the source's fingerprint."""
        return any(
            open_if(
                path,
                lambda fd, _: digest(os.pread(fd, entry.head_len, 0)) == entry.head_sha,
                close=True,
            )
            for path in self._copies()
        )

    def _observe_wait(self, f: OpenFile, now: float, previous: float, *, growing: bool) -> None:
        """The change → read stage of this batch (one fstat only after a quiet look)."""
        mtime_ns = now_file_ns = 0
        if not growing:
            mtime_ns, now_file_ns = os.fstat(f.fd).st_mtime_ns, file_clock_ns()
        self._metrics.stage["change_to_read"].observe(
            change_to_read(
                now, previous, growing=growing, now_file_ns=now_file_ns, mtime_ns=mtime_ns
            )
        )

    def _rewritten(self, f: OpenFile) -> None:
        """Other bytes before the read offset than we read there: the file was rewritten in
        place. The current file starts over as a new source; a rotated one is done, and what
        we had not read of it is lost."""
        if f.rotated_at is None:
            self._truncated(f, os.fstat(f.fd).st_size)
            return
        known_end = max(f.size_seen, f.source.size)
        report_lost(self._metrics, f.path, f.source.id, f.read_offset, known_end, "truncated")
        f.gone = True

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
        self._checkpoint.read_up_to(f.source, f.read_offset, f.recent)
        if start < HEAD_BYTES and f.source.head_len < HEAD_BYTES:
            self._checkpoint.widen_head(f.source, self._head_read(f, start, body))
        self._metrics.lines_read.inc(lines)
        self._metrics.bytes_read.inc(length)
        return Batch(f.source.id, f.path, start, start + length, lines, now_ns(), body)

    @staticmethod
    def _head_read(f: OpenFile, start: int, body: bytes) -> bytes:
        """The file's first bytes as far as we have read them, to fingerprint: taken from what
        we read, not read again (a copytruncate right after our read would leave nothing to
        read again, and the copy would go unrecognised). Past a first batch, the bytes before
        it are read again, and used only if the file still holds our batch after them."""
        if start == 0:
            return body[:HEAD_BYTES]
        head = f.read_head()
        if head[start:] != body[: len(head) - start]:
            return b""  # cut or rewritten meanwhile: the next look tells
        return head

    def _retire(self, f: OpenFile) -> None:
        log.info(
            "file_finished", extra={"path": f.path, "source": f.source.id, "offset": f.read_offset}
        )
        os.close(f.fd)
        self._checkpoint.finish(f.source, f.read_offset)

    def deleted_unread(self) -> list[OpenFile]:
        """Held files whose name is gone (deleted) with bytes we have not read: once we close
        them, nobody can read those bytes any more."""
        found = []
        for f in (*self.files, *self.late):
            try:
                st = os.fstat(f.fd)
            except OSError:
                continue
            if not f.gone and st.st_nlink == 0 and st.st_size > f.read_offset:
                found.append(f)
        return found

    def report_deleted_unread(self) -> None:
        """At stop, what deleted files still hold unread is lost: counted and logged, once."""
        for f in self.deleted_unread():
            size = os.fstat(f.fd).st_size
            report_lost(self._metrics, f.path, f.source.id, f.read_offset, size, "deleted")
            self._checkpoint.finish(f.source, f.read_offset)

    def close(self) -> None:
        while self.files:
            os.close(self.files.popleft().fd)
        while self.late:
            os.close(self.late.pop().fd)
