"""The output's recent tail in memory, and the search for a copytruncate's copy beside the output:
what lets the sink put back the bytes written between logrotate's copy and its truncate."""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

TAIL_BYTES = 4 * 1024 * 1024
# a copy is used only if its last bytes equal what was written at those offsets: this many, or
# the whole copy if it is shorter, and at least MIN_VERIFY_BYTES of them
VERIFY_BYTES = 64 * 1024
MIN_VERIFY_BYTES = 256
# file times come from a coarse kernel clock, a tick behind time.time()
CLOCK_SLACK = 0.05
GZIP_MAGIC = b"\x1f\x8b"


class Tail:
    """The last `capacity` bytes written to the output, addressed by their offset in it. Held as
    the pieces that were written (views of the message bodies, not copies: copying every byte
    into a ring cost one memcpy of the whole stream, ~4 % of the consumer's CPU at full
    throughput), dropped once newer pieces cover `capacity`. Memory: `capacity` plus the oldest
    piece still partly inside it (a piece is at most one batch; one longer than `capacity` is cut
    to its last `capacity` bytes, one less than half its body is copied), none before the first
    write."""

    def __init__(self, capacity: int = TAIL_BYTES) -> None:
        self.capacity = capacity
        self._pieces: deque[memoryview] = deque()
        self._held = 0  # bytes in _pieces: at least `length`, the first piece may reach further
        self.length = 0
        self.end = 0

    @property
    def start(self) -> int:
        return self.end - self.length

    def reset(self, end: int) -> None:
        """Forget everything: the output's bytes before `end` are not the ones held here."""
        self._pieces.clear()
        self._held = 0
        self.end, self.length = end, 0

    def rebase(self, end: int) -> None:
        """The same bytes now end at offset `end` (a new file continues the old one)."""
        self.end = end

    def append(self, data: bytes | memoryview) -> None:
        """Hold `data` (not copied: the caller must not change it afterwards)."""
        view = memoryview(data).cast("B")
        n = len(view)
        self.end += n
        if not n or not self.capacity:
            return
        if n >= self.capacity:  # only its end is kept, copied: the rest of it may be large
            self._pieces.clear()
            self._pieces.append(memoryview(bytes(view[n - self.capacity :])))
            self._held = self.length = self.capacity
            return
        if 2 * n < memoryview(view.obj).nbytes:
            # a small part of a large body (a range partly written before): holding the view
            # would hold the whole body
            view = memoryview(bytes(view))
        self._pieces.append(view)
        self._held += n
        while self._held - len(self._pieces[0]) >= self.capacity:
            self._held -= len(self._pieces.popleft())
        self.length = min(self.capacity, self._held)

    def get(self, start: int, stop: int) -> bytes:
        """The bytes at offsets [start, stop), which must be held."""
        if not self.start <= start <= stop <= self.end:
            raise ValueError(f"[{start}, {stop}) is not within [{self.start}, {self.end})")
        out = []
        position = self.end - self._held  # offset of the first held byte
        for piece in self._pieces:
            after = position + len(piece)
            if after > start and position < stop:
                out.append(piece[max(start, position) - position : min(stop, after) - position])
            position = after
        return b"".join(out)


@dataclass
class Stream:
    """What the output held just before it was cut: the tail held in memory, then `extra` (the
    bytes of a write the cut interrupted), so offsets run up to `end`."""

    tail: Tail
    extra: bytes = b""

    @property
    def start(self) -> int:
        return self.tail.start

    @property
    def end(self) -> int:
        return self.tail.end + len(self.extra)

    def get(self, start: int, stop: int) -> bytes:
        mid = self.tail.end
        held = self.tail.get(min(start, mid), min(stop, mid)) if start < mid else b""
        return held + self.extra[max(start, mid) - mid : max(stop, mid) - mid]


@dataclass
class Copy:
    """A file beside the output that may be the copy of its first `size` bytes."""

    path: Path
    size: int  # bytes it holds (a gzip file: the size its trailer gives)
    compressed: bool
    verified: bool  # its last bytes equal the output's at those offsets


def find_copy(output: Path, skip: set[tuple[int, int]], stream: Stream, since: float) -> Copy:
    """The copy a copytruncate made of `output`: a regular file beside it, named like a rotation
    of it (`output.txt.1`, `output.txt-20261201.gz`, `output-20261201.txt`: the name starts with
    the output's up to its first dot), written since `since` (when the output's current content
    began), not one of `skip` ((dev, ino) pairs: the output, its state file), no larger than
    `stream.end`. A plain file whose last bytes equal the stream's at the same offsets is
    verified (the largest such wins: any other is an older copy); failing that, the largest one
    that cannot be checked (gzip, or further back than the tail) is returned unverified, for
    counting. Raises LookupError when there is none.

    The name matters: the producer's input, were it beside the output, holds the same bytes."""
    verified: list[Copy] = []
    unverified: list[Copy] = []
    stem = output.name.split(".")[0]
    with os.scandir(output.parent) as entries:
        for entry in entries:
            if not entry.name.startswith(stem):
                continue
            try:
                found = entry.stat(follow_symlinks=False)
                if (
                    not stat.S_ISREG(found.st_mode)
                    or (found.st_dev, found.st_ino) in skip
                    or found.st_mtime < since - CLOCK_SLACK
                ):
                    continue
                copy = _examine(Path(entry.path), found.st_size, stream)
            except OSError:
                continue  # gone meanwhile, or unreadable: not a copy we can use
            if copy is not None:
                (verified if copy.verified else unverified).append(copy)
    for found_copies in (verified, unverified):
        if found_copies:
            return max(found_copies, key=lambda c: c.size)
    raise LookupError("no copy")


def _examine(path: Path, size: int, stream: Stream) -> Copy | None:
    if size == 0:
        return None  # no evidence of anything
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if os.pread(fd, 2, 0) == GZIP_MAGIC:
            if size < 18:
                return None
            original = int.from_bytes(os.pread(fd, 4, size - 4), "little")  # mod 2**32
            if original > stream.end:
                return None
            return Copy(path, original, compressed=True, verified=False)
        if size > stream.end:
            return None
        window = min(size, VERIFY_BYTES, size - stream.start)
        if window < min(size, MIN_VERIFY_BYTES):
            return Copy(path, size, compressed=False, verified=False)
        if os.pread(fd, window, size - window) != stream.get(size - window, size):
            return None  # another file (or another version of this one): not the copy
        return Copy(path, size, compressed=False, verified=True)
    finally:
        os.close(fd)
