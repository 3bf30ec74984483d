"""The checkpoint: which file is which source (identity) and how far each is confirmed (offset).
It advances only when every earlier batch of that source is confirmed, and it is written
atomically: temp file, fsync, rename."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger("logship.producer.checkpoint")

HEAD_BYTES = 1024
CHECKPOINT_VERSION = 1
FINISHED_RETENTION_S = 24 * 3600
MAX_ENTRIES = 10_000


class CheckpointError(RuntimeError):
    """The checkpoint file exists but cannot be trusted; we refuse to guess offsets."""


def head_digest(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()


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

    @property
    def drained(self) -> bool:
        """Finished and confirmed up to where reading ended: nothing of it is left to send. A
        finished source whose last batches were unconfirmed at a crash is resumed, not skipped."""
        return self.finished and (self.end is None or self.offset >= self.end)

    def matches(self, dev: int, ino: int, head: bytes) -> bool:
        """True when the open file (its dev, ino and first bytes) is this source."""
        if (dev, ino) != (self.dev, self.ino) or len(head) < self.head_len:
            return False
        return head_digest(head[: self.head_len]) == self.head_sha


class Checkpoint:
    """Identity → confirmed offset for every source. Offsets move only through `advance`, which the
    acknowledgement ledger calls over confirmed batches in order."""

    def __init__(self, path: Path, entries: dict[str, SourceEntry]) -> None:
        self.path = path
        self.entries = entries
        self._seq = max((e.seq for e in entries.values()), default=0)
        self.dirty = False

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path, {})
        try:
            data = json.loads(raw)
            if data.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            entries = {e["id"]: SourceEntry(**e) for e in data["sources"]}
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"checkpoint {path} is unreadable ({error}); move it away to start over"
            ) from None
        return cls(path, entries)

    def new_source(self, path: str, dev: int, ino: int, head: bytes, offset: int) -> SourceEntry:
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
        )
        self.entries[entry.id] = entry
        # Saved before any of its batches is published: a crash must not give the same bytes a
        # second identity, which the consumer could not recognise as duplicates.
        self.save()
        return entry

    def find(self, dev: int, ino: int, head: bytes) -> SourceEntry | None:
        """The newest unfinished-or-finished source this open file is, or None."""
        candidates = [e for e in self.entries.values() if e.matches(dev, ino, head)]
        return max(candidates, key=lambda e: e.seq, default=None)

    def knows_path(self, path: str) -> bool:
        """True when some source was read from this path before (not a first run for it)."""
        return any(e.path == path for e in self.entries.values())

    def widen_head(self, entry: SourceEntry, head: bytes) -> None:
        """Fingerprint more of the file's first bytes as they appear (up to HEAD_BYTES)."""
        if entry.head_len < HEAD_BYTES and len(head) > entry.head_len:
            entry.head_len = min(len(head), HEAD_BYTES)
            entry.head_sha = head_digest(head[: entry.head_len])
            self.dirty = True

    def relocate(self, entry: SourceEntry, dev: int, ino: int) -> None:
        """The source's bytes now live in another file (the copy copytruncate made)."""
        entry.dev, entry.ino = dev, ino
        self.dirty = True

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
        if prune_except is not None:
            self._prune(prune_except)
        data = {
            "version": CHECKPOINT_VERSION,
            "sources": [asdict(e) for e in sorted(self.entries.values(), key=lambda e: e.seq)],
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps(data, separators=(",", ":")).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self.dirty = False
