"""The output file and its state file: append, fsync, exactly-once bookkeeping, recovery, rotation.
Order of durability: data, then state (size + written ranges), then the caller acknowledges."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from consumer.outputcopy import TAIL_BYTES, Copy, Stream, Tail, find_copy
from consumer.ranges import RangeSet
from consumer.statefile import StateFile, read_record
from consumer.staterecord import RecordEncoder
from logship.wire import Delivered, count_newlines

log = logging.getLogger("logship.consumer.sink")

# a rotated output under these names is compressed: never ours to cut
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".z", ".Z")

STATE_VERSION = 1
MAX_SOURCES = 10_000
IOV_MAX = 1024
ROTATION_REASONS = ("rename", "delete", "truncate")
# why acknowledged output bytes may be in no file: cut with a copy beside the output that could
# not be checked (compressed at once, or older than the tail held in memory), or cut with no copy
# at all (`: > output.txt`, a copy put elsewhere: discarded on purpose, or lost)
LOSS_REASONS = ("copy_unverified", "truncated")
# a file deleted under every rewrite of one group: stop rewriting and record it (someone keeps
# deleting the output; what they delete is theirs to lose)
MAX_REWRITES = 3
CREATE_GRACE = 0.1


class StateError(RuntimeError):
    """The state file exists but cannot be trusted; refusing to guess what was written."""


@dataclass
class Plan:
    """What one group of messages adds to the output, before it is written."""

    pieces: list[memoryview] = field(default_factory=list)
    bytes: int = 0
    lines: int = 0
    duplicates: int = 0
    duplicate_bytes: int = 0
    out_of_order: int = 0
    touched: dict[str, list[tuple[int, int]] | None] = field(default_factory=dict)
    # for written receipts, only when asked (see `plan`): per piece written, (receipts-to id,
    # source, start, end, offset of its first byte in the plan); per range already written
    # (receipts-to id, source, start, end)
    spans: list[tuple[str, str, int, int, int]] | None = None
    repeats: list[tuple[str, str, int, int]] | None = None
    # leading bytes of the plan a copytruncate's copy took while it was written (`commit`)
    skipped: int = 0


def recorded_size(output: Path) -> int:
    """Bytes of `output` the consumer has made durable and recorded (0 when unknown): what a
    reader may trust, since the state is written after the data and before the ack."""
    try:
        found = read_record(output.with_name(output.name + ".state"))
        return int(json.loads(found[2])["size"]) if found is not None else 0
    except (ValueError, KeyError, TypeError, OSError):
        return 0


@dataclass
class SavedState:
    """The state file's record, checked: output size, identity of the output file it describes
    (None in records from before rotation was followed), per source the written ranges."""

    size: int
    ino: int | None
    sources: dict[str, RangeSet]
    touched: dict[str, float]
    archive: tuple[str, int] | None = None  # (stream, last offset written) of a rebuild


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_ranges(value: object) -> RangeSet:
    if not isinstance(value, list):
        raise ValueError("a source's ranges are not a list")
    ranges = RangeSet()
    for pair in value:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(_is_int(x) for x in pair)
            or not 0 <= pair[0] < pair[1]
        ):
            raise ValueError(f"range {json.dumps(pair)[:40]} is not [start, end) offsets")
        ranges.add(pair[0], pair[1])
    return ranges


def parse_state(raw: bytes) -> SavedState:
    """Check every field of a state record; ValueError says which one is wrong."""
    state = json.loads(raw)
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError("unknown format")
    size, ino = state.get("size"), state.get("ino")
    if not _is_int(size) or size < 0:
        raise ValueError("size is not a byte count")
    if ino is not None and not _is_int(ino):
        raise ValueError("ino is not an inode number")
    sources, touched = state.get("sources"), state.get("touched", {})
    if not isinstance(sources, dict) or not isinstance(touched, dict):
        raise ValueError("sources or touched is not a mapping")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in touched.values()):
        raise ValueError("touched holds a value that is not a time")
    return SavedState(
        size=size,
        ino=ino,
        sources={str(k): _parse_ranges(v) for k, v in sources.items()},
        touched={str(k): float(v) for k, v in touched.items()},
        archive=_parse_archive(state.get("archive")),
    )


def _parse_archive(value: object) -> tuple[str, int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("stream"), str)
        or not _is_int(value.get("offset"))
        or value["offset"] < 0
    ):
        raise ValueError("archive is not a stream name and an offset")
    return value["stream"], value["offset"]


def _drop(pieces: list[memoryview], n: int) -> list[memoryview]:
    """`pieces` without their first `n` bytes."""
    kept = list(pieces)
    while n and kept:
        if n >= len(kept[0]):
            n -= len(kept.pop(0))
        else:
            kept[0], n = kept[0][n:], 0
    return kept


class Sink:
    """Appends to `path`; keeps `<path>.state` with the output size and, per source, the byte
    ranges already written. On open it cuts any tail the state does not account for: those bytes
    were never acknowledged, so the broker delivers them again.

    The output may be rotated under it (`follow`, also run before every write): renamed or
    deleted, it lets go of the old file and appends to a new one at the path; truncated, it
    appends from the new end, after putting back what a copytruncate's copy missed (found beside
    the output and checked against the last `tail_bytes` written, held in memory); what it cannot
    put back is logged and counted (`on_lost`). Never zero-fills. Which source ranges were
    written is a fact about the sources, kept across rotations; `size` is the size of the
    current output file."""

    def __init__(
        self,
        path: Path,
        *,
        fsync: bool,
        on_rotated: Callable[[str], None] | None = None,
        on_lost: Callable[[str, int], None] | None = None,
        on_repaired: Callable[[int], None] | None = None,
        tail_bytes: int = TAIL_BYTES,
    ) -> None:
        self.path = path
        self.state_path = path.with_name(path.name + ".state")
        self._fsync = fsync
        self._on_rotated = on_rotated
        self._on_lost = on_lost
        self._on_repaired = on_repaired
        self._tail = Tail(tail_bytes)  # invariant: ends at `size`
        self._since = time.time()  # when the current file's content began
        self._fd = -1
        self._ino = -1
        self._state = StateFile(self.state_path, durable=fsync)
        self._encoder = RecordEncoder()
        # seconds the last commit spent writing its state record (the rest of its fsync time is
        # the output's fdatasync): the consumer's synced_to_recorded stage
        self.last_record_s = 0.0
        self.size = 0
        self.sources: dict[str, RangeSet] = {}
        self._touched_at: dict[str, float] = {}
        # where a rebuild from the archive stands: (stream, offset of the last message whose
        # bytes are in the output), recorded in the same state write as those bytes
        self.archive_position: tuple[str, int] | None = None

    def open(self) -> None:
        state = self._load_state()
        self._fd = self._open_output()
        held = os.fstat(self._fd)
        self._ino = held.st_ino
        actual = held.st_size
        if state is None:
            self.size = actual
            self._tail.reset(actual)
            if actual:
                log.warning("output_without_state", extra={"path": str(self.path), "size": actual})
            self._save_state()
            return
        self.sources, self._touched_at = state.sources, state.touched
        self.archive_position = state.archive
        if state.ino is not None and state.ino != held.st_ino:
            self._trim_moved_tail(state)
        if actual > state.size:
            # also when the inode changed (a copy, a restore): the tail is still unrecorded
            log.warning(
                "output_tail_discarded",
                extra={"path": str(self.path), "bytes": actual - state.size},
            )
            os.ftruncate(self._fd, state.size)
            os.fsync(self._fd)
        elif actual < state.size:
            # rotated while stopped (or before the rotation was recorded): start from the new
            # end; the ranges still say what was written, so nothing comes twice
            moved = state.ino is not None and state.ino != held.st_ino
            self._rotated("rename" if moved else "truncate", state.size, actual, at_start=True)
        self.size = min(actual, state.size)
        self._tail.reset(self.size)
        if actual != state.size or state.ino != held.st_ino:
            self._save_state()

    def _trim_moved_tail(self, state: SavedState) -> None:
        """The file the state describes was renamed away while we were stopped (logrotate
        while a consumer restarted, model chaos seed 560005006): what it holds past the
        recorded size was written but neither recorded nor acknowledged, and comes again; it is
        cut there, as it would be at the path, or it would be in two files."""
        try:
            moved = self._moved_output(state)
            if moved is None:
                return
            path, size = moved
            if size <= state.size:
                return
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, state.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            log.warning(
                "output_moved_tail_unchecked",
                extra={"path": str(self.path.parent), "error": error.strerror or str(error)},
            )
            return
        log.warning("output_tail_discarded", extra={"path": path, "bytes": size - state.size})

    def _moved_output(self, state: SavedState) -> tuple[str, int] | None:
        """(path, size) of the file the state describes, if renamed to a rotation of the
        output's name (not a compressed one) in its directory, on the recorded inode."""
        name = self.path.name
        with os.scandir(self.path.parent) as items:
            for item in items:
                if (
                    item.inode() == state.ino
                    and item.name.startswith(name)
                    and item.name[len(name) : len(name) + 1] in (".", "-", "_")
                    and not item.name.endswith(COMPRESSED_SUFFIXES)
                    and item.path != str(self.state_path)
                    and item.is_file(follow_symlinks=False)
                ):
                    return item.path, item.stat(follow_symlinks=False).st_size
        return None

    def _open_output(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        if self._fsync:  # the file may be new: make its name as durable as what goes in it
            try:
                dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            except OSError:
                os.close(fd)
                raise
        return fd

    def _load_state(self) -> SavedState | None:
        try:
            raw = self._state.load()
            return None if raw is None else parse_state(raw)
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            raise StateError(
                f"state file {self.state_path} is unreadable ({error}); "
                "move it away to start over (duplicates become possible)"
            ) from None
        except OSError as error:  # a directory there, say: the error itself names no path
            raise StateError(
                f"state file {self.state_path} cannot be read ({error.strerror or error}); "
                "move it away, or choose another output"
            ) from None

    def follow(self) -> str | None:
        """Check that the path still names the file held open, at its recorded size, and follow
        it if not: the reason ("rename", "delete", "truncate") or None. Cheap (two stats): run
        on a timer, on SIGHUP and before every write. Raises OSError if the new file cannot be
        opened (the old one is then kept)."""
        return self._follow(None)

    def _follow(self, pending: Plan | None) -> str | None:
        """`pending`: a plan whose ranges are already claimed in memory but not written yet;
        a state recorded now must not include them."""
        if self._state.follow_path():
            log.error("state_file_replaced", extra={"path": str(self.state_path)})
            self._save_state(pending=pending)
        held = os.fstat(self._fd)
        named = self._stat_path()
        if named is None and held.st_nlink:
            named = self._await_successor()
        old = self.size
        if named is None or (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            reason = "delete" if held.st_nlink == 0 else "rename"
            fd = self._open_output()
            try:
                if self._fsync and reason == "rename":
                    os.fsync(self._fd)  # acknowledged bytes are synced already: this is the rest
            except OSError:
                os.close(fd)
                raise
            os.close(self._fd)
            self._fd = fd
            now = os.fstat(fd)
            self._ino, self.size = now.st_ino, now.st_size
            self._tail.reset(self.size)
            self._since = time.time()
        elif held.st_size < self.size:
            reason = "truncate"
            self._cut(held.st_size)
        elif held.st_size > self.size:
            # a rollback's truncate failed: appending (O_APPEND) after its leftovers would put
            # bytes where the state says others are
            os.ftruncate(self._fd, self.size)
            return None
        else:
            return None
        # recorded before anything is written at the new base: a crash before this record
        # leaves the old size, larger than a fresh file (taken as a rotation at start); without
        # it, bytes written here and never recorded could not be told from acknowledged ones
        self._save_state(pending=pending)
        self._rotated(reason, old, self.size)
        return reason

    def _stat_path(self) -> os.stat_result | None:
        try:
            return os.stat(self.path)
        except FileNotFoundError:
            return None

    def _await_successor(self) -> os.stat_result | None:
        """Renamed away and nothing at the path yet: logrotate's `create` is about to put a
        file there. Creating it first would make logrotate move ours aside (to a `.backup`) and
        report an error; so wait a moment for its file (once per rotation; blocks the loop for
        at most CREATE_GRACE)."""
        deadline = time.monotonic() + CREATE_GRACE
        while time.monotonic() < deadline:
            time.sleep(0.002)
            named = self._stat_path()
            if named is not None:
                return named
        return None

    def _cut(self, size: int, extra: bytes = b"") -> int:
        """The output was found cut to `size` bytes. It held the tail, then `extra` (what reached
        it of a write the cut interrupted, not recorded yet). If a copy beside it holds the first
        bytes and the tail holds the rest, the rest is appended now, before anything else: the
        copy, then the output, hold everything once. Returns how many leading bytes of `extra`
        are dealt with (in the copy; or, with no copy, gone with the cut file like the bytes
        before them, and counted with them): the caller writes the rest. Raises OSError if the
        repair cannot be written (nothing of it is then left in the file)."""
        stream = Stream(self._tail, extra)
        old = self.size
        found: Copy | None = None
        if size == 0 and stream.end > 0:
            with contextlib.suppress(LookupError):
                found = find_copy(self.path, self._identities(), stream, self._since)
        if found is None or not found.verified:
            self._lost(found, stream.end, size)
            self.size = size
            self._tail.reset(size)
            self._since = time.time()
            return len(extra)
        repair = stream.get(found.size, max(found.size, old))
        try:
            self._write_all([memoryview(repair)])
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)
            raise
        covered = max(0, found.size - old)
        self._tail.append(extra[:covered])
        self.size = len(repair)
        self._tail.rebase(self.size)
        self._since = time.time()
        log.log(
            logging.WARNING if repair else logging.INFO,
            "output_copytruncate_repaired",
            extra={
                "path": str(self.path),
                "copy": str(found.path),
                "copy_size": found.size,
                "old_size": old + covered,
                "bytes": len(repair),
            },
        )
        if self._on_repaired is not None:
            self._on_repaired(len(repair))
        return covered

    def _lost(self, found: Copy | None, old: int, size: int) -> None:
        """Bytes [copy size or `size`, `old`) may be in no file: say so, once."""
        reason = "truncated" if found is None else "copy_unverified"
        lost = max(0, old - (size if found is None else found.size))
        fields: dict[str, object] = {
            "path": str(self.path),
            "reason": reason,
            "old_size": old,
            "size": size,
            "bytes": lost,
        }
        if found is not None:
            fields |= {"copy": str(found.path), "copy_size": found.size}
            fields["compressed"] = found.compressed
        log.log(logging.WARNING if lost else logging.INFO, "output_bytes_unverified", extra=fields)
        if self._on_lost is not None and lost:
            self._on_lost(reason, lost)

    def _identities(self) -> set[tuple[int, int]]:
        """(dev, ino) of the files that are never the copy: the output itself, its state."""
        held = os.fstat(self._fd)
        found = {(held.st_dev, held.st_ino)}
        with contextlib.suppress(OSError):
            state = os.stat(self.state_path)
            found.add((state.st_dev, state.st_ino))
        return found

    def _cut_under_write(self, plan: Plan, skip: int, size: int) -> int:
        """Cut while the plan (but its first `skip` bytes) was being written: what of it
        reached the new file is unrecorded and unacknowledged, so it goes (and is written again);
        then as `_cut`, with what reached the old file as the end of what it held."""
        extra = b"".join(_drop(plan.pieces, skip))
        base = max(0, size - len(extra))  # logrotate cuts to 0; what was there before ours
        landed_old = len(extra) - (size - base)
        os.ftruncate(self._fd, base)
        old = self.size
        covered = self._cut(base, extra[:landed_old])
        self._save_state(pending=plan)
        self._rotated("truncate", old, self.size)
        return covered

    def _rotated(self, reason: str, old: int, new: int, *, at_start: bool = False) -> None:
        log.warning(
            "output_rotated",
            extra={
                "path": str(self.path),
                "reason": reason,
                "old_size": old,
                "size": new,
                "while_stopped": at_start,
            },
        )
        if self._on_rotated is not None:
            self._on_rotated(reason)

    def has_byte(self, source: str, offset: int) -> bool:
        """Whether byte `offset` of `source` is in the output already."""
        ranges = self.sources.get(source)
        return ranges is not None and not ranges.missing(offset, offset + 1)

    def plan(
        self, messages: Sequence[Delivered], receipts_to: Sequence[str | None] | None = None
    ) -> Plan:
        """Decide which bytes of these messages are new. Ranges are updated at once (so a group
        that holds one batch twice writes it once); `rollback` undoes that if the write fails.
        `receipts_to`: per message, the producer id that wants a written receipt (or None); the
        plan's spans and repeats then say which bytes went where (see `written_at`)."""
        plan = Plan()
        if receipts_to is not None:
            plan.spans, plan.repeats = [], []
        for index, message in enumerate(messages):
            if message.source is None:
                plan.pieces.append(memoryview(message.body))
                plan.bytes += len(message.body)
                plan.lines += message.lines
                continue
            ranges = self.sources.get(message.source)
            if ranges is None:
                ranges = self.sources[message.source] = RangeSet()
            if message.source not in plan.touched:
                plan.touched[message.source] = ranges.ranges() if len(ranges) else None
            if message.start > 0 and ranges.missing(message.start - 1, message.start):
                plan.out_of_order += 1
            gaps = ranges.missing(message.start, message.end)
            written = 0
            view = memoryview(message.body)
            to = receipts_to[index] if receipts_to is not None else None
            if to is not None:
                self._note_receipt(plan, to, message, gaps)
            for start, end in gaps:
                piece = view[start - message.start : end - message.start]
                plan.pieces.append(piece)
                whole = (start, end) == (message.start, message.end)
                plan.lines += message.lines if whole else count_newlines(piece.tobytes())
                written += end - start
                ranges.add(start, end)
            plan.bytes += written
            if written < message.end - message.start:
                plan.duplicates += 1
                plan.duplicate_bytes += message.end - message.start - written
        return plan

    @staticmethod
    def _note_receipt(plan: Plan, to: str, message: Delivered, gaps: list[tuple[int, int]]) -> None:
        """Where the message's new bytes go in the plan, and which were written before."""
        assert plan.spans is not None and plan.repeats is not None and message.source is not None
        offset, position = plan.bytes, message.start
        for start, end in gaps:
            if start > position:
                plan.repeats.append((to, message.source, position, start))
            plan.spans.append((to, message.source, start, end, offset))
            offset += end - start
            position = end
        if position < message.end:
            plan.repeats.append((to, message.source, position, message.end))

    def written_at(self, plan: Plan) -> int:
        """After a successful `commit`: where the plan's first byte is in the output now (a
        negative or small value when a copytruncate's copy took its first `plan.skipped`
        bytes)."""
        return self.size - plan.bytes

    def rollback(self, plan: Plan) -> None:
        """Forget the ranges a failed write claimed; cut whatever part of it reached the file;
        record the old state again, since the new record may have reached the disk before its
        fdatasync failed (a restart would then take those bytes as written)."""
        for source, before in plan.touched.items():
            if before is None:
                self.sources.pop(source, None)
            else:
                self.sources[source] = RangeSet(before)
        try:
            if os.fstat(self._fd).st_size > self.size:  # never extend: that would zero-fill
                os.ftruncate(self._fd, self.size)
            self._save_state()
        except OSError as error:
            log.error("output_rollback_failed", extra={"path": str(self.path), "error": str(error)})

    def commit(self, plan: Plan, archive_position: tuple[str, int] | None = None) -> float:
        """Follow a rotated output, append the pieces, fsync (by policy), then record the new
        size and ranges (and `archive_position`, the rebuild's place in the archive, in the
        same write). Returns the seconds spent in fsync. Raises OSError (disk full, I/O
        error): call rollback then."""
        fsync_s = self.last_record_s = 0.0
        skip = 0  # leading bytes of the plan a copytruncate's copy took while it was written
        for attempt in range(MAX_REWRITES + 1):
            self._follow(plan)
            pieces = _drop(plan.pieces, skip)
            for i in range(0, len(pieces), IOV_MAX):
                self._write_all(pieces[i : i + IOV_MAX])
            if self._fsync and plan.bytes:
                started = time.monotonic()
                os.fdatasync(self._fd)  # data and the new size: all a reader needs after a crash
                fsync_s += time.monotonic() - started
            if not plan.bytes or attempt == MAX_REWRITES:
                break
            held = os.fstat(self._fd)
            if not held.st_nlink:
                # deleted under this write: the bytes may never have been in any file anyone
                # saw; write them again into the new file (nobody sees a duplicate in a
                # deleted one)
                log.warning("output_deleted_under_write", extra={"path": str(self.path)})
                continue
            if held.st_size >= self.size + plan.bytes - skip:
                break
            # cut (copytruncate) between the check and the write, or during it
            skip += self._cut_under_write(plan, skip, held.st_size)
        if plan.bytes or plan.touched or archive_position is not None:
            now = time.time()
            for source in plan.touched:
                self._touched_at[source] = now
            started = time.monotonic()
            previous = self.archive_position
            self.archive_position = archive_position or previous
            try:
                self._save_state(self.size + plan.bytes - skip)
            except BaseException:
                self.archive_position = previous  # a rollback records the old place
                raise
            self.size += plan.bytes - skip
            plan.skipped = skip
            for piece in _drop(plan.pieces, skip):
                self._tail.append(piece)
            self.last_record_s = time.monotonic() - started
            fsync_s += self.last_record_s
        return fsync_s

    def _write_all(self, pieces: list[memoryview]) -> None:
        while pieces:
            written = os.writev(self._fd, pieces)
            while pieces and written >= len(pieces[0]):
                written -= len(pieces[0])
                pieces = pieces[1:]
            if pieces and written:
                pieces = [pieces[0][written:], *pieces[1:]]

    def _save_state(self, size: int | None = None, *, pending: Plan | None = None) -> None:
        """Record size, identity and every source's ranges; `pending`: a plan claimed in memory
        but not written, whose sources are recorded as they were before it."""
        if pending is None and len(self.sources) > MAX_SOURCES:
            oldest = sorted(self.sources, key=lambda s: self._touched_at.get(s, 0.0))
            for source in oldest[: len(self.sources) - MAX_SOURCES]:
                del self.sources[source]
                self._touched_at.pop(source, None)
        head = {
            "version": STATE_VERSION,
            "size": self.size if size is None else size,
            "ino": self._ino,
        }
        tail = {}
        if self.archive_position is not None:
            stream, offset = self.archive_position
            tail["archive"] = {"stream": stream, "offset": offset}
        instead = pending.touched if pending is not None else None
        self._state.write(
            self._encoder.encode(head, self.sources, self._touched_at, tail, instead=instead)
        )

    def close(self) -> None:
        if self._fd >= 0:
            if self._fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._state.close()
