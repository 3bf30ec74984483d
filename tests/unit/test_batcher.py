"""Where batches end: at a newline, at max lines, or mid-line only for over-long lines."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from producer.batcher import cut_batch


def test_cut_after_last_newline_holds_partial_line() -> None:
    cut = cut_batch(b"a\nb\npart", max_bytes=100, max_lines=100)
    assert (cut.length, cut.lines, cut.oversized) == (4, 2, False)


def test_no_newline_is_held_unless_it_fills_a_batch() -> None:
    assert cut_batch(b"partial", max_bytes=100, max_lines=10).length == 0
    cut = cut_batch(b"x" * 100, max_bytes=100, max_lines=10)
    assert (cut.length, cut.lines, cut.oversized) == (100, 0, True)


def test_final_chunk_ships_unterminated_tail() -> None:
    assert cut_batch(b"a\nend", max_bytes=100, max_lines=10, final=True).length == 5
    assert cut_batch(b"end", max_bytes=100, max_lines=10, final=True).length == 3


def test_max_lines_cuts_at_the_nth_newline() -> None:
    cut = cut_batch(b"1\n2\n3\n4\n", max_bytes=100, max_lines=3)
    assert (cut.length, cut.lines) == (6, 3)


@given(st.binary(max_size=300), st.integers(1, 300), st.integers(1, 50))
def test_cut_is_a_prefix_that_ends_on_a_newline_or_fills_the_batch(
    data: bytes, max_bytes: int, max_lines: int
) -> None:
    data = data[:max_bytes]
    cut = cut_batch(data, max_bytes=max_bytes, max_lines=max_lines)
    piece = data[: cut.length]
    assert cut.lines == piece.count(b"\n") <= max_lines
    if cut.length:
        assert piece.endswith(b"\n") or (cut.oversized and cut.length == max_bytes)
    else:
        assert b"\n" not in data and len(data) < max_bytes
