"""Compatibility: the tailer's public names, now in producer.follow (one path) and producer.discover
(the set of paths)."""

from producer.discover import TailSet
from producer.follow import FileTail, OpenFile, TailOptions

__all__ = ["FileTail", "OpenFile", "TailOptions", "TailSet"]
