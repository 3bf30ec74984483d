"""logrotate on the consumer's OUTPUT, through the real programs: rename + SIGHUP, copytruncate,
truncate-to-empty and a rename nobody signals, while lines flow; the rotated pieces put back
together are the input exactly, and the consumer lets go of every rotated file. A copytruncate
that races the consumer's writes loses nothing: what the copy missed is put back. A corrupt
state file is one line and exit code 2."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from consumer.statefile import StateFile
from tests.support.pipeline import REPO, Pipeline, Program, free_port, wait_until


def held_by(pid: int) -> set[str]:
    """The files a process holds open, as /proc shows them."""
    held = set()
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held.add(os.readlink(entry))
        except OSError:
            continue
    return held


class Writer:
    """Appends numbered lines to the input in a thread, ~5k lines/s, remembering every byte."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = bytearray()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._n = 0

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            chunk = b"".join(
                f"line {self._n + i:08d} {'x' * ((self._n + i) % 50)}\n".encode() for i in range(50)
            )
            self._n += 50
            with self.path.open("ab") as handle:
                handle.write(chunk)
            self.written += chunk

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def wait_for_growth(out: Path) -> None:
    """Until the consumer appended some more (lines keep flowing meanwhile)."""
    size = out.stat().st_size if out.exists() else 0
    grew = wait_until(lambda: out.exists() and out.stat().st_size > size + 10_000, 30)
    assert grew, f"{out} did not grow"


@contextmanager
def frozen(program: Program) -> Iterator[None]:
    """Hold the consumer still (SIGSTOP) for a copy-then-truncate: this test is about following
    the file; what is written between the copy and the truncate is the next test's."""
    program.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        program.signal(signal.SIGCONT)


def test_output_rotations_while_lines_flow(pipe: Pipeline) -> None:
    port = free_port()
    consumer = pipe.consumer("--http.port", str(port)).ready()
    assert consumer.proc is not None
    pid = consumer.proc.pid
    pipe.input.touch()
    pipe.producer().ready()
    writer = Writer(pipe.input)
    out = pipe.output
    pieces: list[Path | bytes] = []  # what was rotated away, in order

    def released(path: Path) -> bool:
        return wait_until(lambda: str(path) not in held_by(pid), 2.5)

    def joined() -> bytes:
        parts = [p.read_bytes() if isinstance(p, Path) else p for p in pieces]
        return b"".join(parts) + (out.read_bytes() if out.exists() else b"")

    writer.start()
    try:
        # (a) logrotate `create` + `postrotate kill -HUP`
        wait_for_growth(out)
        os.rename(out, pipe.workdir / "output.txt.1")
        pieces.append(pipe.workdir / "output.txt.1")
        consumer.signal(signal.SIGHUP)
        consumer.wait_for_event("reopen_requested", timeout=5)
        assert released(pipe.workdir / "output.txt.1"), "SIGHUP lets go of the renamed file"
        assert consumer.running, "SIGHUP reopens; it does not end the consumer"
        # (b) copytruncate
        wait_for_growth(out)
        with frozen(consumer):
            shutil.copyfile(out, pipe.workdir / "output.txt.2")
            os.truncate(out, 0)
        pieces.append(pipe.workdir / "output.txt.2")
        # (c) `: > output.txt`, after someone took what it held
        wait_for_growth(out)
        with frozen(consumer):
            pieces.append(out.read_bytes())
            out.open("wb").close()
        wait_for_growth(out)
    finally:
        writer.stop()
    # (d) a rename nobody signals, while idle: the timer lets go of it
    assert wait_until(lambda: len(joined()) >= len(writer.written), 60)
    os.rename(out, pipe.workdir / "output.txt.3")
    pieces.append(pipe.workdir / "output.txt.3")
    assert released(pipe.workdir / "output.txt.3"), "an idle consumer lets go within ~1 s"
    writer.start()
    wait_for_growth(out)
    writer.stop()

    assert wait_until(lambda: len(joined()) >= len(writer.written), 60)
    pipe.assert_alive()
    everything = joined()
    assert everything == bytes(writer.written)
    for piece in pieces:
        assert b"\0" not in (piece.read_bytes() if isinstance(piece, Path) else piece)
    assert b"\0" not in out.read_bytes()

    reasons = [
        record.get("reason")
        for record in map(json.loads, filter(None, consumer.log().splitlines()))
        if record.get("event") == "output_rotated"
    ]
    assert sorted(reasons) == ["rename", "rename", "truncate", "truncate"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    counted = dict(re.findall(r'output_rotations_total\{reason="(\w+)"\} (\S+)', metrics))
    assert counted == {"rename": "2.0", "delete": "0.0", "truncate": "2.0"}


def test_copytruncate_racing_the_consumer_loses_nothing(pipe: Pipeline) -> None:
    """copytruncate while lines flow and the consumer writes (not paused), with 50 ms between
    the copy and the truncate so the consumer surely writes in between: those bytes are in
    neither file until the consumer, finding the output cut, appends them from memory."""
    port = free_port()
    consumer = pipe.consumer("--http.port", str(port)).ready()
    pipe.input.touch()
    pipe.producer().ready()
    writer = Writer(pipe.input)
    out = pipe.output
    copies: list[Path] = []
    missed = 0
    writer.start()
    try:
        for i in range(1, 6):
            wait_for_growth(out)
            copy = pipe.workdir / f"output.txt.{i}"
            shutil.copyfile(out, copy)
            time.sleep(0.05)
            missed += out.stat().st_size - copy.stat().st_size
            os.truncate(out, 0)
            copies.append(copy)
    finally:
        writer.stop()

    def joined() -> bytes:
        return b"".join(copy.read_bytes() for copy in copies) + out.read_bytes()

    assert missed > 0, "the consumer wrote between a copy and its truncate"
    assert wait_until(lambda: len(joined()) >= len(writer.written), 60)
    pipe.assert_alive()
    assert joined() == bytes(writer.written)
    repaired = [
        record
        for record in map(json.loads, filter(None, consumer.log().splitlines()))
        if record.get("event") == "output_copytruncate_repaired"
    ]
    # each repair names the copy it completed, in order, once; a copytruncate the consumer did
    # not write across (under load its group may come before the copy or after the truncate)
    # needs none
    names = [Path(r["copy"]).name for r in repaired]
    assert names == [c.name for c in copies if c.name in names] and len(set(names)) == len(names)
    # (not compared with `missed`: a group whose write the truncate interrupted is written
    # again as part of that write, not counted as put back)
    put_back = sum(r["bytes"] for r in repaired)
    assert put_back > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert f"logship_consumer_output_bytes_repaired_total {float(put_back)}" in metrics
    lost = dict(re.findall(r'output_bytes_lost_total\{reason="(\w+)"\} (\S+)', metrics))
    assert lost == {"copy_unverified": "0.0", "truncated": "0.0"}


def rotate_three_times_while_writing(pipe: Pipeline, stanza: str) -> Writer:
    """Real logrotate, forced three times on the output with `stanza` while a writer appends to
    the input; the writer is stopped when it returns."""
    config = pipe.workdir / "logrotate.conf"
    config.write_text(f"{pipe.output} {{\n  rotate 100\n  missingok\n  notifempty\n  {stanza}}}\n")
    writer = Writer(pipe.input)
    writer.start()
    try:
        for _ in range(3):
            wait_for_growth(pipe.output)
            subprocess.run(
                ["logrotate", "-f", "-s", str(pipe.workdir / "logrotate.status"), str(config)],
                check=True,
                timeout=30,
            )
    finally:
        writer.stop()
    return writer


def rotated_outputs(pipe: Pipeline) -> list[Path]:
    """logrotate's numbered outputs, oldest first: output.txt.3.gz, output.txt.2.gz, ..."""
    found = [p for p in pipe.workdir.glob("output.txt.*") if p.name.split(".")[2].isdigit()]
    return sorted(found, key=lambda p: -int(p.name.split(".")[2]))


def joined_outputs(pipe: Pipeline) -> bytes:
    """The rotated outputs, decompressed, oldest first, then output.txt."""
    parts = [
        gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        for p in rotated_outputs(pipe)
    ]
    return b"".join(parts) + pipe.output.read_bytes()


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_the_documented_logrotate_stanza_loses_and_duplicates_nothing(pipe: Pipeline) -> None:
    """README "Output rotation": `create`, `compress`, `delaycompress`, `postrotate kill -HUP`,
    the output named exactly (the state file beside it is left alone); real logrotate, forced
    three times while lines flow."""
    consumer = pipe.consumer().ready()
    assert consumer.proc is not None
    pipe.input.touch()
    pipe.producer().ready()
    writer = rotate_three_times_while_writing(
        pipe,
        "create 0644\n  compress\n  delaycompress\n"
        f"  postrotate\n    kill -HUP {consumer.proc.pid}\n  endscript\n",
    )
    assert wait_until(lambda: len(joined_outputs(pipe)) >= len(writer.written), 60)
    assert joined_outputs(pipe) == bytes(writer.written)
    rotated = rotated_outputs(pipe)
    assert [p.name for p in rotated] == ["output.txt.3.gz", "output.txt.2.gz", "output.txt.1"]
    assert not list(pipe.workdir.glob("*.backup")), "logrotate created each new file itself"
    assert (pipe.workdir / "output.txt.state").exists()
    assert not list(pipe.workdir.glob("output.txt.state.*")), "the state file is not rotated"
    held = held_by(consumer.proc.pid)
    assert all(str(p) not in held for p in rotated)
    pipe.assert_alive()


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_logrotate_copytruncate_loses_and_duplicates_nothing(pipe: Pipeline) -> None:
    """Real logrotate with `copytruncate` (and `delaycompress`, so the copy is there to check),
    forced three times while lines flow: nothing lost, nothing twice, nothing counted lost."""
    port = free_port()
    pipe.consumer("--http.port", str(port)).ready()
    pipe.input.touch()
    pipe.producer().ready()
    writer = rotate_three_times_while_writing(pipe, "copytruncate\n  compress\n  delaycompress\n")
    assert wait_until(lambda: len(joined_outputs(pipe)) >= len(writer.written), 60)
    assert joined_outputs(pipe) == bytes(writer.written)
    pipe.assert_alive()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    lost = dict(re.findall(r'output_bytes_lost_total\{reason="(\w+)"\} (\S+)', metrics))
    assert lost == {"copy_unverified": "0.0", "truncated": "0.0"}


@pytest.mark.parametrize(
    "payload",
    [b"null", b"[1, 2]", b'{"version":1,"size":0,"sources":{"a":[[1,2,3]]}}'],
    ids=["null", "list", "ranges-not-pairs"],
)
def test_corrupt_state_file_is_one_line_and_exit_code_2(tmp_path: Path, payload: bytes) -> None:
    output = tmp_path / "output.txt"
    StateFile(tmp_path / "output.txt.state", durable=False).write(payload)
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "--output", str(output), "--http.port", "0"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1 and "output.txt.state is unreadable" in stderr, stderr


def test_output_that_cannot_be_reopened_pauses_the_consumer(pipe: Pipeline) -> None:
    """Rotated away, and the path cannot be opened (here a directory took its place): nothing is
    written to the rotated file or acknowledged; the failure is logged once, not every second;
    once the path works again every line arrives."""
    consumer = pipe.consumer().ready()
    pipe.producer().ready()
    first = b"".join(f"before {i}\n".encode() for i in range(1000))
    pipe.append(first)
    assert pipe.wait_for_output(first) == first
    rotated = pipe.workdir / "output.txt.1"
    os.rename(pipe.output, rotated)
    pipe.output.mkdir()
    second = b"".join(f"after {i}\n".encode() for i in range(1000))
    pipe.append(second)
    consumer.wait_for_event("write_failed")
    time.sleep(3)  # three timer ticks
    pipe.assert_alive()
    assert rotated.read_bytes() == first, "nothing goes to the rotated file meanwhile"
    assert consumer.log().count('"event": "output_reopen_failed"') == 1
    pipe.output.rmdir()
    assert pipe.wait_for_output(second) == second
    assert rotated.read_bytes() == first
