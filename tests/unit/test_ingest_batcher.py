"""POSTed bodies into batches: touching bodies sent together while batches are in flight, cut at
the file path's limits, each body settled once every batch holding part of it is."""

from __future__ import annotations

import asyncio

from logship.wire import Batch
from producer.ingest_batcher import Batching, Confirms, IngestBatcher


class Broker:
    def __init__(self) -> None:
        self.batches: list[tuple[Batch, asyncio.Future[None]]] = []

    def submit(self, batch: Batch) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.batches.append((batch, future))
        return future


async def test_bodies_coalesce_while_a_batch_is_in_flight_and_settle_in_full() -> None:
    broker = Broker()
    released: list[int] = []
    settled: dict[str, bool] = {}
    batcher = IngestBatcher("http-x", Batching(24, 1000, 0.01), broker.submit, released.append)
    offset = 0

    def post(body: bytes, name: str) -> None:
        nonlocal offset
        confirms = Confirms(lambda ok: settled.__setitem__(name, ok))
        batcher.add(body, offset, body.count(b"\n"), confirms)
        offset += len(body)

    post(b"first\n", "a")
    await asyncio.sleep(0)  # nothing in flight: sent in this turn of the loop
    assert [bytes(b.body) for b, _ in broker.batches] == [b"first\n"]
    post(b"second\n", "b")
    post(b"third\n", "c")
    await asyncio.sleep(0.05)  # the first awaits its confirm: these two wait the linger, together
    assert [bytes(b.body) for b, _ in broker.batches] == [b"first\n", b"second\nthird\n"]
    post(b"a body longer than\na batch\n", "d")  # cut at a newline into two batches, now
    bodies = [bytes(b.body) for b, _ in broker.batches]
    assert bodies[2:] == [b"a body longer than\n", b"a batch\n"]
    assert [b.start for b, _ in broker.batches] == [0, 6, 19, 38]
    for _, future in broker.batches[:-1]:
        future.set_result(None)
    await asyncio.sleep(0)
    assert "d" not in settled  # its batch is not confirmed yet
    broker.batches[-1][1].cancel()  # abandoned at a stop
    await asyncio.sleep(0)
    assert settled["a"] is True and settled["d"] is False
    assert sum(released) == offset  # the whole window is free again


async def first_in_flight_second_waiting() -> tuple[Broker, IngestBatcher]:
    """A batcher with a 10 s linger: its first body sent and unconfirmed, the second waiting."""
    broker = Broker()
    batcher = IngestBatcher("http-x", Batching(1024, 1000, 10.0), broker.submit, lambda _n: None)
    batcher.add(b"first\n", 0, 1, Confirms(lambda _ok: None))
    await asyncio.sleep(0)
    batcher.add(b"second\n", 6, 1, Confirms(lambda _ok: None))
    return broker, batcher


async def test_a_confirm_sends_what_waits_without_waiting_for_the_linger() -> None:
    broker, batcher = await first_in_flight_second_waiting()
    batcher.add(b"third\n", 13, 1, Confirms(lambda _ok: None))
    await asyncio.sleep(0.01)
    assert len(broker.batches) == 1  # the 10 s linger holds them while the first is in flight
    broker.batches[0][1].set_result(None)  # its confirm: the broker is ready for more
    await asyncio.sleep(0)
    assert [bytes(b.body) for b, _ in broker.batches] == [b"first\n", b"second\nthird\n"]


async def test_a_cancelled_batch_sends_nothing_more() -> None:
    broker, _batcher = await first_in_flight_second_waiting()
    broker.batches[0][1].cancel()  # the publisher closing
    await asyncio.sleep(0)
    assert len(broker.batches) == 1
