"""The lenient decoder of delivered properties (logship/lenient_decode.py), and the pins on the
library versions and internals it relies on: an upgrade of pamqp, aiormq or aio-pika fails here."""

from __future__ import annotations

import datetime
import importlib.metadata
import inspect
import struct
from collections.abc import Iterator
from typing import Any

import aio_pika
import aiormq.connection
import pamqp.frame
import pytest
from aiormq.abc import DeliveredMessage
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, constants, header
from pamqp.exceptions import UnmarshalingException

from logship import lenient_decode
from logship.lenient_decode import UNDECODABLE_HEADER, Undecodable, undecodable
from logship.wire import PoisonMessage, decode

P = commands.Basic.Properties.flags


def short(value: bytes) -> bytes:
    return struct.pack(">B", len(value)) + value


def table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A field table of long-string values, keys given as raw bytes."""
    body = b"".join(short(key) + b"S" + struct.pack(">I", len(v)) + v for key, v in entries)
    return struct.pack(">I", len(body)) + body


def header_frame(flags: int, properties: bytes, body_size: int = 5) -> bytes:
    payload = struct.pack(">HHQH", 60, 0, body_size, flags) + properties
    return struct.pack(">BHI", constants.FRAME_HEADER, 1, len(payload)) + payload + b"\xce"


def deliver_frame(routing_key: bytes) -> bytes:
    method = struct.pack(">I", commands.Basic.Deliver.index)
    args = short(b"ctag") + struct.pack(">QB", 7, 0) + short(b"logs") + short(routing_key)
    payload = method + args
    return struct.pack(">BHI", constants.FRAME_METHOD, 1, len(payload)) + payload + b"\xce"


def content_header(frame: bytes) -> header.ContentHeader:
    _, _, decoded = pamqp.frame.unmarshal(frame)
    assert isinstance(decoded, header.ContentHeader)
    return decoded


BAD_MESSAGE_ID = header_frame(
    P["content_type"] | P["headers"] | P["message_id"] | P["app_id"],
    short(b"text/plain") + table([(b"k", b"v")]) + short(b"\xff\xfe") + short(b"app"),
)
HUGE_TIMESTAMP = header_frame(
    P["timestamp"] | P["app_id"], struct.pack(">Q", 2**64 - 1) + short(b"app")
)
BAD_HEADER_KEY = header_frame(
    P["headers"] | P["message_id"], table([(b"\xff", b"v")]) + short(b"id-1")
)


@pytest.fixture
def lenient() -> Iterator[None]:
    lenient_decode.install()
    yield
    lenient_decode.uninstall()


def test_pinned_versions() -> None:
    """The patch was written against these versions: re-check NOTES and this file on upgrade."""
    found = {name: importlib.metadata.version(name) for name in lenient_decode.VERIFIED_VERSIONS}
    assert found == lenient_decode.VERIFIED_VERSIONS


def test_the_strict_library_still_chokes() -> None:
    """Without the patch each poison closes the connection; when this fails, the library became
    lenient itself and the patch may go."""
    assert not lenient_decode.installed()
    for frame in (BAD_MESSAGE_ID, HUGE_TIMESTAMP, BAD_HEADER_KEY):
        with pytest.raises(UnmarshalingException):
            pamqp.frame.unmarshal(frame)
    with pytest.raises(UnmarshalingException):
        pamqp.frame.unmarshal(deliver_frame(b"\xff"))


def test_the_patched_functions_are_where_the_frame_reader_calls_them() -> None:
    """aiormq's reader decodes through pamqp.frame.unmarshal, whose content header hands the
    properties to Basic.Properties.unmarshal(flags, data)."""
    assert "pamqp.frame.unmarshal(" in inspect.getsource(aiormq.connection.FrameReceiver)
    assert "self.properties.unmarshal(flags," in inspect.getsource(header.ContentHeader)
    assert list(inspect.signature(commands.Basic.Properties.unmarshal).parameters) == [
        "self",
        "flags",
        "data",
    ]


def test_bad_message_id_is_marked_and_the_rest_decoded(lenient: None) -> None:
    properties = content_header(BAD_MESSAGE_ID).properties
    assert properties.message_id is None
    assert properties.content_type == "text/plain"
    assert properties.app_id == "app"
    assert properties.headers is not None and properties.headers["k"] == "v"
    mark = undecodable(properties.headers)
    assert mark is not None and mark.properties == ("message_id",)
    assert mark.bad[0].raw == b"\xff\xfe"
    assert mark.describe() == "message_id=b'\\xff\\xfe' (UnicodeDecodeError)"


def test_out_of_range_timestamp_is_marked(lenient: None) -> None:
    properties = content_header(HUGE_TIMESTAMP).properties
    assert properties.timestamp is None and properties.app_id == "app"
    mark = undecodable(properties.headers)
    assert mark is not None and mark.properties == ("timestamp",)
    assert str(2**64 - 1) in mark.describe()


def test_headers_table_with_a_key_that_is_not_utf8_is_marked(lenient: None) -> None:
    properties = content_header(BAD_HEADER_KEY).properties
    assert properties.message_id == "id-1"
    assert properties.headers is not None and set(properties.headers) == {UNDECODABLE_HEADER}
    mark = undecodable(properties.headers)
    assert mark is not None and mark.properties == ("headers",)


@pytest.mark.parametrize(
    "value",
    [b"T" + struct.pack(">Q", 2**64 - 1), b"?junk"],
    ids=["timestamp-out-of-range", "unknown-type"],
)
def test_headers_table_with_a_bad_value_is_marked(lenient: None, value: bytes) -> None:
    entries = short(b"ok") + b"S" + struct.pack(">I", 2) + b"v1" + short(b"bad") + value
    frame = header_frame(
        P["headers"] | P["app_id"], struct.pack(">I", len(entries)) + entries + short(b"app")
    )
    properties = content_header(frame).properties
    assert properties.app_id == "app"
    mark = undecodable(properties.headers)
    assert mark is not None and mark.properties == ("headers",)


def test_truncated_properties_are_marked_not_raised(lenient: None) -> None:
    frame = header_frame(P["message_id"] | P["app_id"], short(b"\xff\xfe") + b"\x09ab")
    mark = undecodable(content_header(frame).properties.headers)
    assert mark is not None
    assert [(b.name, b.error) for b in mark.bad] == [
        ("message_id", "UnicodeDecodeError"),
        ("app_id", "truncated"),
    ]


def test_long_bad_values_are_shown_truncated(lenient: None) -> None:
    frame = header_frame(P["message_id"], short(b"\xff" * 200))
    mark = undecodable(content_header(frame).properties.headers)
    assert mark is not None
    assert len(mark.describe()) < 300 and "…" in mark.describe()


def test_sound_properties_decode_exactly_as_before(lenient: None) -> None:
    sound = commands.Basic.Properties(
        content_type="application/octet-stream",
        headers={"x-logship-version": 1, "x-logship-source": "s", "nested": {"a": [1, "b"]}},
        delivery_mode=2,
        message_id="s:0-10",
        timestamp=datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC),
        message_type="logship.batch",
    )
    frame = pamqp.frame.marshal(header.ContentHeader(0, 10, sound), 1)
    assert content_header(frame).properties == sound
    assert undecodable(content_header(frame).properties.headers) is None


def test_aio_pika_carries_the_mark_into_its_incoming_message(lenient: None) -> None:
    deliver = commands.Basic.Deliver("ctag", 7, False, "logs", "logs")
    delivered = DeliveredMessage(deliver, content_header(BAD_MESSAGE_ID), b"hello", None)  # type: ignore[arg-type]
    message = aio_pika.IncomingMessage(delivered)
    mark = undecodable(message.headers)
    assert mark is not None and mark.properties == ("message_id",)
    assert message.message_id is None and message.body == b"hello"


def test_routing_key_that_is_not_utf8_is_escaped(lenient: None) -> None:
    _, _, frame = pamqp.frame.unmarshal(deliver_frame(b"a\xffb"))
    assert isinstance(frame, commands.Basic.Deliver)
    assert frame.routing_key == "a\\xffb" and frame.exchange == "logs"
    assert frame.delivery_tag == 7 and frame.consumer_tag == "ctag"


def test_install_is_idempotent_and_uninstall_restores() -> None:
    original = commands.Basic.Properties.unmarshal
    lenient_decode.install()
    lenient_decode.install()
    lenient_decode.uninstall()
    assert commands.Basic.Properties.unmarshal is original
    assert "unmarshal" not in vars(commands.Basic.Deliver)
    with pytest.raises(UnmarshalingException):
        pamqp.frame.unmarshal(BAD_MESSAGE_ID)


def test_wire_decode_makes_the_mark_poison(lenient: None) -> None:
    headers = content_header(BAD_MESSAGE_ID).properties.headers
    with pytest.raises(PoisonMessage) as raised:
        decode(headers, b"hello")
    assert raised.value.kind == "undecodable_properties"
    assert "message_id=b'\\xff\\xfe'" in str(raised.value)


def test_a_header_named_like_the_mark_cannot_forge_it() -> None:
    forged = {UNDECODABLE_HEADER: "message_id"}
    assert undecodable(forged) is None
    assert decode(forged, b"line").body == b"line\n"
    assert isinstance(Undecodable(()), Undecodable)


short_text = st.text(max_size=40).filter(lambda t: len(t.encode()) < 256)


@settings(max_examples=300)
@given(flags=st.integers(0, 0xFFFF).map(lambda f: f & ~1), data=st.binary(max_size=300))
def test_any_properties_bytes_decode_without_raising(flags: int, data: bytes) -> None:
    lenient_decode.install()
    try:
        properties = commands.Basic.Properties()
        properties.unmarshal(flags, data)  # never raises: at worst everything is marked
    finally:
        lenient_decode.uninstall()


@given(
    message_id=st.none() | short_text,
    app_id=st.none() | short_text,
    headers=st.none()
    | st.dictionaries(short_text, st.integers(-(2**63), 2**63 - 1) | short_text, max_size=5),
    seconds=st.none() | st.integers(0, 2**32 - 1),
)
def test_sound_properties_are_untouched(
    message_id: str | None,
    app_id: str | None,
    headers: dict[str, Any] | None,
    seconds: int | None,
) -> None:
    timestamp = None if seconds is None else datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    sound = commands.Basic.Properties(
        message_id=message_id, app_id=app_id, headers=headers, timestamp=timestamp
    )
    frame = pamqp.frame.marshal(header.ContentHeader(0, 1, sound), 1)
    lenient_decode.install()
    try:
        decoded = content_header(frame).properties
    finally:
        lenient_decode.uninstall()
    assert decoded == content_header(frame).properties  # the strict decoder agrees
    assert undecodable(decoded.headers) is None
