"""The sink's bookkeeping of written byte ranges, checked against a plain set of offsets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.ranges import RangeSet

spans = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=40,
)


@given(spans)
def test_missing_then_add_matches_a_set_model(operations: list[tuple[int, int]]) -> None:
    ranges = RangeSet()
    covered: set[int] = set()
    for start, end in operations:
        gaps = ranges.missing(start, end)
        assert {i for s, e in gaps for i in range(s, e)} == set(range(start, end)) - covered
        assert all(s < e for s, e in gaps)
        assert gaps == sorted(gaps)
        ranges.add(start, end)
        covered |= set(range(start, end))
        merged = ranges.ranges()
        assert {i for s, e in merged for i in range(s, e)} == covered
        assert all(merged[i][1] < merged[i + 1][0] for i in range(len(merged) - 1))


def test_contiguous_end_and_duplicates() -> None:
    ranges = RangeSet()
    ranges.add(0, 10)
    ranges.add(10, 20)
    assert ranges.ranges() == [(0, 20)]
    assert ranges.contiguous_end == 20
    assert ranges.missing(5, 15) == []
    assert ranges.missing(15, 30) == [(20, 30)]


def test_bounded_when_ranges_fragment() -> None:
    ranges = RangeSet()
    for i in range(10_000):
        ranges.add(i * 10, i * 10 + 5)
    assert len(ranges) <= 4096
