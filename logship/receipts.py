"""Written receipts, the consumer's answer to a producer: which source byte ranges are now durable
in an output, and where they sit there. Pure: the wire of a receipt and the grouping of one
written group into receipts; publishing and receiving are the programs' own.

A batch message may carry H_RECEIPTS_TO (the id of the producer that wants receipts). After a
group is durable and recorded, the consumer publishes one receipt per distinct id to the direct
exchange `receipts_exchange(exchange)` with that id as routing key, at once or, when every batch
of that producer's in the group carries H_RECEIPTS_WITHIN (milliseconds the producer can wait),
merged with the next groups' for up to that long. The body is compact JSON:
    {"v": 1, "c": consumer id, "o": output path,
     "r": [[source, start, end, output_start, output_end], ...],
     "d": [[source, start, end], ...]}              ("d" only when some ranges were duplicates)
"r" ranges were appended to the output now: output_end - output_start == end - start, the same
bytes. "d" ranges were already in that output (a batch delivered again, say after a producer
restart): durable, but where they were first written is not known here. A receipt is advice:
it may be lost (a broker restart, a failed publish) and the data is still safe.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

H_RECEIPTS_TO = "x-logship-receipts-to"
# how long a batch's receipt may wait to go with later groups' (milliseconds): a tailed file's
# receipts only move a gauge, an HTTP client waiting for `written` needs its own at once
H_RECEIPTS_WITHIN = "x-logship-receipts-within-ms"
MAX_RECEIPTS_WITHIN_MS = 10_000  # a hostile header cannot hold receipts for longer
RECEIPT_VERSION = 1
MAX_ID_LEN = 200  # a producer id is an AMQP routing key (255 bytes at most) and a queue name part
MAX_RECEIPT_BYTES = 4 * 1024 * 1024
CONTENT_TYPE = "application/json"
MESSAGE_TYPE = "logship.receipt"


def receipts_exchange(exchange: str) -> str:
    """The direct exchange receipts go to, named after the batches' exchange."""
    return f"{exchange}.receipts"


@dataclass(frozen=True, slots=True)
class WrittenRange:
    """Bytes [start, end) of `source` (a batch's x-logship-source), now durable in the output at
    [output_start, output_end)."""

    source: str
    start: int
    end: int
    output_start: int
    output_end: int


@dataclass(frozen=True, slots=True)
class SourceRange:
    """Bytes [start, end) of `source`: already in the output before (where is not known)."""

    source: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class WrittenReceipt:
    consumer: str
    output: str
    ranges: tuple[WrittenRange, ...]
    duplicates: tuple[SourceRange, ...] = field(default=())

    def covered(self) -> Iterable[tuple[str, int, int]]:
        """Every (source, start, end) the receipt says is durable, written now or before."""
        for r in self.ranges:
            yield r.source, r.start, r.end
        for d in self.duplicates:
            yield d.source, d.start, d.end


def encode(receipt: WrittenReceipt) -> bytes:
    """Compact JSON (see the module docstring)."""
    body: dict[str, Any] = {
        "v": RECEIPT_VERSION,
        "c": receipt.consumer,
        "o": receipt.output,
        "r": [[r.source, r.start, r.end, r.output_start, r.output_end] for r in receipt.ranges],
    }
    if receipt.duplicates:
        body["d"] = [[d.source, d.start, d.end] for d in receipt.duplicates]
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _is_offset(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ValueError(f"receipt field {key!r} is not a string")
    return value


def _source_range(item: object, size: int) -> list[Any]:
    if not isinstance(item, list) or len(item) != size:
        raise ValueError(f"receipt range {json.dumps(item)[:60]} is not a list of {size}")
    source = item[0]
    if not isinstance(source, str) or not source or len(source) > MAX_ID_LEN:
        raise ValueError("receipt range has no source")
    if not all(_is_offset(x) for x in item[1:]):
        raise ValueError(f"receipt range {json.dumps(item)[:60]} holds a bad offset")
    if not item[1] < item[2]:
        raise ValueError(f"receipt range {json.dumps(item)[:60]} is empty or reversed")
    return item


def _written(item: object) -> WrittenRange:
    source, start, end, output_start, output_end = _source_range(item, 5)
    if output_end - output_start != end - start:
        raise ValueError(f"receipt range {json.dumps(item)[:60]}: output and source sizes differ")
    return WrittenRange(source, start, end, output_start, output_end)


def decode(body: bytes) -> WrittenReceipt:
    """A receipt from its body; ValueError on anything malformed (say which part)."""
    if len(body) > MAX_RECEIPT_BYTES:
        raise ValueError(f"receipt of {len(body)} bytes is too large")
    try:
        parsed = json.loads(body)
    except RecursionError:
        raise ValueError("receipt nests too deep") from None
    if not isinstance(parsed, dict):
        raise ValueError("receipt is not a JSON object")
    if parsed.get("v") != RECEIPT_VERSION:
        raise ValueError(f"unknown receipt version {parsed.get('v')!r}")
    ranges, duplicates = parsed.get("r"), parsed.get("d", [])
    if not isinstance(ranges, list) or not isinstance(duplicates, list):
        raise ValueError("receipt ranges are not lists")
    return WrittenReceipt(
        consumer=_text(parsed, "c"),
        output=_text(parsed, "o"),
        ranges=tuple(_written(item) for item in ranges),
        duplicates=tuple(SourceRange(*_source_range(item, 3)) for item in duplicates),
    )


@dataclass(slots=True)
class _Pending:
    ranges: list[WrittenRange] = field(default_factory=list)
    duplicates: list[SourceRange] = field(default_factory=list)
    # per source, the index of its last range (only that one may grow)
    last: dict[str, int] = field(default_factory=dict)
    last_duplicate: dict[str, int] = field(default_factory=dict)


class ReceiptCollector:
    """Gathers one written group's pieces by receipts-to id and makes one receipt per id; ranges
    of one source that touch (in the source and in the output) become one. Pieces come in output
    order; a piece's bytes follow the previous piece's in the output."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def written(self, to: str, source: str, start: int, end: int, output_start: int) -> None:
        """Bytes [start, end) of `source` now at `output_start` in the output."""
        if start >= end:
            return
        pending = self._pending.setdefault(to, _Pending())
        output_end = output_start + end - start
        index = pending.last.get(source)
        if index is not None:
            last = pending.ranges[index]
            if last.end == start and last.output_end == output_start:
                pending.ranges[index] = WrittenRange(
                    source, last.start, end, last.output_start, output_end
                )
                return
        pending.last[source] = len(pending.ranges)
        pending.ranges.append(WrittenRange(source, start, end, output_start, output_end))

    def duplicate(self, to: str, source: str, start: int, end: int) -> None:
        """Bytes [start, end) of `source` that were in the output already."""
        if start >= end:
            return
        pending = self._pending.setdefault(to, _Pending())
        index = pending.last_duplicate.get(source)
        if index is not None:
            last = pending.duplicates[index]
            if last.end == start:
                pending.duplicates[index] = SourceRange(source, last.start, end)
                return
        pending.last_duplicate[source] = len(pending.duplicates)
        pending.duplicates.append(SourceRange(source, start, end))

    def receipts(self, consumer: str, output: str) -> dict[str, WrittenReceipt]:
        """One receipt per receipts-to id."""
        return {
            to: WrittenReceipt(consumer, output, tuple(p.ranges), tuple(p.duplicates))
            for to, p in self._pending.items()
        }


def receipts_to(headers: Mapping[str, Any] | None) -> str | None:
    """The producer id a batch wants receipts sent to, or None (absent or unusable)."""
    if not headers:
        return None
    value = headers.get(H_RECEIPTS_TO)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LEN:
        return None
    return value


def receipts_within(headers: Mapping[str, Any] | None) -> float:
    """How long a batch's receipt may wait, in seconds: 0 (at once) when the header is absent
    or unusable, at most MAX_RECEIPTS_WITHIN_MS."""
    value = headers.get(H_RECEIPTS_WITHIN) if headers else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return 0.0
    return min(value, MAX_RECEIPTS_WITHIN_MS) / 1000


def receipt_delays(
    batches: Iterable[tuple[str | None, Mapping[str, Any] | None]],
) -> dict[str, float]:
    """Per producer that wants receipts, how long its receipt for one group of batches (each its
    `receipts_to` and its headers) may wait: the least any of its batches allows."""
    delays: dict[str, float] = {}
    for to, batch_headers in batches:
        if to is not None:
            delay = receipts_within(batch_headers)
            delays[to] = min(delays.get(to, delay), delay)
    return delays
