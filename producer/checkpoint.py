"""The checkpoint: which file is which source (identity) and how far each is confirmed (offset).
It advances only when every earlier batch of that source is confirmed, and it is written
atomically: temp file, fsync, rename."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from producer.identity import BEFORE_BYTES, HEAD_BYTES, digest, file_generation

log = logging.getLogger("logship.producer.checkpoint")

CHECKPOINT_VERSION = 1
FINISHED_RETENTION_S = 24 * 3600
MAX_ENTRIES = 10_000


class CheckpointError(RuntimeError):
    """The checkpoint file exists but cannot be trusted; we refuse to guess offsets."""


head_digest = digest


@dataclass
class SourceEntry:
    """One source: a file's life between creation (or truncation) and its end. Its id is random,
    so inode reuse never makes a new file look like an old one; dev, ino and a digest of the first
    bytes find it again after a restart."""

    id: str
    path: str
    dev: int
    ino: int
    head_len: int
    head_sha: str
    offset: int
    seq: int
    finished: bool = False
    updated: float = field(default_factory=time.time)
    # where reading it ended; None in checkpoints written before this field existed
    end: int | None = None
    # bytes [check_end - check_len, check_end) of the source hash to check_sha: a file at this
    # identity that holds other bytes there was rewritten (0 and "" in older checkpoints)
    check_end: int = 0
    check_len: int = 0
    check_sha: str = ""
    # the largest size the file was seen at: what a loss of it could have cost
    size: int = 0
    # every batch of it published so far ends at or before sent_end, and the file held bytes
    # [sent_end - sent_len, sent_end) hashing to sent_sha then: the confirmed offset (and its
    # check) may lag behind what the consumer already has, and a file rewritten while we were
    # down that keeps the bytes before the offset but not these is not this source (its bytes
    # under our ranges would be dropped downstream as duplicates)
    sent_end: int = 0
    sent_len: int = 0
    sent_sha: str = ""
    # no fingerprint yet (empty when it began, nothing read): the first bytes seen in it since
    # (a half line), which tell it after a restart wherever a rotation moved it
    seen_len: int = 0
    seen_sha: str = ""
    # its file is no longer the one at its path (renamed away, or the copy copytruncate made):
    # nobody copies a rotated file, so after a restart it is found by its inode or not at all,
    # never by content (a short fingerprint starts many later files)
    rotated: bool = False
    # the generation number of its file's inode (identity.file_generation; 0: not known): a new
    # file on the same inode number has another
    gen: int = 0

    @property
    def drained(self) -> bool:
        """Finished and confirmed up to where reading ended: nothing of it is left to send. A
        finished source whose last batches were unconfirmed at a crash is resumed, not skipped."""
        return self.finished and (self.end is None or self.offset >= self.end)

    def ended_before(self, size: int) -> bool:
        """Finished, nothing left to send, and a file of `size` bytes holds more than where
        reading it ended."""
        return self.drained and self.end is not None and size > max(self.end, self.offset)

    def same_generation(self, gen: int) -> bool:
        """A file of inode generation `gen` on our inode number may be our file (either
        generation unknown: it may)."""
        return not self.gen or not gen or gen == self.gen

    def matches(self, dev: int, ino: int, head: bytes, gen: int = 0) -> bool:
        """True when the open file (its dev, ino, inode generation and first bytes) is this
        source. A source with no fingerprint (nothing read of it: the fingerprint is saved before
        its first batch is published) is only an empty file on its inode: a new file that reused
        the number of a deleted one holds bytes, and is a new source."""
        if (dev, ino) != (self.dev, self.ino) or len(head) < self.head_len:
            return False
        if not self.same_generation(gen):
            return False
        if not self.head_len:
            return not head
        return head_digest(head[: self.head_len]) == self.head_sha

    def same_bytes_before(self, fd: int, *, shorter_ok: bool = False) -> bool:
        """True when the open file still holds the bytes read just before the checked offset and
        just before the end of what was published (or nothing was recorded there, as in
        checkpoints of older versions). With `shorter_ok`, a file that ends before the published
        end (a copy made before we read that far) is judged by the checked offset alone."""
        if self.check_len:
            start = self.check_end - self.check_len
            if digest(os.pread(fd, self.check_len, start)) != self.check_sha:
                return False
        if not self.sent_len or self.sent_end <= self.check_end:
            return True
        sent = os.pread(fd, self.sent_len, self.sent_end - self.sent_len)
        if len(sent) < self.sent_len:
            return shorter_ok and os.fstat(fd).st_size < self.sent_end
        return digest(sent) == self.sent_sha

    def held_by(self, fd: int, size: int, *, by_inode: bool) -> bool:
        """The open file holds this source's bytes up to its confirmed offset: its first bytes
        and the bytes before the checked offset are the ones we read. By content alone (a copy
        under another inode) that needs a fingerprint, and a check near the offset unless the
        fingerprint covers all of the file or nothing of it is confirmed yet (then the copy
        `knows_file` takes for ours is ours: refused here, it was shipped by nobody)."""
        if size < self.offset or size < self.check_end:
            return False
        if by_inode and not self.same_generation(file_generation(fd)):
            return False  # a new file on our inode number, whatever it begins with
        if not self.head_len and size:
            # no fingerprint, so nothing of it was published: a file with bytes on its inode
            # number may be any new file, and is read as one
            return False
        unchecked = not self.check_len and size > self.head_len and self.offset
        if not by_inode and (not self.head_len or unchecked):
            return False
        head = os.pread(fd, self.head_len, 0)
        return (
            len(head) == self.head_len
            and head_digest(head) == self.head_sha
            and self.same_bytes_before(fd)
        )

    def copied_by(
        self, fd: int, size: int, *, since_checkpoint: bool = False, live_fd: int | None = None
    ) -> bool:
        """The open file (another inode) is a copy of this source, as far as we can tell: it
        starts with our fingerprint, and holds the bytes before the checked offset if it is that
        long (a copy made before we read further is shorter). With `live_fd`, the file of this
        source we hold open: a copy of it is no longer than it and ends with the bytes it holds
        there (a short fingerprint, the start of a half line, starts many other files)."""
        if live_fd is not None:
            if size > os.fstat(live_fd).st_size:
                return False
            end = min(size, BEFORE_BYTES)
            if os.pread(live_fd, end, size - end) != os.pread(fd, end, size - end):
                return False
        if since_checkpoint and size < self.offset:
            # made after the checkpoint confirmed `offset`, from a file that held that much: a
            # shorter one starting with our first KiB is a rewrite's copy, not ours
            return False
        if self.ended_before(size):
            # a finished source ends where reading it ended: a file holding more is no copy of
            # it (a short fingerprint, say a line's first bytes, starts many later files)
            return False
        if not self.head_len or size < self.head_len:
            return False
        if head_digest(os.pread(fd, self.head_len, 0)) != self.head_sha:
            return False
        return size < self.check_end or self.same_bytes_before(fd, shorter_ok=True)

    def starts_as_seen(self, fd: int) -> bool:
        """The open file starts with the bytes seen in this source before anything was read."""
        if not self.seen_len:
            return False
        return digest(os.pread(fd, self.seen_len, 0)) == self.seen_sha

    def set_check(self, end: int, before: bytes) -> None:
        self.check_end, self.check_len, self.check_sha = end, len(before), digest(before)

    def set_sent(self, end: int, length: int, sha: str) -> None:
        if end > self.sent_end:
            self.sent_end, self.sent_len, self.sent_sha = end, length, sha
            self.size = max(self.size, end)


# field → the JSON types it may hold (bool is refused where an int is meant)
_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "path": (str,),
    "dev": (int,),
    "ino": (int,),
    "head_len": (int,),
    "head_sha": (str,),
    "offset": (int,),
    "seq": (int,),
    "finished": (bool,),
    "updated": (int, float),
    "end": (int, type(None)),
    "check_end": (int,),
    "check_len": (int,),
    "check_sha": (str,),
    "size": (int,),
    "sent_end": (int,),
    "sent_len": (int,),
    "sent_sha": (str,),
    "seen_len": (int,),
    "seen_sha": (str,),
    "rotated": (bool,),
    "gen": (int,),
}
_REQUIRED = ("id", "path", "dev", "ino", "head_len", "head_sha", "offset", "seq")


def _entry(raw: Any) -> SourceEntry:
    """One source from the file, every field checked: a wrong type is an error now, not a
    traceback later."""
    if not isinstance(raw, dict):
        raise ValueError(f"a source is {type(raw).__name__}, not an object")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ValueError(f"a source lacks {', '.join(missing)}")
    for key, value in raw.items():
        types = _FIELDS.get(key)
        if types is None:
            raise ValueError(f"unknown source field {key!r}")
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"source field {key!r} is {type(value).__name__}")
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"source field {key!r} is negative")
    return SourceEntry(**raw)


def _entries(data: Any) -> dict[str, SourceEntry]:
    if not isinstance(data, dict):
        raise ValueError(f"the top level is {type(data).__name__}, not an object")
    if data.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"unknown version {data.get('version')!r}")
    sources = data.get("sources")
    if not isinstance(sources, list):
        raise ValueError("sources is not a list")
    return {entry.id: entry for entry in map(_entry, sources)}


class SentJournal:
    """Where each source's published batches end, appended before each batch is published and
    emptied by every checkpoint write: the checkpoint is written every interval, a batch is
    published at once, and a restart must know how far the consumer may already have a source.
    Appended without fsync: it outlives a killed process, not a lost machine (see README)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def replay(self, entries: dict[str, SourceEntry]) -> None:
        """Raise each source's published end to what the journal says (a torn last line, from a
        kill in the middle of a write, is skipped; so are sources pruned since)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as error:
            raise CheckpointError(
                f"checkpoint journal {self.path} cannot be read ({error.strerror})"
            ) from None
        for line in raw.split(b"\n"):
            fields = line.split(b" ")
            if len(fields) != 4 or not fields[1].isdigit() or not fields[2].isdigit():
                continue
            entry = entries.get(fields[0].decode("ascii", "replace"))
            if entry is not None and len(fields[3]) == 64:
                entry.set_sent(int(fields[1]), int(fields[2]), fields[3].decode("ascii"))

    def append(self, source: str, end: int, length: int, sha: str) -> None:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o644)
        os.write(self._fd, f"{source} {end} {length} {sha}\n".encode())

    def clear(self) -> None:
        """Everything in it is in the checkpoint just written."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
        elif self.path.exists():
            os.truncate(self.path, 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Checkpoint:
    """Identity → confirmed offset for every source. Offsets move only through `advance`, which the
    acknowledgement ledger calls over confirmed batches in order."""

    def __init__(
        self, path: Path, entries: dict[str, SourceEntry], written_at_ns: int | None = None
    ) -> None:
        self.path = path
        self.entries = entries
        # when the file was last written before this run, in ns on the file clock (None: no
        # checkpoint, a first run)
        self.written_at_ns = written_at_ns
        # per source: (end, bytes just before end) of batches read, until the offset passes them
        self._checks: dict[str, deque[tuple[int, bytes]]] = {}
        self._seq = max((e.seq for e in entries.values()), default=0)
        self.dirty = False
        # a new identity (a source or its first fingerprint) is in memory only: its write failed
        # (a full disk, say). Nothing may be published until a save succeeds, or a crash would
        # give the same bytes a second identity
        self.identity_unsaved = False
        self.journal = SentJournal(path.with_name(path.name + ".sent"))

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            raw = path.read_bytes()
            written_at_ns = path.stat().st_mtime_ns
        except FileNotFoundError:
            return cls(path, {})
        except OSError as error:
            raise CheckpointError(f"checkpoint {path} cannot be read ({error.strerror})") from None
        try:
            entries = _entries(json.loads(raw))
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            raise CheckpointError(
                f"checkpoint {path} is unreadable ({error}); move it away to start over"
            ) from None
        checkpoint = cls(path, entries, written_at_ns)
        checkpoint.journal.replay(entries)
        return checkpoint

    def new_source(
        self,
        path: str,
        dev: int,
        ino: int,
        head: bytes,
        offset: int,
        before: bytes = b"",
        *,
        gen: int = 0,
    ) -> SourceEntry:
        """A new source read from `offset`; `before` are the bytes just before it; `gen` its
        file's inode generation."""
        self._seq += 1
        entry = SourceEntry(
            id=uuid.uuid4().hex,
            path=path,
            dev=dev,
            ino=ino,
            head_len=min(len(head), HEAD_BYTES),
            head_sha=head_digest(head[:HEAD_BYTES]),
            offset=offset,
            seq=self._seq,
            gen=gen,
        )
        if before:
            entry.set_check(offset, before)
        self.entries[entry.id] = entry
        # Saved before any of its batches is published: a crash must not give the same bytes a
        # second identity, which the consumer could not recognise as duplicates.
        self._save_identity()
        return entry

    def _save_identity(self) -> None:
        """Save a new identity now; if the disk refuses, say so and hold publishing
        (`identity_unsaved`) until a later save succeeds, instead of ending the producer."""
        try:
            self.save()
        except OSError as error:
            self.identity_unsaved = self.dirty = True
            log.error(
                "checkpoint_write_failed",
                extra={"path": str(self.path), "error": error.strerror, "holding": "publish"},
            )

    def find(
        self, dev: int, ino: int, head: bytes, *, resumable: bool = False, gen: int = 0
    ) -> SourceEntry | None:
        """The newest source this open file is, or None; with `resumable`, only one with bytes
        left to send. A finished source nothing of which was shipped claims no file: a few
        bytes of fingerprint (the start of a half-written line) are shared by many files."""
        candidates = [
            e
            for e in self.entries.values()
            if e.matches(dev, ino, head, gen) and not (e.drained and (resumable or not e.offset))
        ]
        return max(candidates, key=lambda e: e.seq, default=None)

    def knows_file(
        self,
        fd: int,
        st: os.stat_result,
        *,
        besides: str = "",
        since_checkpoint: bool = False,
        live: Mapping[str, int] | None = None,
        grown_is_other: bool = False,
    ) -> bool:
        """Some source (other than `besides`) is this open file (by inode and first bytes) or a
        copy of it (`since_checkpoint`: one written after the checkpoint was, at start); `live`
        maps sources to the files of them we hold open, which a copy must agree with.
        `grown_is_other`: a finished source is not the file on its inode that now holds more
        than it ended with (written over in place, or a new file on its reused inode number),
        for a caller with other evidence of whose file it is (a late write to a finished
        rotation is otherwise taken for it, and not shipped again)."""
        live = live or {}
        head = os.pread(fd, HEAD_BYTES, 0)
        found = self.find(st.st_dev, st.st_ino, head, gen=file_generation(fd))
        # on its inode, with its first bytes, but shorter than what we read of it or other bytes
        # before that: rewritten in place, a new file
        if (
            found is not None
            and found.id != besides
            and st.st_size >= found.offset
            and not (grown_is_other and found.ended_before(st.st_size))
            and found.same_bytes_before(fd)
        ):
            return True
        digests: dict[int, str] = {}  # one digest per fingerprint length, not per source
        for e in self.entries.values():
            if not e.head_len or len(head) < e.head_len or e.id == besides:
                continue
            if e.drained and not e.offset:
                continue
            if e.head_len not in digests:
                digests[e.head_len] = head_digest(head[: e.head_len])
            if digests[e.head_len] == e.head_sha and e.copied_by(
                fd, st.st_size, since_checkpoint=since_checkpoint, live_fd=live.get(e.id)
            ):
                return True
        return False

    def close(self) -> None:
        self.journal.close()

    def own_files(self) -> tuple[Path, Path, Path]:
        """The checkpoint file, its temp file and its journal: never anyone's log, whatever
        inode they got."""
        return self.path, self.path.with_name(self.path.name + ".tmp"), self.journal.path

    def knows_path(self, path: str) -> bool:
        """True when some source was read from this path before (not a first run for it)."""
        return any(e.path == path for e in self.entries.values())

    def widen_head(self, entry: SourceEntry, head: bytes) -> None:
        """Fingerprint more of the file's first bytes as they appear (up to HEAD_BYTES). The
        first fingerprint of a source is saved at once, before its first batch is published: a
        source saved without one is taken for nothing but an empty file after a restart, and a
        published range under it would make the consumer drop a new file's bytes."""
        if entry.head_len < HEAD_BYTES and len(head) > entry.head_len:
            first = not entry.head_len
            entry.head_len = min(len(head), HEAD_BYTES)
            entry.head_sha = head_digest(head[: entry.head_len])
            self.dirty = True
            if first:
                self._save_identity()

    def saw_head(self, entry: SourceEntry, head: bytes) -> None:
        """Bytes seen in a source with no fingerprint (nothing read): saved at once, as an
        identity is (rare: only while a first half line grows)."""
        if not entry.head_len and len(head) > entry.seen_len:
            entry.seen_len, entry.seen_sha = len(head), digest(head)
            self._save_identity()

    def renumber(self, entries: list[SourceEntry]) -> None:
        """Give these sources the next sequence numbers, in this order (the order they are
        read in), saved at once: a restart resumes unfinished sources in sequence order."""
        for entry in entries:
            self._seq += 1
            entry.seq = self._seq
        self._save_identity()

    def relocate(self, entry: SourceEntry, dev: int, ino: int, gen: int = 0) -> None:
        """The source's bytes now live in another file (the copy copytruncate made), of inode
        generation `gen`."""
        entry.dev, entry.ino, entry.gen = dev, ino, gen
        self.mark_rotated(entry)

    def mark_rotated(self, entry: SourceEntry) -> None:
        """Its file is a rotated one now (see SourceEntry.rotated)."""
        entry.rotated = True
        self.dirty = True

    def read_up_to(self, entry: SourceEntry, end: int, before: bytes) -> None:
        """A batch of the source ending at `end` was read; `before` are the bytes just before
        `end`. Once the confirmed offset reaches `end`, the checkpoint records them."""
        self._checks.setdefault(entry.id, deque()).append((end, before))
        entry.size = max(entry.size, end)
        sha = digest(before)
        entry.set_sent(end, len(before), sha)
        # before the batch is published (the caller publishes it next): a failed append holds
        # publishing like an unsaved identity, until a checkpoint write records the end
        try:
            self.journal.append(entry.id, end, len(before), sha)
        except OSError as error:
            self.identity_unsaved = self.dirty = True
            log.error(
                "checkpoint_write_failed",
                extra={"path": str(self.journal.path), "error": error.strerror},
            )

    def _record_checks(self) -> None:
        """The bytes just before the confirmed offset (or the nearest read end below it): what
        the file must still hold there to be the same file after a restart."""
        for source, checks in list(self._checks.items()):
            entry = self.entries.get(source)
            best: tuple[int, bytes] | None = None
            while checks and (entry is None or checks[0][0] <= entry.offset):
                best = checks.popleft()
            if entry is not None and best is not None and best[0] > entry.check_end:
                entry.set_check(*best)
            if not checks:
                del self._checks[source]

    def finish(self, entry: SourceEntry, end: int) -> None:
        """No more reading of this source past `end`."""
        entry.finished = True
        entry.end = end
        entry.updated = time.time()
        self.dirty = True

    def advance(self, source: str, end: int) -> None:
        """Every byte of `source` before `end` is confirmed (the ledger calls this, in order)."""
        entry = self.entries.get(source)
        if entry is not None and end > entry.offset:
            entry.offset = end
            entry.updated = time.time()
            self.dirty = True

    def _prune(self, keep: Collection[str]) -> None:
        now = time.time()
        stale = [
            e.id
            for e in self.entries.values()
            if e.finished and e.id not in keep and now - e.updated > FINISHED_RETENTION_S
        ]
        for key in stale:
            del self.entries[key]
        if len(self.entries) > MAX_ENTRIES:
            finished = (e for e in self.entries.values() if e.finished and e.id not in keep)
            oldest = sorted(finished, key=lambda e: e.seq)[: len(self.entries) - MAX_ENTRIES]
            for e in oldest:
                del self.entries[e.id]

    def save(self, *, prune_except: Collection[str] | None = None) -> None:
        """Atomically replace the checkpoint file: a crash leaves the old or the new one. With
        `prune_except` (the sources still in flight), long-finished sources are dropped first."""
        self._record_checks()
        if prune_except is not None:
            self._prune(prune_except)
        data = {
            "version": CHECKPOINT_VERSION,
            "sources": [asdict(e) for e in sorted(self.entries.values(), key=lambda e: e.seq)],
        }
        tmp = self.own_files()[1]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps(data, separators=(",", ":")).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        # what it holds is in the checkpoint now: replaying it again is harmless
        with contextlib.suppress(OSError):
            self.journal.clear()
        if self.identity_unsaved:
            log.info("checkpoint_write_recovered", extra={"path": str(self.path)})
        self.dirty = self.identity_unsaved = False
