"""The state record encoded with each source's part kept between records is byte for byte what
json.dumps gives for the same state, whatever changed in between."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.ranges import RangeSet
from consumer.staterecord import RecordEncoder


def plain(
    head: dict[str, Any],
    sources: dict[str, RangeSet],
    touched: dict[str, float],
    tail: dict[str, Any],
    instead: dict[str, list[tuple[int, int]] | None] | None = None,
) -> bytes:
    listed: dict[str, Any] = {k: v.ranges() for k, v in sources.items()}
    for source, before in (instead or {}).items():
        if before is None:
            listed.pop(source, None)
        else:
            listed[source] = before
    state = {**head, "sources": listed, "touched": touched, **tail}
    return json.dumps(state, separators=(",", ":")).encode()


HEAD = {"version": 1, "size": 4711, "ino": 12}


def test_the_same_bytes_as_json_dumps_across_changes() -> None:
    encoder = RecordEncoder()
    sources = {"a": RangeSet([(0, 10)]), 'b"\u00e9\n': RangeSet([(0, 5), (7, 9)])}
    touched = {"a": 1.5, 'b"\u00e9\n': time.time()}
    tail = {"archive": {"stream": "logs.archive", "offset": 3}}
    assert encoder.encode(HEAD, sources, touched, tail) == plain(HEAD, sources, touched, tail)
    sources["a"].add(10, 20)  # changed in place
    touched["a"] = 2.25
    assert encoder.encode(HEAD, sources, touched, {}) == plain(HEAD, sources, touched, {})
    sources['b"\u00e9\n'] = RangeSet([(0, 1)])  # replaced (a rollback)
    sources["c"] = RangeSet([(3, 4)])
    instead = {"c": None, "a": [(0, 10)]}  # a plan claimed in memory, not written
    got = encoder.encode(HEAD, sources, touched, {}, instead=instead)
    assert got == plain(HEAD, sources, touched, {}, instead)
    del sources["a"], touched["a"]  # pruned
    assert encoder.encode(HEAD, sources, touched, {}) == plain(HEAD, sources, touched, {})
    assert json.loads(encoder.encode(HEAD, {}, {}, {})) == {**HEAD, "sources": {}, "touched": {}}


ranges = st.lists(st.tuples(st.integers(0, 10**12), st.integers(1, 10**6)), max_size=4)
step = st.tuples(
    st.sampled_from(["add", "replace", "drop", "touch"]),
    st.text(max_size=3),
    ranges,
    st.floats(0, 2e9, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=30))
def test_any_sequence_of_changes_encodes_as_json_dumps(steps: list[Any]) -> None:
    encoder = RecordEncoder()
    sources: dict[str, RangeSet] = {}
    touched: dict[str, float] = {}
    for action, source, spans, at in steps:
        pairs = [(start, start + length) for start, length in spans]
        if action == "add":
            target = sources.setdefault(source, RangeSet())
            for start, end in pairs:
                target.add(start, end)
        elif action == "replace":
            sources[source] = RangeSet(pairs)
        elif action == "drop":
            sources.pop(source, None)
            touched.pop(source, None)
        else:
            touched[source] = at
        assert encoder.encode(HEAD, sources, touched, {}) == plain(HEAD, sources, touched, {})
