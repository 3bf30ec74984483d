"""The consumer's state record: rewritten in place, a torn write falls back to the previous one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from consumer.statefile import HEADER, SLOT_HEADER, StateFile, StateFileError, StateReader


def test_round_trip_and_newest_wins(tmp_path: Path) -> None:
    path = tmp_path / "s"
    state = StateFile(path, durable=True)
    assert state.load() is None
    for i in range(5):
        state.write(f"record {i}".encode())
    state.close()
    assert StateFile(path, durable=True).load() == b"record 4"


def test_torn_write_falls_back_to_the_previous_record(tmp_path: Path) -> None:
    path = tmp_path / "s"
    state = StateFile(path, durable=True)
    state.load()
    state.write(b"first")
    state.write(b"second")  # lands in the other slot
    state.close()
    capacity = HEADER.unpack_from(path.read_bytes())[2]
    # tear the newest record (sequence 2 sits in slot 0): flip a byte of its payload
    with path.open("r+b") as handle:
        handle.seek(HEADER.size + SLOT_HEADER.size)
        handle.write(b"X")
    again = StateFile(path, durable=True)
    assert again.load() == b"first"
    again.write(b"third")  # must not overwrite "first" (the only valid record)
    again.close()
    assert StateFile(path, durable=True).load() == b"third"
    assert capacity >= 64 * 1024


def test_a_record_larger_than_its_slot_rebuilds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s"
    state = StateFile(path, durable=False)
    state.load()
    state.write(b"small")
    big = os.urandom(200_000)
    state.write(big)
    state.write(big + b"!")
    state.close()
    assert StateFile(path, durable=False).load() == big + b"!"
    assert not (tmp_path / "s.tmp").exists()


def test_legacy_json_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b'{"version": 1}')
    assert StateFile(path, durable=True).load() == b'{"version": 1}'
    path.write_bytes(b"garbage that is long enough to have a header")
    with pytest.raises(StateFileError):
        StateFile(path, durable=True).load()


def test_reader_sees_each_new_record_once_and_follows_a_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "s"
    reader = StateReader(path)
    assert reader.poll() is None
    state = StateFile(path, durable=False)
    state.load()
    state.write(b"one")
    assert reader.poll() == b"one"
    assert reader.poll() is None
    state.write(b"two")
    assert reader.poll() == b"two"
    state.write(os.urandom(100_000))  # too big for the slot: the file is rebuilt (new inode)
    assert reader.poll() is not None
    state.write(b"three")
    assert reader.poll() == b"three"
    reader.close()
    state.close()
