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


def _read_slot(raw: bytes, offset: int, capacity: int) -> tuple[int, bytes] | None:
    if len(raw) < offset + SLOT_HEADER.size:
        return None
    seq, length, crc = SLOT_HEADER.unpack_from(raw, offset)
    start = offset + SLOT_HEADER.size
    if seq == 0 or length > capacity - SLOT_HEADER.size or len(raw) < start + length:
        return None
    payload = raw[start : start + length]
    return (seq, payload) if zlib.crc32(payload) == crc else None


def read_record(path: Path) -> tuple[int, int, bytes] | None:
    """(sequence, slot capacity, payload) of the newest valid record, without keeping the file
    open (for readers such as the benchmark); capacity 0 marks a pre-slotted JSON file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if raw.startswith(b"{"):
        return 0, 0, raw
    if len(raw) < HEADER.size:
        raise StateFileError("too short")
    magic, version, capacity = HEADER.unpack_from(raw)
    if magic != MAGIC or version != FORMAT_VERSION or capacity < SLOT_HEADER.size:
        raise StateFileError("not a logship state file")
    best: tuple[int, bytes] | None = None
    for slot in (0, 1):
        record = _read_slot(raw, HEADER.size + slot * capacity, capacity)
        if record is not None and (best is None or record[0] > best[0]):
            best = record
    if best is None:
        raise StateFileError("no valid record in either slot")
    return best[0], capacity, best[1]


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

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
