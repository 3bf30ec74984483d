"""The kernel's file events (Linux inotify, through libc): one descriptor, watches on the input
directory and on the files the tailer holds open, and a non-blocking drain that says whether
anything the tailer cares about happened. Knows nothing of asyncio or of tailing."""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import os
import struct

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# a file the tailer holds: written to or truncated (also after it was renamed or deleted: the
# watch is on the inode, reached through /proc/self/fd, so a rotated file is still heard)
FILE_EVENTS = IN_MODIFY | IN_ATTRIB
# the directory: names appearing, moving and going (rotation, a new file of a glob); writes come
# from the files' own watches, so the directory's IN_MODIFY would only double them
DIRECTORY_EVENTS = (
    IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
_READ_SIZE = 64 * 1024


def wanted_name(name: str, pattern: str) -> bool:
    """A name of the input pattern, or a rotation of one (input.txt.1, input.txt-2024...): what
    a directory event must name to wake the reader."""
    return fnmatch.fnmatch(name, pattern) or name.startswith(pattern.split("*")[0] or "\0")


class InotifyUnavailable(OSError):
    """No inotify here (not Linux, no libc symbol, or out of instances): poll instead."""


def _libc() -> ctypes.CDLL:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError) as error:
        raise InotifyUnavailable(errno.ENOSYS, f"inotify is not available: {error}") from None
    return libc


class Inotify:
    """One inotify descriptor. `directory` is watched by name (the pattern says which names
    matter); files are watched by the descriptors the tailer holds (`follow`)."""

    def __init__(self, directory: str, pattern: str) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise InotifyUnavailable(code, f"inotify_init1: {os.strerror(code)}")
        self.fd: int = fd
        self._directory = directory or "."
        self._pattern = pattern
        self._directory_wd: int | None = None
        # held file (device, inode) → its watch, and back: by inode, not by descriptor, since
        # a descriptor closed with its file is soon another file's
        self._file_wds: dict[tuple[int, int], int] = {}
        self._wd_files: dict[int, tuple[int, int]] = {}
        # without /proc (a minimal container), or once a file's watch was refused (say past
        # fs.inotify.max_user_watches), the directory's writes are heard instead (a file
        # rotated out of it then only by the timer)
        self._by_descriptor = os.path.isdir("/proc/self/fd")
        self._directory_events = DIRECTORY_EVENTS | (0 if self._by_descriptor else IN_MODIFY)
        self.refused: str | None = None  # why a file's watch was refused, once one was

    def _add(self, path: str, mask: int) -> int | None:
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask))
        return wd if wd >= 0 else None

    def watch_directory(self) -> bool:
        """Watch the directory if it is not watched (it may not exist yet, or was removed):
        True when a watch was added now."""
        if self._directory_wd is not None:
            return False
        self._directory_wd = self._add(self._directory, self._directory_events)
        return self._directory_wd is not None

    def follow(self, held: dict[tuple[int, int], int]) -> bool:
        """Watch the files held open (`held`: (device, inode) → a descriptor of it), stop
        watching the rest: True when a watch was added (what was written before it was heard
        by no one: read once more)."""
        added = False
        for inode in held.keys() - self._file_wds.keys() if self._by_descriptor else ():
            wd = self._add(f"/proc/self/fd/{held[inode]}", FILE_EVENTS)
            if wd is None:
                self._hear_writes_in_directory(os.strerror(ctypes.get_errno()))
                return True
            self._file_wds[inode] = wd
            self._wd_files[wd] = inode
            added = True
        for inode in self._file_wds.keys() - held.keys():
            wd = self._file_wds.pop(inode)
            del self._wd_files[wd]
            self._libc.inotify_rm_watch(self.fd, wd)
        return added

    def _hear_writes_in_directory(self, reason: str) -> None:
        """A file's watch was refused: from now on the directory's writes are heard (the
        watch's mask replaced) and files are no longer watched one by one."""
        self.refused = reason
        self._by_descriptor = False
        self._directory_events |= IN_MODIFY
        if self._directory_wd is not None:
            self._directory_wd = self._add(self._directory, self._directory_events)

    def drain(self) -> bool:
        """Read every event waiting; True if one of them matters: a held file changed, a name
        of the pattern appeared, moved or went, the directory itself went, or events were lost
        (the queue overflowed)."""
        wanted = False
        while True:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return wanted
            wanted = self._parse(data) or wanted

    def _parse(self, data: bytes) -> bool:
        wanted = False
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            offset = start + length
            if mask & IN_Q_OVERFLOW:
                wanted = True
            elif wd != self._directory_wd:
                wanted = self._file_event(wd, mask) or wanted
            elif mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                self._directory_wd = None  # gone or moved: watched again by the next look
                wanted = True
            elif wanted_name(os.fsdecode(data[start:offset].rstrip(b"\0")), self._pattern):
                wanted = True
        return wanted

    def _file_event(self, wd: int, mask: int) -> bool:
        """A held file's event matters; a watch the kernel dropped (its inode freed: the number
        may come back as another file) is forgotten, so that `follow` watches again."""
        if wd not in self._wd_files:
            return False  # a watch already removed
        if mask & IN_IGNORED:
            del self._file_wds[self._wd_files.pop(wd)]
        return True

    def close(self) -> None:
        os.close(self.fd)
