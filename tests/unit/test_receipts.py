"""Written receipts: the wire round-trips, anything malformed is refused, and a group's pieces
become one receipt per producer with touching ranges merged."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logship.receipts import (
    H_RECEIPTS_TO,
    H_RECEIPTS_WITHIN,
    ReceiptCollector,
    SourceRange,
    WrittenRange,
    WrittenReceipt,
    decode,
    encode,
    receipt_delays,
    receipts_exchange,
    receipts_to,
)

sources = st.text(min_size=1, max_size=30)


@st.composite
def written_ranges(draw: st.DrawFn) -> WrittenRange:
    start = draw(st.integers(0, 2**62))
    size = draw(st.integers(1, 2**20))
    output_start = draw(st.integers(0, 2**62))
    return WrittenRange(draw(sources), start, start + size, output_start, output_start + size)


@st.composite
def source_ranges(draw: st.DrawFn) -> SourceRange:
    start = draw(st.integers(0, 2**62))
    return SourceRange(draw(sources), start, start + draw(st.integers(1, 2**20)))


@given(
    st.builds(
        WrittenReceipt,
        st.text(max_size=40),
        st.text(max_size=80),
        st.lists(written_ranges(), max_size=5).map(tuple),
        st.lists(source_ranges(), max_size=3).map(tuple),
    )
)
def test_a_receipt_round_trips(receipt: WrittenReceipt) -> None:
    assert decode(encode(receipt)) == receipt


def test_the_wire_is_compact_json_without_duplicates_when_there_are_none() -> None:
    receipt = WrittenReceipt("c1", "/out.txt", (WrittenRange("s", 0, 10, 100, 110),))
    assert json.loads(encode(receipt)) == {
        "v": 1,
        "c": "c1",
        "o": "/out.txt",
        "r": [["s", 0, 10, 100, 110]],
    }
    assert b" " not in encode(receipt)


GOOD = {"v": 1, "c": "c", "o": "o", "r": [["s", 0, 4, 10, 14]]}


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"c": 5},
        {"o": None},
        {"r": {}},
        {"r": [["s", 0, 4, 10]]},
        {"r": [["s", 4, 4, 10, 10]]},
        {"r": [["s", 5, 4, 10, 9]]},
        {"r": [["s", -1, 4, 10, 15]]},
        {"r": [["s", 0, 4, 10, 15]]},  # four source bytes cannot fill five output bytes
        {"r": [["", 0, 4, 10, 14]]},
        {"r": [["s", True, 4, 10, 14]]},
        {"r": [["s", 0.0, 4, 10, 14]]},
        {"d": [["s", 3, 1]]},
        {"d": "x"},
    ],
)
def test_a_malformed_receipt_is_a_value_error(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="receipt"):
        decode(json.dumps(GOOD | change).encode())


@pytest.mark.parametrize(
    "body", [b"", b"\xff\xfe", b"[]", b"null", b"{", b"[" * 100_000, b"1" * (5 * 2**20)]
)
def test_bytes_that_are_no_receipt_are_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode(body)


def test_the_exchange_is_named_after_the_batches_exchange() -> None:
    assert receipts_exchange("logs") == "logs.receipts"


def test_receipts_to_reads_the_header_and_ignores_what_is_unusable() -> None:
    assert receipts_to({H_RECEIPTS_TO: "host:12"}) == "host:12"
    assert receipts_to({H_RECEIPTS_TO: b"host:12"}) == "host:12"
    for headers in (None, {}, {H_RECEIPTS_TO: ""}, {H_RECEIPTS_TO: 5}, {H_RECEIPTS_TO: "x" * 201}):
        assert receipts_to(headers) is None


def test_a_group_waits_for_its_receipt_no_longer_than_its_most_urgent_batch_allows() -> None:
    def batch(to: str | None, within: object = None) -> dict[str, object]:
        headers: dict[str, object] = {} if to is None else {H_RECEIPTS_TO: to}
        if within is not None:
            headers[H_RECEIPTS_WITHIN] = within
        return headers

    group = [
        batch("files", 100),
        batch("files", 250),
        batch("mixed", 100),
        batch("mixed"),  # an HTTP client waits for this one: the receipt goes at once
        batch(None, 100),  # wants no receipt
        batch("odd", "soon"),  # unusable: at once
        batch("long", 10**9),  # held at most 10 s
    ]
    delays = receipt_delays((receipts_to(headers), headers) for headers in group)
    assert delays == {"files": 0.1, "mixed": 0.0, "odd": 0.0, "long": 10.0}


def test_one_receipt_per_producer_with_touching_ranges_merged() -> None:
    collector = ReceiptCollector()
    assert not collector
    collector.written("p1", "a", 0, 10, 0)
    collector.written("p1", "a", 10, 20, 10)  # touches in the source and the output: merged
    collector.written("p2", "b", 5, 8, 20)
    collector.written("p1", "a", 20, 30, 23)  # touches in the source only: a range of its own
    collector.written("p1", "a", 40, 45, 33)  # a gap in the source: a range of its own
    collector.written("p1", "a", 45, 45, 38)  # empty: nothing
    collector.duplicate("p1", "a", 50, 60)
    collector.duplicate("p1", "a", 60, 70)
    collector.duplicate("p2", "b", 0, 5)
    receipts = collector.receipts("c", "out")
    assert receipts == {
        "p1": WrittenReceipt(
            "c",
            "out",
            (
                WrittenRange("a", 0, 20, 0, 20),
                WrittenRange("a", 20, 30, 23, 33),
                WrittenRange("a", 40, 45, 33, 38),
            ),
            (SourceRange("a", 50, 70),),
        ),
        "p2": WrittenReceipt(
            "c", "out", (WrittenRange("b", 5, 8, 20, 23),), (SourceRange("b", 0, 5),)
        ),
    }
    assert list(receipts["p2"].covered()) == [("b", 5, 8), ("b", 0, 5)]


def test_interleaved_sources_merge_each_with_its_own_last_range() -> None:
    collector = ReceiptCollector()
    collector.written("p", "a", 0, 10, 0)
    collector.written("p", "b", 0, 10, 10)
    collector.written("p", "a", 10, 20, 20)  # touches a's source range, not its output range
    assert collector.receipts("c", "o")["p"].ranges == (
        WrittenRange("a", 0, 10, 0, 10),
        WrittenRange("b", 0, 10, 10, 20),
        WrittenRange("a", 10, 20, 20, 30),
    )
