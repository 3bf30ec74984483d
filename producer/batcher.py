"""Where a batch ends: pure functions over a chunk of bytes, no I/O. A batch is a byte range cut at
a newline, never a list of line objects."""

from __future__ import annotations

from dataclasses import dataclass

from logship.wire import count_newlines

NEWLINE = b"\n"


@dataclass(frozen=True, slots=True)
class Cut:
    """How many bytes of a chunk form the next batch, and how many newlines they hold."""

    length: int
    lines: int
    oversized: bool  # a piece of a line longer than max_bytes: shipped without its newline


def cut_batch(data: bytes, *, max_bytes: int, max_lines: int, final: bool = False) -> Cut:
    """Cut `data` (read from the current offset, at most max_bytes long) after its last newline,
    or after its max_lines-th newline. A chunk with no newline is held (Cut(0, 0)) unless it fills
    max_bytes (an over-long line, shipped in pieces) or `final` says no more bytes will come (the
    unterminated end of a rotated-away file)."""
    last = data.rfind(NEWLINE)
    if last < 0:
        if len(data) >= max_bytes:
            return Cut(len(data), 0, oversized=True)
        if final and data:
            return Cut(len(data), 0, oversized=False)
        return Cut(0, 0, oversized=False)
    length = last + 1
    lines = count_newlines(data, length)
    if lines > max_lines:
        position = -1
        for _ in range(max_lines):
            position = data.find(NEWLINE, position + 1)
        length, lines = position + 1, max_lines
    elif final and length < len(data):
        length = len(data)
    return Cut(length, lines, oversized=False)
