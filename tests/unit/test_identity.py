"""File identity without a broker: which names are rotations of the input, and opening a path
that is not a regular file without blocking."""

from __future__ import annotations

import doctest
import os
import socket
import time
from pathlib import Path

import pytest

import producer.identity
from producer.identity import NotRegularFile, open_regular, rotation_of


@pytest.mark.parametrize(
    "name",
    [
        "app.log.1",
        "app.log.12",
        "app.log.1.gz",
        "app.log.3.zst",
        "app.log-20261201",
        "app.log-2026120113",
        "app.log-2026-12-01",
        "app.log-2026-12-01-13:05:07",
        "app.log-20261201.xz",
        "app.log-20261201-1733011200",
        "app.log-1733011200.bz2",
        "app.log.20261201",
    ],
)
def test_names_rotation_gives_the_input(name: str) -> None:
    assert rotation_of("app.log", name) is not None


@pytest.mark.parametrize(
    "name",
    [
        "app.log",
        "app.log.bak",
        "app.log.1.tmp",
        "app.log.swp",
        "app.log1",
        "app.logs.1",
        "app.log.gz",
        "app.log-old",
        "app.log.1234567",
        "app.log-123",
        "other.log.1",
        "xapp.log.1",
    ],
)
def test_other_names_are_not_rotations(name: str) -> None:
    assert rotation_of("app.log", name) is None


def test_rotations_sort_oldest_first_and_know_compression() -> None:
    names = ["app.log.1", "app.log.3", "app.log.2"]
    keys = sorted(names, key=lambda n: rotation_of("app.log", n).age_key)  # type: ignore[union-attr]
    assert keys == ["app.log.3", "app.log.2", "app.log.1"]
    dated = ["app.log-20261202", "app.log-20261130"]
    assert sorted(dated, key=lambda n: rotation_of("app.log", n).age_key) == dated[::-1]  # type: ignore[union-attr]
    assert rotation_of("app.log", "app.log.1.gz").compressed  # type: ignore[union-attr]
    assert not rotation_of("app.log", "app.log.1").compressed  # type: ignore[union-attr]


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(producer.identity).failed == 0


def test_special_files_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    started = time.monotonic()
    kinds = {}
    for path in (fifo, sock_path, tmp_path, Path("/dev/null")):
        with pytest.raises(NotRegularFile) as refused:
            open_regular(str(path))
        kinds[path.name] = refused.value.kind
    sock.close()
    assert time.monotonic() - started < 1, "a FIFO without a writer must not block open()"
    assert kinds == {
        "fifo": "FIFO",
        "sock": "socket",
        tmp_path.name: "directory",
        "null": "character device",
    }
    regular = tmp_path / "file"
    regular.write_bytes(b"x")
    fd, st = open_regular(str(regular))
    os.close(fd)
    assert st.st_size == 1
