"""The kernel's file events as the reader sees them: a held file is heard wherever rotation moved
it (renamed, deleted), names of the pattern and their rotations wake it and other names do not,
and a wait ends at a change made after the last read began, not at one made before."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.inotify import Inotify
from producer.waker import Waker

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")


def holding(*fds: int) -> dict[tuple[int, int], int]:
    """What the tailer says it holds: (device, inode) → descriptor."""
    return {(os.fstat(fd).st_dev, os.fstat(fd).st_ino): fd for fd in fds}


@pytest.fixture
def inotify(tmp_path: Path) -> Iterator[Inotify]:
    watcher = Inotify(str(tmp_path), "input.txt")
    assert watcher.watch_directory()
    yield watcher
    watcher.close()


def test_a_held_file_is_heard_after_it_was_renamed_and_deleted(
    tmp_path: Path, inotify: Inotify
) -> None:
    path = tmp_path / "input.txt"
    path.write_bytes(b"")
    held = os.open(path, os.O_RDONLY)
    writer = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        assert inotify.drain()  # input.txt appeared
        assert inotify.follow(holding(held))  # a new watch: the caller reads once more
        assert not inotify.follow(holding(held))
        assert not inotify.drain()
        os.write(writer, b"a\n")
        assert inotify.drain()
        os.rename(path, tmp_path / "input.txt.1")  # logrotate's rename
        assert inotify.drain()
        os.write(writer, b"b\n")  # the application still writes to the renamed file
        assert inotify.drain()
        os.unlink(tmp_path / "input.txt.1")
        assert inotify.drain()
        os.write(writer, b"c\n")  # deleted, still open on both sides
        assert inotify.drain()
        inotify.follow({})  # released: no longer watched
        inotify.drain()
        os.write(writer, b"d\n")
        assert not inotify.drain()
    finally:
        os.close(writer)
        os.close(held)


def test_a_file_held_after_one_whose_inode_was_freed_is_watched_too(
    tmp_path: Path, inotify: Inotify
) -> None:
    """The kernel drops the watch of a freed inode, and a new file may get its number (and the
    closed descriptor's): it must be watched again, not taken for the old one."""
    path = tmp_path / "input.txt"
    path.write_bytes(b"")
    held = os.open(path, os.O_RDONLY)
    inotify.follow(holding(held))
    inode = next(iter(holding(held)))
    os.close(held)
    path.unlink()  # rotated away and drained: the inode is freed
    assert inotify.drain()
    path.write_bytes(b"")
    held = os.open(path, os.O_RDONLY)
    try:
        again = {inode: held}  # as if the new file had the old one's inode number
        assert inotify.follow(again)
        inotify.drain()
        with path.open("ab") as application:
            application.write(b"a\n")
        assert inotify.drain()
    finally:
        os.close(held)


def test_names_of_the_pattern_and_their_rotations_matter_others_do_not(
    tmp_path: Path, inotify: Inotify
) -> None:
    (tmp_path / "output.txt").write_bytes(b"x\n")  # a neighbour, say the consumer's output
    (tmp_path / "notes").mkdir()
    assert not inotify.drain()
    (tmp_path / "input.txt").write_bytes(b"")  # the input appears
    assert inotify.drain()
    (tmp_path / "input.txt").rename(tmp_path / "input.txt.1")
    assert inotify.drain()
    (tmp_path / "input.txt.1").unlink()
    assert inotify.drain()


def test_a_directory_watched_again_after_it_was_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    inotify = Inotify(str(directory), "input.txt")
    try:
        assert not inotify.watch_directory()  # not there yet: the timer polls meanwhile
        directory.mkdir()
        assert inotify.watch_directory()
        directory.rename(tmp_path / "old")
        assert inotify.drain()  # the watched directory moved away
        directory.mkdir()
        assert inotify.watch_directory()
        (directory / "input.txt").write_bytes(b"")
        assert inotify.drain()
    finally:
        inotify.close()


async def test_a_wait_ends_at_a_change_after_the_read_not_at_one_before(tmp_path: Path) -> None:
    path = tmp_path / "input.txt"
    path.write_bytes(b"")
    held = os.open(path, os.O_RDONLY)
    stop = asyncio.Event()
    waker = Waker(tmp_path, str(path), poll=False, stop=stop, held=lambda: holding(held))
    waker.open()
    running = asyncio.create_task(waker.run())
    try:
        assert waker.kernel
        await waker.wait(0.01)  # watches the held file (a new watch ends a wait at once)
        with path.open("ab") as application:
            application.write(b"before\n")
            application.flush()
            waker.covered()  # a read begins: it finds "before"
            started = time.monotonic()
            await waker.wait(0.2)
            assert time.monotonic() - started >= 0.19  # nothing new: the safety net's time
            asyncio.get_running_loop().call_later(0.02, application.write, b"after\n")
            asyncio.get_running_loop().call_later(0.021, application.flush)
            started = time.monotonic()
            await waker.wait(5)
            assert time.monotonic() - started < 1  # woken by the write
    finally:
        stop.set()
        await running
        waker.close()
        os.close(held)


def test_without_proc_the_directory_hears_the_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: p != "/proc/self/fd" and real_isdir(p))
    (tmp_path / "input.txt").write_bytes(b"")
    (tmp_path / "output.txt").write_bytes(b"")
    inotify = Inotify(str(tmp_path), "input.txt")
    try:
        assert inotify.watch_directory()
        with (tmp_path / "output.txt").open("ab") as neighbour:
            neighbour.write(b"x\n")
        assert not inotify.drain()
        with (tmp_path / "input.txt").open("ab") as application:
            application.write(b"a\n")
        assert inotify.drain()
    finally:
        inotify.close()


def test_a_refused_file_watch_falls_back_to_the_directory_writes(
    tmp_path: Path, inotify: Inotify
) -> None:
    """Past fs.inotify.max_user_watches (or any refusal) a held file is not watched: the
    directory's writes are heard instead, and the refusal is told once."""
    path = tmp_path / "input.txt"
    path.write_bytes(b"")
    inotify.drain()
    assert inotify.follow({(0, 1): 10**6})  # no such descriptor: the kernel refuses the watch
    assert inotify.refused is not None
    inotify.drain()
    with path.open("ab") as application:
        application.write(b"a\n")
    assert inotify.drain()
    with (tmp_path / "output.txt").open("ab") as neighbour:
        neighbour.write(b"x\n")
    assert not inotify.drain()
