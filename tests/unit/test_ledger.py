"""The acknowledgement ledger: checkpoint progress only over confirmed batches in order, room to
read on either limit, and nothing advanced by a batch abandoned at shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from logship.wire import Batch
from producer.checkpoint import Checkpoint
from producer.ledger import AckLedger


def _ledger(tmp_path: Path, *, max_batches: int = 16, max_bytes: int = 1 << 20) -> AckLedger:
    checkpoint = Checkpoint.load(tmp_path / "ck")
    gauge = Gauge("in_flight", "", registry=CollectorRegistry())
    return AckLedger(checkpoint, max_batches=max_batches, max_bytes=max_bytes, gauge=gauge)


def _batch(source: str, start: int, end: int) -> Batch:
    return Batch(source, "in.txt", start, end, 1, 0, b"x" * (end - start))


def _gauge(ledger: AckLedger) -> float:
    return float(ledger._gauge._value.get())


def test_offset_moves_only_over_leading_confirms(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    checkpoint = ledger._checkpoint
    entry = checkpoint.new_source("in.txt", 1, 2, b"head", 0)
    first, second, third = (ledger.sent(_batch(entry.id, s, s + 10)) for s in (0, 10, 20))
    ledger.confirmed(second)
    assert entry.offset == 0, "a later confirm must not move the offset past an unconfirmed batch"
    ledger.confirmed(first)
    assert entry.offset == 20
    ledger.confirmed(third)
    assert entry.offset == 30 and ledger.unconfirmed == 0 and ledger.batches == 0
    assert ledger.sources() == set() and _gauge(ledger) == 0


def test_sources_advance_independently(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    a = ledger._checkpoint.new_source("a.txt", 1, 2, b"a", 0)
    b = ledger._checkpoint.new_source("b.txt", 1, 3, b"b", 0)
    a_first = ledger.sent(_batch(a.id, 0, 5))
    b_first = ledger.sent(_batch(b.id, 0, 7))
    ledger.confirmed(b_first)
    assert (a.offset, b.offset) == (0, 7)
    assert ledger.sources() == {a.id}
    ledger.confirmed(a_first)
    assert a.offset == 5


def test_an_abandoned_batch_frees_room_but_holds_the_offset(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, max_batches=2)
    entry = ledger._checkpoint.new_source("in.txt", 1, 2, b"head", 0)
    first = ledger.sent(_batch(entry.id, 0, 10))
    second = ledger.sent(_batch(entry.id, 10, 20))
    assert ledger.full()
    ledger.abandoned(first)
    ledger.confirmed(second)
    assert not ledger.full() and _gauge(ledger) == 0
    assert entry.offset == 0, "a restart must read the abandoned batch again"
    assert ledger.unconfirmed == 1
    ledger.confirmed(first)  # a late confirm after abandoning changes nothing
    assert entry.offset == 0 and ledger.batches == 0


async def test_full_on_batches_or_bytes_and_room_after_a_confirm(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, max_batches=3, max_bytes=100)
    source = ledger._checkpoint.new_source("in.txt", 1, 2, b"head", 0).id
    stop = asyncio.Event()
    first = ledger.sent(_batch(source, 0, 60))
    assert not ledger.full()
    ledger.sent(_batch(source, 60, 120))  # one batch may pass the byte limit: reading stops
    assert ledger.full()
    waiting = asyncio.ensure_future(ledger.wait_for_room(stop))
    await asyncio.sleep(0)
    assert not waiting.done()
    ledger.confirmed(first)
    assert await asyncio.wait_for(waiting, 1) is True
    ledger.sent(_batch(source, 120, 121))
    ledger.sent(_batch(source, 121, 122))
    assert ledger.full() and ledger.batches == 3


async def test_stop_ends_the_wait(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, max_batches=1)
    ledger.sent(_batch("s", 0, 1))
    stop = asyncio.Event()
    waiting = asyncio.ensure_future(ledger.wait_for_room(stop))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(waiting, 1) is False


def test_a_source_in_flight_is_not_pruned(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    checkpoint = ledger._checkpoint
    busy = checkpoint.new_source("a.txt", 1, 2, b"a", 0)
    idle = checkpoint.new_source("b.txt", 1, 3, b"b", 0)
    for entry in (busy, idle):
        checkpoint.finish(entry, 10)
        entry.updated = 0.0  # finished long ago
    ledger.sent(_batch(busy.id, 0, 10))
    checkpoint.save(prune_except=ledger.sources())
    assert set(Checkpoint.load(tmp_path / "ck").entries) == {busy.id}


async def test_the_next_read_waits_for_a_settle_at_most_so_long(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await ledger.wait_for_a_settle(10.0)  # nothing in flight: at once
    entry = ledger._checkpoint.new_source("in.txt", 1, 2, b"head", 0)
    first = ledger.sent(_batch(entry.id, 0, 10))
    loop.call_later(0.02, ledger.confirmed, first)
    await ledger.wait_for_a_settle(10.0)  # returns with the confirm
    assert loop.time() - started < 5.0 and entry.offset == 10
    ledger.sent(_batch(entry.id, 10, 20))
    before = loop.time()
    await ledger.wait_for_a_settle(0.05)  # never confirmed: the limit
    assert 0.04 < loop.time() - before < 5.0
