"""File identity: digests of a file's first bytes and of the bytes just before an offset, which
names in a directory are rotations of the input, and opening a path without ever blocking on it."""

from __future__ import annotations

import array
import errno
import fcntl
import gzip
import hashlib
import os
import re
import stat
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

# the first bytes of a file that name it (with dev and inode) after a restart
HEAD_BYTES = 1024
# the bytes just before an offset that must still be there for the file to be the same file: a
# rewrite that starts with the same banner differs there
BEFORE_BYTES = 128

COMPRESSED_SUFFIXES = (".gz", ".xz", ".bz2", ".zst")

_FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long): the inode's generation number


def file_generation(fd: int) -> int:
    """The generation number of the open file's inode (ext4, xfs, btrfs): a new file that gets
    a deleted one's inode number gets another generation. Inode numbers are soon reused, and a
    new file may begin with the same bytes as the old one (a short fingerprint, the start of a
    half line: model chaos seeds 610010059, 620011227, 630012291). 0 where the file system does
    not say (tmpfs, overlayfs...): inode numbers and bytes are then all there is."""
    buf = array.array("l", [0])
    try:
        fcntl.ioctl(fd, _FS_IOC_GETVERSION, buf, True)
    except OSError:
        return 0
    return buf[0] & 0xFFFFFFFF


# what logrotate and its kin append to a rotated file's name: a number (`app.log.1`) or a date
# (`app.log-20261201`, `app.log-2026-12-01`, `app.log-20261201-1733011200`, `app.log-1733011200`),
# then possibly a compression suffix
_NUMBER = r"\.(?P<number>\d{1,6})"
_DATE = (
    r"[-.](?P<date>(?:19|20|21)\d{6}(?:\d{2}){0,3}"
    r"|(?:19|20|21)\d{2}-\d{2}-\d{2}(?:[-_T]\d{2}(?:[-:]?\d{2}){0,2})?"
    r"|1\d{9})(?:-\d{1,10})?"
)
_COMPRESSION = r"(?P<compressed>\.(?:gz|xz|bz2|zst))?"


class NotRegularFile(OSError):
    """The path names something that is not a regular file (a FIFO, a socket, a device or a
    directory): never read, never waited on."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"{path} is a {kind}, not a regular file", path)
        self.path = path
        self.kind = kind


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISREG, "regular file"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """Open a regular file read-only. Non-blocking, so a FIFO never holds the event loop inside
    open(); the kind is checked on the open descriptor before anything is read. Raises
    NotRegularFile for anything else, FileNotFoundError and PermissionError as they come."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ENXIO:  # a socket: open() refuses it
            raise NotRegularFile(path, "socket") from None
        raise
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFile(path, file_kind(st.st_mode))
    return fd, st


Opened = tuple[int, str, os.stat_result]


def open_if(path: str, wanted: Callable[[int, int], bool], *, close: bool = False) -> Opened | None:
    """The file opened (never blocking) if `wanted(fd, size)` says so (closed again if `close`);
    else None, closed."""
    try:
        fd, st = open_regular(path)
    except OSError:
        return None
    try:
        if wanted(fd, st.st_size):
            if close:
                os.close(fd)
            return fd, path, st
    except OSError:
        pass
    os.close(fd)
    return None


def file_clock_ns() -> int:
    """Now, on the clock the kernel stamps file times with (the coarse one on Linux): a file
    written before this moment never has a later mtime."""
    coarse = getattr(time, "CLOCK_REALTIME_COARSE", None)
    return time.clock_gettime_ns(coarse) if coarse is not None else time.time_ns()


def bytes_before(fd: int, offset: int, length: int = BEFORE_BYTES) -> bytes:
    """The up to `length` bytes of the open file just before `offset` (fewer if it is shorter)."""
    start = max(0, offset - length)
    return os.pread(fd, offset - start, start)


def gzip_copy_size(path: str, head_len: int, head_sha: str) -> int | None:
    """The uncompressed size of a gzip file that starts with the fingerprinted bytes (from its
    ISIZE trailer, exact below 4 GiB), or None: how much a compressed copy held that we lost."""
    if not head_len or not path.endswith(".gz"):
        return None
    try:
        with gzip.open(path, "rb") as stream:
            if digest(stream.read(head_len)) != head_sha:
                return None
        with open(path, "rb") as raw:
            raw.seek(-4, os.SEEK_END)
            return int.from_bytes(raw.read(4), "little")
    except (OSError, EOFError, zlib.error):
        return None


@dataclass(frozen=True)
class Rotation:
    """A file whose name says it is a rotation of an input file."""

    path: str
    # among rotations written at the same moment, older ones sort first: a higher number is
    # older (`.2` before `.1`), an earlier date is older
    age_key: tuple[int, str]
    compressed: bool


def rotation_of(input_name: str, name: str, path: str = "") -> Rotation | None:
    """The rotation `name` (at `path`) is of the file named `input_name`, or None if not one.

    >>> rotation_of("app.log", "app.log.2").age_key
    (-2, '')
    >>> rotation_of("app.log", "app.log-20261201.gz").compressed
    True
    >>> rotation_of("app.log", "app.log.bak") is None, rotation_of("app.log", "other.1") is None
    (True, True)
    """
    if not name.startswith(input_name) or name == input_name:
        return None
    pattern = rf"(?:{_NUMBER}|{_DATE}){_COMPRESSION}"
    match = re.fullmatch(pattern, name[len(input_name) :])
    if match is None:
        return None
    number = match.group("number")
    age_key = (-int(number), "") if number is not None else (0, match.group("date"))
    return Rotation(path or name, age_key, match.group("compressed") is not None)
