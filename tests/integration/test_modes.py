"""Modes a user picks: polling instead of inotify, a glob of files, --once, --exit-when-idle, the
second signal, and settings the broker refuses."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.pipeline import REPO, Pipeline, wait_until


def test_polling_mode_ships_every_line(pipe: Pipeline) -> None:
    pipe.consumer().ready()
    pipe.producer("--poll", "--poll-interval", "0.05").ready()
    expected = b""
    for i in range(20):  # several appends within one second: mtime alone would miss them
        line = f"polled {i}\n".encode()
        pipe.append(line)
        expected += line
        time.sleep(0.01)
    assert pipe.wait_for_output(expected, timeout=20) == expected


def test_glob_of_several_files(pipe: Pipeline) -> None:
    logs = pipe.workdir / "logs"
    logs.mkdir()
    pipe.consumer().ready()
    pipe.producer("--input", str(logs / "*.log")).ready()
    (logs / "a.log").write_bytes(b"a1\na2\n")
    (logs / "b.log").write_bytes(b"b1\n")
    (logs / "ignored.txt").write_bytes(b"not me\n")
    assert wait_until(lambda: pipe.output.exists() and pipe.output.stat().st_size >= 9, 20)
    time.sleep(0.3)
    assert sorted(pipe.output.read_bytes().splitlines()) == [b"a1", b"a2", b"b1"]


def test_once_ships_what_is_there_and_exits(pipe: Pipeline) -> None:
    data = b"batch job line\n" * 10_000 + b"partial"
    pipe.append(data)
    producer = pipe.producer("--once")
    assert producer.wait(60) == 0
    consumer = pipe.consumer("--exit-when-idle", "1")
    assert consumer.wait(60) == 0, consumer.log()[-2000:]
    assert pipe.output.read_bytes() == data[: data.rfind(b"\n") + 1]
    assert '"queue_idle_exit"' in consumer.log()


def test_second_signal_forces_exit(pipe: Pipeline) -> None:
    consumer = pipe.consumer("--shutdown-timeout", "60").ready()
    assert consumer.proc is not None
    consumer.signal(signal.SIGTERM)
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(10) in (0, 130)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://guest:wrong-password@127.0.0.1:5672/", "refused the credentials"),
        ("amqp://guest:guest@127.0.0.1:5672/no-such-vhost", "virtual host"),
    ],
)
def test_broker_refusals_are_one_line(broker: str, tmp_path: Path, url: str, message: str) -> None:
    for module, args in (
        ("consumer", ["--output", str(tmp_path / "o.txt")]),
        ("producer", ["--input", str(tmp_path / "i.txt"), "--checkpoint", str(tmp_path / "ck")]),
    ):
        result = subprocess.run(
            [sys.executable, "-m", module, *args, "--http.port", "0", "--amqp.url", url],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PYTHONPATH": str(REPO)},
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert "wrong-password" not in result.stderr
