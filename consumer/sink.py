"""The output file and its state file: append, fsync, exactly-once bookkeeping and recovery.
Order of durability: data, then state (size + written ranges), then the caller acknowledges."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.ranges import RangeSet
from consumer.statefile import StateFile, read_record
from logship.wire import Delivered, count_newlines

log = logging.getLogger("logship.consumer.sink")

STATE_VERSION = 1
MAX_SOURCES = 10_000
IOV_MAX = 1024


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


def recorded_size(output: Path) -> int:
    """Bytes of `output` the consumer has made durable and recorded (0 when unknown): what a
    reader may trust, since the state is written after the data and before the ack."""
    try:
        found = read_record(output.with_name(output.name + ".state"))
        return int(json.loads(found[2])["size"]) if found is not None else 0
    except (ValueError, KeyError, TypeError, OSError):
        return 0


class Sink:
    """Appends to `path`; keeps `<path>.state` with the output size and, per source, the byte
    ranges already written. On open it cuts any tail the state does not account for: those bytes
    were never acknowledged, so the broker delivers them again."""

    def __init__(self, path: Path, *, fsync: bool) -> None:
        self.path = path
        self.state_path = path.with_name(path.name + ".state")
        self._fsync = fsync
        self._fd = -1
        self._state = StateFile(self.state_path, durable=fsync)
        self.size = 0
        self.sources: dict[str, RangeSet] = {}
        self._touched_at: dict[str, float] = {}

    def open(self) -> None:
        state = self._load_state()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        actual = os.fstat(self._fd).st_size
        if state is None:
            self.size = actual
            if actual:
                log.warning("output_without_state", extra={"path": str(self.path), "size": actual})
            self._save_state()
            return
        recorded = int(state["size"])
        self.sources = {k: RangeSet([tuple(r) for r in v]) for k, v in state["sources"].items()}
        self._touched_at = {k: float(v) for k, v in state.get("touched", {}).items()}
        if actual > recorded:
            log.warning(
                "output_tail_discarded", extra={"path": str(self.path), "bytes": actual - recorded}
            )
            os.ftruncate(self._fd, recorded)
            os.fsync(self._fd)
        elif actual < recorded:
            log.warning(
                "output_shorter_than_state",
                extra={"path": str(self.path), "size": actual, "recorded": recorded},
            )
        self.size = min(actual, recorded)
        if actual != recorded:
            self._save_state()

    def _load_state(self) -> dict[str, Any] | None:
        try:
            raw = self._state.load()
            if raw is None:
                return None
            state = json.loads(raw)
            if state.get("version") != STATE_VERSION or not isinstance(state.get("sources"), dict):
                raise ValueError("unknown format")
            int(state["size"])
        except (ValueError, KeyError, TypeError) as error:
            raise StateError(
                f"state file {self.state_path} is unreadable ({error}); "
                "move it away to start over (duplicates become possible)"
            ) from None
        return dict(state)

    def plan(self, messages: Sequence[Delivered]) -> Plan:
        """Decide which bytes of these messages are new. Ranges are updated at once (so a group
        that holds one batch twice writes it once); `rollback` undoes that if the write fails."""
        plan = Plan()
        for message in messages:
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
            os.ftruncate(self._fd, self.size)
            self._save_state()
        except OSError as error:
            log.error("output_rollback_failed", extra={"path": str(self.path), "error": str(error)})

    def commit(self, plan: Plan) -> float:
        """Append the pieces, fsync (by policy), then record the new size and ranges. Returns the
        seconds spent in fsync. Raises OSError (disk full, I/O error): call rollback then."""
        if os.fstat(self._fd).st_size != self.size:
            # a rollback's truncate failed: appending (O_APPEND) after its leftovers would put
            # bytes where the state says others are
            os.ftruncate(self._fd, self.size)
        pieces = plan.pieces
        for i in range(0, len(pieces), IOV_MAX):
            self._write_all(pieces[i : i + IOV_MAX])
        fsync_s = 0.0
        if self._fsync and plan.bytes:
            started = time.monotonic()
            os.fdatasync(self._fd)  # data and the new size: all a reader needs after a crash
            fsync_s = time.monotonic() - started
        if plan.bytes or plan.touched:
            now = time.time()
            for source in plan.touched:
                self._touched_at[source] = now
            started = time.monotonic()
            self._save_state(self.size + plan.bytes)
            self.size += plan.bytes
            fsync_s += time.monotonic() - started
        return fsync_s

    def _write_all(self, pieces: list[memoryview]) -> None:
        while pieces:
            written = os.writev(self._fd, pieces)
            while pieces and written >= len(pieces[0]):
                written -= len(pieces[0])
                pieces = pieces[1:]
            if pieces and written:
                pieces = [pieces[0][written:], *pieces[1:]]

    def _save_state(self, size: int | None = None) -> None:
        if len(self.sources) > MAX_SOURCES:
            oldest = sorted(self.sources, key=lambda s: self._touched_at.get(s, 0.0))
            for source in oldest[: len(self.sources) - MAX_SOURCES]:
                del self.sources[source]
                self._touched_at.pop(source, None)
        state = {
            "version": STATE_VERSION,
            "size": self.size if size is None else size,
            "sources": {k: v.ranges() for k, v in self.sources.items()},
            "touched": self._touched_at,
        }
        self._state.write(json.dumps(state, separators=(",", ":")).encode())

    def close(self) -> None:
        if self._fd >= 0:
            if self._fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._state.close()
