"""Append→durable-output latency at a steady rate: a writer process appends timestamped lines in
small groups (every millisecond, the lines due by then); a reader follows how many output bytes are
durable and takes each line's latency from the timestamp it carries.

    python -m bench.latency --input F --rate 10000 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import FILLER, LINE_BYTES, DurableWatcher

TS_DIGITS = 19
TICK_S = 0.001
POWERS = 10 ** np.arange(TS_DIGITS - 1, -1, -1, dtype=np.int64)


def stamped(ts_ns: int, seq: int) -> bytes:
    head = b"%019d %012d " % (ts_ns, seq)
    return head + FILLER[: LINE_BYTES - 1 - len(head)] + b"\n"


def write(path: Path, rate: float, seconds: float) -> int:
    """Append `rate` lines a second for `seconds`; return the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    total = int(rate * seconds)
    written = 0
    started = time.monotonic()
    try:
        while written < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            if due > written:
                now = time.time_ns()
                os.write(fd, b"".join(stamped(now, i) for i in range(written, due)))
                written = due
            time.sleep(TICK_S)
    finally:
        os.close(fd)
    return written * LINE_BYTES


def timestamps(data: bytes) -> np.ndarray:
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, LINE_BYTES)[:, :TS_DIGITS]
    return (rows.astype(np.int64) - 48) @ POWERS


def read(output: Path, expected: int, *, watcher: DurableWatcher, timeout: float) -> np.ndarray:
    """Follow `output` until `watcher` says `expected` bytes are durable; return each line's
    latency in ms. Raises TimeoutError with what arrived when the pipeline falls behind for
    good."""
    position = 0
    found: list[np.ndarray] = []
    deadline = time.monotonic() + timeout
    fd = -1
    try:
        while position < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{position} of {expected} bytes durable after {timeout} s")
            size = watcher.size()
            size -= size % LINE_BYTES
            if size <= position:
                time.sleep(0.0005)
                continue
            now = time.time_ns()
            if fd < 0:
                fd = os.open(output, os.O_RDONLY)
            data = os.pread(fd, size - position, position)
            data = data[: len(data) - len(data) % LINE_BYTES]
            found.append((now - timestamps(data)) / 1e6)
            position += len(data)
    finally:
        if fd >= 0:
            os.close(fd)
    return np.concatenate(found) if found else np.zeros(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.latency")
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    print(write(args.input, args.rate, args.seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
