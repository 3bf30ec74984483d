"""A small record rewritten in place, durably and atomically: two checksummed slots written in
turn, so a torn write leaves the previous record readable. One fdatasync per write, no rename and
no directory fsync (the file only changes size when it is rebuilt larger)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

MAGIC = b"LSST"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sIQ")  # magic, format version, slot capacity
SLOT_HEADER = struct.Struct("<QII")  # sequence number, payload length, crc32 of the payload
MIN_CAPACITY = 64 * 1024


class StateFileError(ValueError):
    """Neither slot holds a valid record: the file is damaged or not a state file."""


def read_record(path: Path) -> tuple[int, int, bytes] | None:
    """(sequence, slot capacity, payload) of the newest valid record, or None without a file.
    Reads only the headers and the one payload (cheap enough to poll); capacity 0 marks a
    pre-slotted JSON file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        head = os.pread(fd, HEADER.size, 0)
        if head.startswith(b"{"):
            return 0, 0, head + os.pread(fd, os.fstat(fd).st_size, len(head))
        if len(head) < HEADER.size:
            raise StateFileError("too short")
        magic, version, capacity = HEADER.unpack(head)
        if magic != MAGIC or version != FORMAT_VERSION or capacity < SLOT_HEADER.size:
            raise StateFileError("not a logship state file")
        slots = []
        for slot in (0, 1):
            offset = HEADER.size + slot * capacity
            raw = os.pread(fd, SLOT_HEADER.size, offset)
            if len(raw) == SLOT_HEADER.size:
                seq, length, crc = SLOT_HEADER.unpack(raw)
                if seq and length <= capacity - SLOT_HEADER.size:
                    slots.append((seq, length, crc, offset + SLOT_HEADER.size))
        for seq, length, crc, start in sorted(slots, reverse=True):
            payload = os.pread(fd, length, start)
            if len(payload) == length and zlib.crc32(payload) == crc:
                return seq, capacity, payload
        raise StateFileError("no valid record in either slot")
    finally:
        os.close(fd)


class StateReader:
    """Follows a state file from another process cheaply: each `poll` reads the two slot headers
    and reads and returns a payload only when a newer record appeared (None otherwise)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._ino = -1
        self._capacity = 0
        self._seq = 0

    def _reopen(self) -> bool:
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return False
        if ino != self._ino or self._fd < 0:
            self.close()
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self._ino = os.fstat(self._fd).st_ino
            head = os.pread(self._fd, HEADER.size, 0)
            if len(head) < HEADER.size or head[:4] != MAGIC:
                self._capacity = 0
                return True
            self._capacity = HEADER.unpack(head)[2]
            self._seq = 0
        return True

    def poll(self) -> bytes | None:
        if not self._reopen():
            return None
        if not self._capacity:  # not (yet) slotted: read it whole
            found = read_record(self.path)
            return found[2] if found is not None else None
        best: tuple[int, int, int, int] | None = None
        for slot in (0, 1):
            offset = HEADER.size + slot * self._capacity
            raw = os.pread(self._fd, SLOT_HEADER.size, offset)
            if len(raw) == SLOT_HEADER.size:
                seq, length, crc = SLOT_HEADER.unpack(raw)
                if (
                    seq > self._seq
                    and length <= self._capacity - SLOT_HEADER.size
                    and (best is None or seq > best[0])
                ):
                    best = (seq, length, crc, offset + SLOT_HEADER.size)
        if best is None:
            return None
        seq, length, crc, start = best
        payload = os.pread(self._fd, length, start)
        if len(payload) != length or zlib.crc32(payload) != crc:
            return None  # being written right now: the next poll sees it whole
        self._seq = seq
        return payload

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StateFile:
    """`load()` returns the newest valid record; `write()` replaces it durably (with `durable`
    off the OS flushes it: safe against a process crash, not a power cut)."""

    def __init__(self, path: Path, *, durable: bool) -> None:
        self.path = path
        self._durable = durable
        self._fd = -1
        self._capacity = 0
        self._seq = 0

    def load(self) -> bytes | None:
        """The newest valid record, None if there is no file. A file from before the slotted
        format (one JSON document) is returned whole, and rewritten slotted at the next write."""
        found = read_record(self.path)
        if found is None:
            return None
        seq, capacity, payload = found
        if capacity:
            self._seq, self._capacity = seq, capacity
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        return payload

    def write(self, payload: bytes) -> None:
        """Write the record into the slot not holding the current one, then fdatasync. After a
        failure the next write goes to the same slot: the current record is never the one
        overwritten."""
        seq = self._seq + 1
        if self._fd < 0 or SLOT_HEADER.size + len(payload) > self._capacity:
            self._rebuild(payload, seq)
        else:
            record = SLOT_HEADER.pack(seq, len(payload), zlib.crc32(payload)) + payload
            os.pwrite(self._fd, record, HEADER.size + (seq % 2) * self._capacity)
            if self._durable:
                os.fdatasync(self._fd)
        self._seq = seq

    def _rebuild(self, payload: bytes, seq: int) -> None:
        """A new file, large enough for this record twice over: written aside, then renamed in
        (the one path that needs a directory fsync)."""
        capacity = max(MIN_CAPACITY, 2 * (SLOT_HEADER.size + len(payload)))
        slot = seq % 2
        image = bytearray(HEADER.size + 2 * capacity)
        HEADER.pack_into(image, 0, MAGIC, FORMAT_VERSION, capacity)
        record = SLOT_HEADER.pack(seq, len(payload), zlib.crc32(payload)) + payload
        image[HEADER.size + slot * capacity : HEADER.size + slot * capacity + len(record)] = record
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(image)
            while view:
                view = view[os.write(fd, view) :]
            if self._durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        os.replace(tmp, self.path)
        if self._durable:
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._capacity = fd, capacity

    def follow_path(self) -> bool:
        """True when the path no longer names the file written in place at its full size
        (renamed, deleted or truncated, e.g. by a logrotate glob that matched it): the file is
        let go and the next write rebuilds it at the path. Two stats."""
        if self._fd < 0:
            return False
        held = os.fstat(self._fd)
        try:
            named: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            named = None
        if (
            named is not None
            and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
            and held.st_size >= HEADER.size + 2 * self._capacity
        ):
            return False
        os.close(self._fd)
        self._fd = -1
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
