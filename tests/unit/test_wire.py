"""Decoding messages: logship batches, plain messages from other programs, and poison."""

from __future__ import annotations

from typing import Any

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from logship.wire import ZSTD, Batch, PoisonMessage, count_newlines, decode


def batch_headers(body: bytes, start: int = 0) -> dict[str, Any]:
    return Batch("src", "in.txt", start, start + len(body), body.count(b"\n"), 1, body).headers()


def test_round_trip_of_a_batch() -> None:
    body = b"a\r\n\x00\xff\n"
    delivered = decode(batch_headers(body, 7), body)
    assert (delivered.source, delivered.start, delivered.end, delivered.lines) == ("src", 7, 13, 2)
    assert delivered.body == body


@pytest.mark.parametrize("headers", [None, {}, {"other": 1}])
def test_plain_message_gets_a_newline(headers: dict[str, Any] | None) -> None:
    delivered = decode(headers, b"hello")
    assert delivered.source is None and delivered.body == b"hello\n"


def test_plain_message_with_its_own_newlines_is_kept_as_it_is() -> None:
    delivered = decode(None, b"one\r\ntwo\n")
    assert (delivered.body, delivered.lines) == (b"one\r\ntwo\n", 2)
    assert decode(None, b"").body == b"\n"


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"x-logship-version": 99}, "bad_version"),
        ({"x-logship-start": "0"}, "bad_header"),
        ({"x-logship-start": True}, "bad_header"),
        ({"x-logship-end": 999}, "bad_range"),
        ({"x-logship-start": -1}, "bad_header"),
        ({"x-logship-source": ""}, "bad_header"),
        ({"x-logship-source": 5}, "bad_header"),
        ({"x-logship-lines": 7}, "bad_range"),
    ],
)
def test_poison_messages_are_classified(change: dict[str, Any], kind: str) -> None:
    body = b"one\ntwo\n"
    headers = {**batch_headers(body), **change}
    with pytest.raises(PoisonMessage) as error:
        decode(headers, body)
    assert error.value.kind == kind


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "x-logship-version",
                "x-logship-source",
                "x-logship-start",
                "x-logship-end",
                "x-logship-lines",
                "x-logship-ts",
                "other",
            ]
        ),
        st.one_of(
            st.integers(-5, 2**40),
            st.text(max_size=5),
            st.binary(max_size=5),
            st.booleans(),
            st.none(),
        ),
    ),
    st.binary(max_size=64),
)
def test_decode_never_fails_other_than_poison(headers: dict[str, Any], body: bytes) -> None:
    try:
        delivered = decode(headers, body)
    except PoisonMessage:
        return
    if delivered.source is None:
        assert delivered.body == (body if body.endswith(b"\n") else body + b"\n")
        assert delivered.lines == delivered.body.count(b"\n")
    else:
        assert delivered.end - delivered.start == len(delivered.body) == len(body)
        assert delivered.start >= 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"no newline at all",
        b"\n" * 10_000,
        b"short\n" * 5_000,
        b"x" * 99 + b"\n" + b"y" * 10_000,
        (b"a" * 200 + b"\n") * 300 + b"\n" * 5_000 + (b"b" * 200 + b"\n") * 300,
        bytes(range(256)) * 40,
    ],
)
def test_count_newlines_matches_bytes_count(data: bytes) -> None:
    assert count_newlines(data) == data.count(b"\n")
    for end in (0, 1, len(data) // 3, len(data) - 1, len(data) + 5):
        assert count_newlines(data, end) == data.count(b"\n", 0, max(0, end))


def test_a_zstd_body_decodes_to_the_bytes_its_range_names() -> None:
    body = b"first line\nsecond line\n" * 50
    batch = Batch("src", "/in", 100, 100 + len(body), body.count(b"\n"), 1, body)
    packed = zstandard.ZstdCompressor(level=1).compress(body)
    delivered = decode(batch.headers(), packed, ZSTD)
    assert (delivered.body, delivered.start, delivered.lines) == (body, 100, 100)


@pytest.mark.parametrize(
    ("body", "encoding", "kind"),
    [
        (zstandard.ZstdCompressor(level=1).compress(b"x\n" * 10)[:-4], ZSTD, "bad_encoding"),
        (b"\x00not zstd", ZSTD, "bad_encoding"),
        (b"x\n" * 10, "gzip", "bad_encoding"),
        # a frame claiming more than its range is refused before anything is allocated
        (zstandard.ZstdCompressor(level=1).compress(b"x\n" * 1_000_000), ZSTD, "bad_range"),
    ],
)
def test_a_body_that_does_not_decompress_to_its_range_is_poison(
    body: bytes, encoding: str, kind: str
) -> None:
    batch = Batch("src", "/in", 0, 20, 10, 1, b"x\n" * 10)
    with pytest.raises(PoisonMessage) as caught:
        decode(batch.headers(), body, encoding)
    assert caught.value.kind == kind
