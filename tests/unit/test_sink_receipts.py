"""What a written group tells its producers: the sink's plan records where each new piece went
and which bytes were written before, and `receipts_of` turns that into one receipt per producer
whose output ranges hold exactly the source bytes they name; the sender merges the receipts to a
producer that wait while one to it awaits its confirm, or for as long as the producer said they
may."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import aio_pika
from hypothesis import given
from hypothesis import strategies as st

from consumer.receipts import ReceiptSender, receipts_of
from consumer.sink import Plan, Sink
from logship.config import AmqpSettings
from logship.receipts import SourceRange, WrittenRange, WrittenReceipt, decode
from logship.wire import Delivered


def ranged(source: str, start: int, body: bytes) -> Delivered:
    return Delivered(source, start, start + len(body), body.count(b"\n"), None, body)


def commit(sink: Sink, messages: list[Delivered], to: list[str | None]) -> Plan:
    plan = sink.plan(messages, to)
    sink.commit(plan)
    return plan


def test_pieces_land_where_the_receipt_says_and_repeats_are_named(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "out.txt", fsync=False)
    sink.open()
    sink.commit(sink.plan([Delivered(None, 0, 4, 1, None, b"xyz\n")]))  # someone else's line
    first = commit(sink, [ranged("a", 0, b"a0\na1\n")], ["p"])
    assert receipts_of(first, sink.written_at(first), "c", "out")["p"].ranges == (
        WrittenRange("a", 0, 6, 4, 10),
    )
    plan = commit(
        sink,
        [
            ranged("a", 3, b"a1\na2\n"),  # half written before
            Delivered(None, 0, 6, 1, None, b"plain\n"),
            ranged("b", 0, b"b0\n"),
            ranged("a", 9, b"a3\n"),
            ranged("c", 0, b"c0\n"),  # nobody asked
        ],
        ["p", None, "q", "p", None],
    )
    receipts = receipts_of(plan, sink.written_at(plan), "c", "out")
    assert receipts["p"].ranges == (
        WrittenRange("a", 6, 9, 10, 13),
        WrittenRange("a", 9, 12, 22, 25),
    )
    assert receipts["p"].duplicates == (SourceRange("a", 3, 6),)
    assert receipts["q"].ranges == (WrittenRange("b", 0, 3, 19, 22),)
    assert set(receipts) == {"p", "q"}
    sink.close()
    output = (tmp_path / "out.txt").read_bytes()
    assert output[10:13] == b"a2\n" and output[22:25] == b"a3\n" and output[19:22] == b"b0\n"


def test_without_receipts_to_the_plan_records_nothing(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "out.txt", fsync=False)
    sink.open()
    plan = sink.plan([ranged("a", 0, b"x\n")])
    assert plan.spans is None and plan.repeats is None
    assert receipts_of(plan, 0, "c", "out") == {}


def test_bytes_a_copy_took_are_reported_without_a_place() -> None:
    plan = Plan(bytes=10, spans=[("p", "a", 0, 6, 0), ("p", "a", 6, 10, 6)], repeats=[], skipped=8)
    receipt = receipts_of(plan, -8, "c", "out")["p"]
    assert receipt.duplicates == (SourceRange("a", 0, 8),)
    assert receipt.ranges == (WrittenRange("a", 8, 10, 0, 2),)


@given(
    st.lists(
        st.tuples(st.sampled_from("ab"), st.integers(0, 40), st.integers(1, 12), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_every_receipt_range_holds_its_source_bytes(
    batches: list[tuple[str, int, int, bool]],
) -> None:
    """Against a plain model: the sources are known byte strings; after any mix of new,
    repeated and overlapping batches, each written range in the output is the source's bytes,
    and written plus repeated ranges cover every byte asked about."""
    text = {s: bytes((ord(s) * 7 + i) % 256 for i in range(60)) for s in "ab"}
    with tempfile.TemporaryDirectory() as directory:
        sink = Sink(Path(directory) / "out.txt", fsync=False)
        sink.open()
        asked: set[tuple[str, int]] = set()
        found: set[tuple[str, int]] = set()
        for source, start, size, wants in batches:
            end = min(60, start + size)
            plan = commit(
                sink, [ranged(source, start, text[source][start:end])], ["p" if wants else None]
            )
            if wants:
                asked.update((source, i) for i in range(start, end))
            for receipt in receipts_of(plan, sink.written_at(plan), "c", "o").values():
                for s, a, b in receipt.covered():
                    found.update((s, i) for i in range(a, b))
                output = (Path(directory) / "out.txt").read_bytes()
                for w in receipt.ranges:
                    assert output[w.output_start : w.output_end] == text[w.source][w.start : w.end]
        sink.close()
        assert found == asked


class HeldExchange:
    """Stands in for the receipts exchange: every publish waits until the test confirms it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, WrittenReceipt]] = []
        self.confirms: list[asyncio.Future[None]] = []

    async def publish(self, message: aio_pika.Message, routing_key: str, **_: object) -> None:
        self.sent.append((routing_key, decode(message.body)))
        confirm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirms.append(confirm)
        await confirm


def written(start: int, end: int, output: str = "out") -> WrittenReceipt:
    return WrittenReceipt("c", output, (WrittenRange("s", start, end, 100 + start, 100 + end),))


async def test_receipts_to_a_producer_wait_merged_while_one_awaits_its_confirm() -> None:
    counted: list[str] = []
    sender = ReceiptSender(AmqpSettings(), name="test", count=counted.append)
    exchange = HeldExchange()
    sender._exchange = exchange  # type: ignore[assignment]  # what run() declares
    sender.send({"p": written(0, 10)})
    await asyncio.sleep(0)
    sender.send({"p": written(10, 20), "q": written(0, 5)})  # q has nothing in flight: goes
    sender.send({"p": written(20, 30)})
    await asyncio.sleep(0)
    assert [(to, r.ranges[0].start) for to, r in exchange.sent] == [("p", 0), ("q", 0)]
    exchange.confirms[0].set_result(None)  # p's first receipt confirmed: the held one goes
    await asyncio.sleep(0.01)
    assert exchange.sent[2] == ("p", written(10, 30))  # two groups, one touching range
    sender.send({"p": written(30, 40, output="out.1")})  # held behind the one in flight
    sender.send({"p": written(40, 50)})  # another output than the held one: that one goes
    await asyncio.sleep(0.01)
    assert exchange.sent[3] == ("p", written(30, 40, output="out.1"))
    for confirm in exchange.confirms[1:]:
        confirm.set_result(None)
    await asyncio.sleep(0.01)
    assert exchange.sent[4] == ("p", written(40, 50))
    for confirm in exchange.confirms[4:]:
        confirm.set_result(None)
    await asyncio.sleep(0.01)
    assert len(exchange.sent) == 5 and counted.count("sent") == 5


async def test_receipts_that_may_wait_go_merged_at_their_time_or_with_an_urgent_one() -> None:
    counted: list[str] = []
    sender = ReceiptSender(AmqpSettings(), name="test", count=counted.append)
    exchange = HeldExchange()
    sender._exchange = exchange  # type: ignore[assignment]  # what run() declares
    sender.send({"p": written(0, 10)}, {"p": 0.05})
    sender.send({"p": written(10, 20)}, {"p": 0.05})
    await asyncio.sleep(0.02)
    assert exchange.sent == []  # a tailed file's receipts wait for company
    await asyncio.sleep(0.06)
    assert exchange.sent == [("p", written(0, 20))]  # at their time, as one
    exchange.confirms[0].set_result(None)
    sender.send({"p": written(20, 30)}, {"p": 0.05})
    sender.send({"p": written(30, 40)}, {"p": 0.0})  # an HTTP client waits: all go now
    await asyncio.sleep(0.01)
    assert exchange.sent[1] == ("p", written(20, 40))
    exchange.confirms[1].set_result(None)
    sender.send({"p": written(40, 50)}, {"p": 5.0})
    await asyncio.sleep(0.01)
    sender.flush()  # stopping: what waits for its time goes at once
    await asyncio.sleep(0.01)
    assert exchange.sent[2] == ("p", written(40, 50))
    exchange.confirms[2].set_result(None)
    await asyncio.sleep(0.01)
    assert counted.count("sent") == 3
