"""bytes_not_written's bookkeeping: sent minus reported written, per file, across sources,
out-of-order and repeated receipts, several consumers, and what this run never sent."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from logship.receipts import SourceRange, WrittenRange, WrittenReceipt
from producer.notwritten import MAX_SOURCES, NotWritten


def receipt(
    *ranges: tuple[str, int, int], dup: tuple[str, int, int] | None = None
) -> WrittenReceipt:
    return WrittenReceipt(
        "c",
        "out",
        tuple(WrittenRange(s, a, b, a, b) for s, a, b in ranges),
        () if dup is None else (SourceRange(*dup),),
    )


def test_sent_then_written_in_pieces_out_of_order_and_twice() -> None:
    nw = NotWritten()
    nw.sent("s", "/in", 100, 200)  # this run starts at 100 (the checkpoint)
    nw.sent("s", "/in", 200, 300)
    assert nw.value("/in") == 200
    assert nw.written(receipt(("s", 200, 300))) == {"/in"}  # the later batch first
    assert nw.value("/in") == 100
    nw.written(receipt(("s", 200, 300)))  # a repeat changes nothing
    assert nw.value("/in") == 100
    nw.written(receipt(("s", 0, 150)))  # before this run's start: only [100, 150) counts
    assert nw.value("/in") == 50
    nw.written(receipt(dup=("s", 150, 200)))  # a duplicate is durable too
    assert nw.value("/in") == 0


def test_receipts_from_several_consumers_add_up_and_others_sources_are_ignored() -> None:
    nw = NotWritten()
    nw.sent("a", "/x", 0, 10)
    nw.sent("a", "/x", 10, 20)
    nw.sent("b", "/y", 0, 5)
    assert nw.written(receipt(("a", 10, 20))) == {"/x"}  # consumer 1
    assert nw.written(receipt(("zzz", 0, 10))) == set()  # not ours
    assert (nw.value("/x"), nw.value("/y"), nw.value("/nothing")) == (10, 5, 0)
    nw.written(receipt(("a", 0, 10), ("b", 0, 5)))  # consumer 2
    assert (nw.value("/x"), nw.value("/y")) == (0, 0)


def test_a_receipt_ahead_of_what_was_sent_counts_once_it_is_sent() -> None:
    """A producer restarted with the same id gets receipts for what its previous run sent
    beyond the checkpoint before it sends those bytes again."""
    nw = NotWritten()
    nw.sent("s", "/in", 0, 10)
    nw.written(receipt(("s", 0, 30)))
    assert nw.value("/in") == 0
    nw.sent("s", "/in", 10, 30)
    assert nw.value("/in") == 0
    nw.sent("s", "/in", 30, 40)
    assert nw.value("/in") == 10


def test_a_rotated_source_counts_under_its_path_until_written_then_is_forgotten() -> None:
    nw = NotWritten()
    nw.sent("old", "/in", 0, 10)
    nw.sent("new", "/in", 0, 5)  # the file was rotated: a new source at the same path
    assert nw.value("/in") == 15
    nw.written(receipt(("old", 0, 10)))
    assert nw.value("/in") == 5
    assert len(nw) == 1  # the old one is forgotten: memory stays bounded
    nw.written(receipt(("new", 0, 5)))
    assert nw.value("/in") == 0 and len(nw) == 1  # the newest stays


def test_sources_are_bounded() -> None:
    nw = NotWritten()
    for i in range(MAX_SOURCES + 5):
        nw.sent(f"s{i}", f"/p{i}", 0, 1)
    assert len(nw) == MAX_SOURCES
    assert nw.value("/p0") == 0 and nw.value(f"/p{MAX_SOURCES + 4}") == 1


@given(
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
    st.lists(st.tuples(st.integers(0, 800), st.integers(1, 100)), max_size=30),
)
def test_the_value_is_sent_bytes_no_receipt_covered(
    sizes: list[int], ranges: list[tuple[int, int]]
) -> None:
    nw = NotWritten()
    offset = first = 7
    for size in sizes:
        nw.sent("s", "/in", offset, offset + size)
        offset += size
    covered: set[int] = set()
    for start, length in ranges:
        nw.written(receipt(("s", start, start + length)))
        covered.update(range(start, start + length))
    assert nw.value("/in") == len(set(range(first, offset)) - covered)
