"""Lenient decoding of what RabbitMQ delivers: a message whose properties the AMQP client library
cannot decode reaches the consumer marked as undecodable, instead of closing the connection.

Why this patch exists (pamqp 4.0.1 under aiormq 7.2.4, see shared NOTES): pamqp decodes every
message property strictly while aiormq's frame reader reads the content header. A `message_id` (or
any short string) that is not valid UTF-8, a `timestamp` beyond what `datetime` holds, or a headers
table with a key that is not UTF-8 raises inside that reader, before any consumer callback runs:
the connection closes, the broker delivers the same message to the next connection, and a classic
queue never gets past it. RabbitMQ accepts all three, and any program may publish them (pika sends
raw bytes in `message_id`).

The narrowest place to intervene is `pamqp.commands.Basic.Properties.unmarshal`, which decodes the
properties of one content header and nothing else. The wrapper runs the original; only when it
raises does it decode each property on its own, keep what decodes, leave the rest unset, and put
an `Undecodable` record in the headers under UNDECODABLE_HEADER. That record survives aio-pika's
copy of the properties into its IncomingMessage (which keeps no reference to the content header),
and no value decoded from the wire is ever an `Undecodable`, so a publisher cannot forge it. The
consumer dead-letters such a delivery by rejecting it: the broker then keeps the original bytes.

Method frames carrying a delivery (Basic.Deliver, Basic.GetOk, Basic.Return) hold the exchange and
routing key as short strings too; a routing key that is not UTF-8 (possible through a fanout
exchange such as the dead-letter one) gets the same wrapper, decoding those names with
backslash escapes: they are labels, the message itself is intact.

`install()` is called explicitly at program start (never on import). tests/unit/test_lenient_decode
pins the library versions and the behaviour this relies on, so an upgrade fails there loudly.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pamqp import base, commands, decode

log = logging.getLogger("logship.lenient_decode")

UNDECODABLE_HEADER = "x-logship-undecodable"
# the versions whose strict decoding this works around, and whose internals it relies on
VERIFIED_VERSIONS = {"pamqp": "4.0.1", "aiormq": "7.2.4", "aio-pika": "10.2.1"}
_SHOWN_BYTES = 48

_Unmarshal = Callable[..., None]
_DELIVERY_FRAMES: tuple[type[base.Frame], ...] = (
    commands.Basic.Deliver,
    commands.Basic.GetOk,
    commands.Basic.Return,
)
_originals: dict[type[Any], _Unmarshal] = {}


@dataclass(frozen=True, slots=True)
class BadProperty:
    """One property that could not be decoded: its name, its raw value bytes (without the length
    prefix) and why."""

    name: str
    raw: bytes
    error: str

    def describe(self) -> str:
        if self.name == "timestamp" and len(self.raw) == 8:
            shown = str(struct.unpack(">Q", self.raw)[0])
        else:
            shown = repr(self.raw[:_SHOWN_BYTES]) + ("…" if len(self.raw) > _SHOWN_BYTES else "")
        return f"{self.name}={shown} ({self.error})"


@dataclass(frozen=True, slots=True)
class Undecodable:
    """The mark left in the headers of a delivery whose properties did not all decode."""

    bad: tuple[BadProperty, ...]

    @property
    def properties(self) -> tuple[str, ...]:
        return tuple(item.name for item in self.bad)

    def describe(self) -> str:
        return ", ".join(item.describe() for item in self.bad)


def undecodable(headers: Mapping[str, Any] | None) -> Undecodable | None:
    """The mark of a delivery whose properties did not decode, or None for a sound one."""
    if not headers:
        return None
    mark = headers.get(UNDECODABLE_HEADER)
    return mark if isinstance(mark, Undecodable) else None


# bytes a property occupies, from its type: a length prefix or a fixed width
_PREFIX = {"shortstr": (1, ">B"), "longstr": (4, ">I"), "table": (4, ">I")}
_FIXED = {"octet": 1, "short": 2, "long": 4, "longlong": 8, "timestamp": 8}


def _extent(data: bytes, data_type: str) -> tuple[int, int] | None:
    """(prefix length, total length) of the next value, or None when data is cut short."""
    if data_type in _FIXED:
        size = _FIXED[data_type]
        return (0, size) if len(data) >= size else None
    if data_type in _PREFIX:
        prefix, fmt = _PREFIX[data_type]
        if len(data) < prefix:
            return None
        total = prefix + int(struct.unpack(fmt, data[:prefix])[0])
        return (prefix, total) if len(data) >= total else None
    return None


def decode_properties_leniently(
    properties: commands.Basic.Properties, flags: int, data: bytes
) -> Undecodable | None:
    """Decode each property present in `flags` on its own; those that fail stay None and are
    returned in the mark (None when everything decoded)."""
    bad: list[BadProperty] = []
    for name in properties.__slots__:
        setattr(properties, name, "" if name == "cluster_id" else None)
    for name in properties.__slots__:
        if not flags & properties.flags[name]:
            continue
        data_type = str(getattr(type(properties), "_" + name))
        extent = _extent(data, data_type)
        if extent is None:  # cut short: nothing after this point can be located
            bad.append(BadProperty(name, bytes(data[:_SHOWN_BYTES]), "truncated"))
            break
        prefix, total = extent
        try:
            _, value = decode.by_type(data[:total], data_type)
        # any failure at all: this is the point of the function, and it is not swallowed (the
        # property is named in the mark, and the delivery is dead-lettered by the consumer)
        except Exception as error:
            bad.append(BadProperty(name, bytes(data[prefix:total]), type(error).__name__))
            value = None
        setattr(properties, name, value)
        data = data[total:]
    return Undecodable(tuple(bad)) if bad else None


def _lenient_properties_unmarshal(self: commands.Basic.Properties, flags: int, data: bytes) -> None:
    try:
        _originals[commands.Basic.Properties](self, flags, data)
    except Exception:  # any failure at all: decoded again, property by property
        _mark(self, flags, data)


def _mark(properties: commands.Basic.Properties, flags: int, data: bytes) -> None:
    mark = decode_properties_leniently(properties, flags, data)
    if mark is None:  # the strict pass failed on something the lenient one accepts
        mark = Undecodable((BadProperty("properties", bytes(data[:_SHOWN_BYTES]), "strict"),))
    headers: dict[str, Any] = dict(properties.headers or {})
    headers[UNDECODABLE_HEADER] = mark
    properties.headers = headers


def _lenient_short_str(value: bytes) -> tuple[int, str]:
    length = value[0]
    return length + 1, value[1 : length + 1].decode("utf-8", "backslashreplace")


def _lenient_frame_unmarshal(self: base.Frame, data: bytes) -> None:
    try:
        _originals[type(self)](self, data)
    except UnicodeDecodeError:
        _unmarshal_escaped(self, data)
        log.warning("amqp_name_not_utf8", extra={"frame": self.name})


def _unmarshal_escaped(frame: base.Frame, data: bytes) -> None:
    """base.Frame.unmarshal, with short strings that are not UTF-8 kept as escaped text."""
    offset, processing_bitset = 0, False
    for argument in frame.__slots__:
        data_type = frame.amqp_type(argument)
        if processing_bitset and (data_type != "bit" or offset == 8):
            data = data[1:]
            offset = 0
            processing_bitset = False
        consumed: int
        value: Any
        if data_type == "shortstr":
            consumed, value = _lenient_short_str(data)
        else:
            consumed, value = decode.by_type(data, data_type, offset)
        if data_type == "bit":
            offset += 1
            processing_bitset = True
            consumed = 0
        setattr(frame, argument, value)
        if consumed:
            data = data[consumed:]


def install() -> None:
    """Make delivery decoding lenient, for the whole process. Idempotent."""
    for cls, lenient in _patches():
        if cls not in _originals:
            _originals[cls] = cls.unmarshal
            cls.unmarshal = lenient


def _patches() -> list[tuple[Any, _Unmarshal]]:
    patches: list[tuple[Any, _Unmarshal]] = [
        (commands.Basic.Properties, _lenient_properties_unmarshal)
    ]
    return patches + [(frame, _lenient_frame_unmarshal) for frame in _DELIVERY_FRAMES]


def uninstall() -> None:
    """Restore the strict decoders (for tests)."""
    for cls, original in _originals.items():
        if original is getattr(cls.__mro__[1], "unmarshal", None):
            del cls.unmarshal  # it was inherited
        else:
            cls.unmarshal = original
    _originals.clear()


def installed() -> bool:
    return bool(_originals)
