"""The ingest receipts: states, written pieces from consumers, the bound and the age limit."""

from __future__ import annotations

import gc
import io

from logship.send import chunks
from producer.receipt_store import Piece, ReceiptStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_receipt_goes_pending_confirmed_written_piece_by_piece() -> None:
    store = ReceiptStore(max_receipts=10, ttl=60)
    first = store.new("s", 0, 100, 10)
    second = store.new("s", 100, 150, 5)
    assert store.get(first.id) is None  # pending: its id was not given out
    store.confirmed(first)
    assert store.get(first.id) is first and first.state == "confirmed"
    # one consumer batch covering the end of the first and all of the second
    assert store.written("s", 60, 150, Piece("c1", "/out", 60, 150, 1060, 1150)) == 2
    assert first.state == "confirmed" and second.state == "written"
    store.written("s", 0, 60, Piece("c1", "/out", 0, 60, 1000, 1060))
    assert first.state == "written"
    answer = first.as_json()
    assert answer["consumer"] == "c1" and answer["output"] == "/out"
    assert [(p.output_start, p.output_end) for p in first.pieces] == [(1000, 1060), (1060, 1100)]
    assert second.as_json()["output_start"] == 1100
    # a repeat changes nothing; another source is not ours
    store.written("s", 0, 60, Piece("c1", "/out", 0, 60, 1000, 1060))
    assert len(first.pieces) == 2
    assert store.written("other", 0, 60, Piece("c1", "/out", 0, 60, 0, 60)) == 0


async def test_a_duplicate_without_a_place_counts_and_gives_way_to_a_placed_one() -> None:
    store = ReceiptStore(max_receipts=10, ttl=60)
    receipt = store.new("s", 0, 10, 1)
    store.confirmed(receipt)
    store.written("s", 0, 10, Piece("c", "/o", 0, 10, None, None))
    assert receipt.state == "written"
    store.written("s", 0, 10, Piece("c", "/o", 0, 10, 5, 15))
    assert receipt.as_json()["output_start"] == 5


async def test_receipts_are_bounded_and_age_out() -> None:
    clock = Clock()
    store = ReceiptStore(max_receipts=3, ttl=10, clock=clock)
    made = []
    for i in range(5):
        receipt = store.new("s", i * 10, i * 10 + 10, 1, key=f"k{i}")
        store.confirmed(receipt)
        made.append(receipt)
    assert len(store) == 3 and store.get(made[0].id) is None and store.by_key("k0") is None
    assert store.get(made[4].id) is made[4] and store.by_key("k4") is made[4]
    # the evicted ones take no written notice; the kept ones still do
    assert store.written("s", 0, 50, Piece("c", "/o", 0, 50, 0, 50)) == 3
    clock.now = 11
    assert store.get(made[4].id) is None and len(store) == 0


async def test_a_waiter_ends_at_its_timeout_when_written_or_at_close() -> None:
    store = ReceiptStore(max_receipts=3, ttl=10)
    receipt = store.new("s", 0, 10, 1)
    store.confirmed(receipt)
    assert not await store.wait_written(receipt, 0.01)
    store.written("s", 0, 10, Piece("c", "/o", 0, 10, 0, 10))
    assert await store.wait_written(receipt, 5)
    other = store.new("s", 10, 20, 1)
    store.close()
    assert not await store.wait_written(other, 5)


def test_logship_send_cuts_whole_lines_and_completes_the_last() -> None:
    data = b"a\nbb\nccc\nlast"
    pieces = list(chunks(io.BufferedReader(io.BytesIO(data)), 4))
    assert b"".join(pieces) == data + b"\n"
    assert all(piece.endswith(b"\n") for piece in pieces)


async def test_settled_receipts_cost_the_garbage_collector_one_object_each() -> None:
    """Up to 100,000 receipts live for minutes: every object they hold that the collector tracks
    is scanned by every full collection, which stops the event loop (each POST waits). A settled,
    written receipt nobody waits for is one tracked object; a waiter's event goes with it."""
    store = ReceiptStore(max_receipts=20_000, ttl=60)
    gc.collect()
    before = len(gc.get_objects())
    kept = []
    for i in range(10_000):
        receipt = store.new("s", i * 10, i * 10 + 10, 1)
        store.confirmed(receipt)
        store.written("s", i * 10, i * 10 + 10, Piece("c", "/o", i * 10, i * 10 + 10, i, i + 10))
        kept.append(receipt.id)
    waited = store.get(kept[-1])
    assert waited is not None and await store.wait_written(waited, 1)
    del receipt, waited
    gc.collect()
    assert len(gc.get_objects()) - before < 10_000 * 1.1
    assert all(store.get(i) is not None for i in kept[::1000])  # all still there
