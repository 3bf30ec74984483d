"""Following files without a broker: rotation, truncation, inode reuse, restart from checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

from producer.checkpoint import Checkpoint
from producer.metrics import ProducerMetrics
from producer.tail import TailOptions, TailSet


def make_tails(tmp_path: Path, pattern: str = "in.txt", **options: object) -> TailSet:
    opts = {"max_bytes": 1 << 16, "max_lines": 1 << 20, "rotation_grace": 0.0,
            "read_from_end": False, **options}
    return TailSet(
        str(tmp_path / pattern), Checkpoint.load(tmp_path / "ck"), TailOptions(**opts),  # type: ignore[arg-type]
        ProducerMetrics(),
    )


def drain(tails: TailSet) -> bytes:
    """Read everything available, confirming each batch (as the publisher would)."""
    out = b""
    for _ in range(1000):
        tails.check()
        batch = tails.read()
        if batch is None:
            batch = tails.read()
            if batch is None:
                return out
        tails._checkpoint.sent(batch.source, batch.start, batch.end)
        tails._checkpoint.confirmed(batch.source, batch.start)
        out += bytes(batch.body)
    raise AssertionError("never ran dry")


def test_rename_rotation_drains_old_file_first(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"old 1\n")
    tails = make_tails(tmp_path)
    assert drain(tails) == b"old 1\n"
    with path.open("ab") as handle:
        handle.write(b"old 2\n")
    path.rename(tmp_path / "in.txt.1")
    path.write_bytes(b"new 1\n")
    with (tmp_path / "in.txt.1").open("ab") as handle:
        handle.write(b"old 3\n")
    assert drain(tails) == b"old 2\nold 3\nnew 1\n"


def test_copytruncate_starts_over_with_a_new_source(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"before\n")
    tails = make_tails(tmp_path)
    first = drain(tails)
    source_before = next(iter(tails.tails.values())).files[-1].source.id
    os.truncate(path, 0)
    path.write_bytes(b"after\n")
    assert first + drain(tails) == b"before\nafter\n"
    assert next(iter(tails.tails.values())).files[-1].source.id != source_before


def test_truncate_and_rewrite_past_old_offset_is_detected_by_content(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"aaaa\n")
    tails = make_tails(tmp_path)
    drain(tails)
    path.write_bytes(b"bbbbbbbbbb\ncc\n")  # truncated and refilled beyond the old offset
    assert drain(tails) == b"bbbbbbbbbb\ncc\n"


def test_restart_resumes_from_checkpoint_and_not_on_inode_reuse(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"one\n")
    tails = make_tails(tmp_path)
    drain(tails)
    tails._checkpoint.save()
    tails.close()
    with path.open("ab") as handle:
        handle.write(b"two\n")
    assert drain(make_tails(tmp_path)) == b"two\n"
    path.unlink()
    path.write_bytes(b"another file\n")  # may well get the same inode number
    assert drain(make_tails(tmp_path)) == b"another file\n"


def test_read_from_end_starts_at_the_line_being_written(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"history\nin progr")
    tails = make_tails(tmp_path, read_from_end=True)
    assert drain(tails) == b""
    with path.open("ab") as handle:
        handle.write(b"ess\nnew\n")
    assert drain(tails) == b"in progress\nnew\n"


def test_glob_follows_several_files(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"a1\n")
    (tmp_path / "b.log").write_bytes(b"b1\n")
    tails = make_tails(tmp_path, "*.log")
    assert sorted(drain(tails).splitlines()) == [b"a1", b"b1"]
    (tmp_path / "c.log").write_bytes(b"c1\n")
    assert drain(tails) == b"c1\n"


def test_oversized_line_is_split_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"y" * 250 + b"\nshort\n")
    tails = make_tails(tmp_path, max_bytes=100)
    assert drain(tails) == b"y" * 250 + b"\nshort\n"
    assert tails._metrics.oversized_lines._value.get() == 1
