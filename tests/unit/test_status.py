"""`logship status` without a broker: the model built from a checkpoint and a state file written
here, how it is shown, and the one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consumer.ranges import RangeSet
from consumer.sink import SavedState
from consumer.statefile import StateFile
from logship.config import load_settings
from ops.__main__ import main, with_watch_default
from ops.gather import gather
from ops.model import FileSeen, listed, source_status
from ops.render import to_plain
from ops.settings import StatusSettings
from producer.checkpoint import Checkpoint, SourceEntry
from tests.support.pipeline import REPO, free_port

NOW = 1_000_000.0


def entry(offset: int, *, finished: bool = False, end: int | None = None) -> SourceEntry:
    return SourceEntry(
        id="s1",
        path="/logs/in.txt",
        dev=1,
        ino=2,
        head_len=10,
        head_sha="x",
        offset=offset,
        seq=1,
        finished=finished,
        end=end,
    )


def state(**ranges: list[tuple[int, int]]) -> SavedState:
    return SavedState(
        size=0, ino=None, sources={k: RangeSet(v) for k, v in ranges.items()}, touched={}
    )


def test_lag_is_size_minus_written_and_seconds_since_the_file_changed() -> None:
    seen = FileSeen("/logs/in.txt", 1000, NOW - 7.5)
    s = source_status(entry(900), seen, 950, state(s1=[(0, 600)]), NOW)
    assert (s.size, s.read, s.confirmed, s.written) == (1000, 950, 900, 600)
    assert (s.lag_bytes, s.lag_seconds) == (400, 7.5)


def test_no_lag_means_zero_seconds_however_old_the_file() -> None:
    seen = FileSeen("/logs/in.txt", 1000, NOW - 3600)
    s = source_status(entry(1000), seen, None, state(s1=[(0, 1000)]), NOW)
    assert (s.lag_bytes, s.lag_seconds, s.read) == (0, 0.0, None)


def test_written_is_the_end_of_the_first_range_and_zero_for_an_unseen_source() -> None:
    seen = FileSeen("/logs/in.txt", 1000, NOW)
    gap = source_status(entry(1000), seen, None, state(s1=[(0, 300), (500, 1000)]), NOW)
    assert (gap.written, gap.lag_bytes) == (300, 700)
    unseen = source_status(entry(1000), seen, None, state(), NOW)
    assert (unseen.written, unseen.lag_bytes) == (0, 1000)


def test_without_a_state_file_lag_is_measured_from_the_confirmed_offset() -> None:
    seen = FileSeen("/logs/in.txt", 1000, NOW - 1)
    s = source_status(entry(800), seen, None, None, NOW)
    assert (s.written, s.lag_bytes) == (None, 200)


def test_a_rotated_source_is_measured_to_where_reading_ended() -> None:
    seen = FileSeen("/logs/in.txt.1", 5000, NOW - 2)  # late writes after the end are not shipped
    s = source_status(entry(4000, finished=True, end=4000), seen, None, state(s1=[(0, 3000)]), NOW)
    assert (s.path, s.size, s.read, s.lag_bytes) == ("/logs/in.txt.1", 4000, 4000, 1000)
    done = source_status(entry(4000, finished=True, end=4000), None, None, state(s1=[(0, 4000)]), 0)
    assert (done.lag_bytes, done.exists) == (0, False)
    assert listed([s, done], everything=False) == [s]
    assert listed([s, done], everything=True) == [s, done]


def write_state(output: Path, size: int, sources: dict[str, list[list[int]]]) -> None:
    record = {
        "version": 1,
        "size": size,
        "ino": None,
        "sources": sources,
        "touched": {k: time.time() for k in sources},
    }
    StateFile(output.with_name(output.name + ".state"), durable=False).write(
        json.dumps(record).encode()
    )


def settings_for(tmp_path: Path, *extra: str) -> StatusSettings:
    return load_settings(
        StatusSettings, [*settings_args(tmp_path), "--amqp.connect-timeout=2", *extra]
    )


async def test_gather_reads_checkpoint_state_and_files_and_finds_a_rotated_file(
    tmp_path: Path,
) -> None:
    log = tmp_path / "in.txt"
    log.write_bytes(b"a\n" * 100)
    st = log.stat()
    checkpoint = Checkpoint(tmp_path / "cp", {})
    old = checkpoint.new_source(str(log), st.st_dev, st.st_ino, b"a\n" * 100, 200)
    checkpoint.finish(old, 200)
    log.rename(tmp_path / "in.txt.1")
    log.write_bytes(b"b\n" * 50)
    st = log.stat()
    new = checkpoint.new_source(str(log), st.st_dev, st.st_ino, b"b\n" * 50, 40)
    checkpoint.save()
    (tmp_path / "out.txt").write_bytes(b"x" * 250)
    write_state(tmp_path / "out.txt", 250, {old.id: [[0, 150]], new.id: [[0, 20]]})

    status = await gather(settings_for(tmp_path))

    rotated, current = status.sources
    assert (rotated.path, rotated.finished, rotated.size, rotated.written) == (
        str(tmp_path / "in.txt.1"),
        True,
        200,
        150,
    )
    assert (current.path, current.size, current.confirmed, current.written) == (
        str(log),
        100,
        40,
        20,
    )
    assert (rotated.lag_bytes, current.lag_bytes) == (50, 80)
    assert (status.output.size, status.output.recorded) == (250, 250)
    assert {(s.path, s.written) for s in status.output.sources} == {
        (str(tmp_path / "in.txt.1"), 150),  # where the rotated file is now
        (str(log), 20),
    }
    assert not status.broker.connected and status.broker.error
    assert status.producer.state == status.consumer.state == "not asked"
    text = to_plain(status)
    assert f"{tmp_path / 'in.txt.1'} (finished)  200" in text
    assert "not connected: AMQPConnectionError" in text


async def test_finished_sources_fully_written_are_counted_and_listed_with_all(
    tmp_path: Path,
) -> None:
    log = tmp_path / "in.txt"
    log.write_bytes(b"a\n" * 100)
    st = log.stat()
    checkpoint = Checkpoint(tmp_path / "cp", {})
    old = checkpoint.new_source(str(log), st.st_dev, st.st_ino, b"a\n" * 100, 200)
    checkpoint.finish(old, 200)
    checkpoint.save()
    log.rename(tmp_path / "in.txt.1")
    write_state(tmp_path / "out.txt", 200, {old.id: [[0, 200]]})

    short = await gather(settings_for(tmp_path))
    assert (short.sources, short.hidden_sources) == ([], 1)
    assert "1 finished file fully written" in to_plain(short)
    full = await gather(settings_for(tmp_path, "--all"))
    [shown] = full.sources
    assert (shown.path, shown.exists, shown.lag_bytes) == (str(tmp_path / "in.txt.1"), True, 0)


def test_json_parses_with_nothing_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = settings_args(tmp_path)
    assert main(["status", "--json", *args]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["sources"] == [] and shown["checkpoint_exists"] is False
    assert shown["broker"]["connected"] is False


def settings_args(tmp_path: Path) -> list[str]:
    return [
        f"--checkpoint={tmp_path / 'cp'}",
        f"--output={tmp_path / 'out.txt'}",
        "--producer-url=",
        "--consumer-url=",
        f"--amqp.url=amqp://guest:guest@127.0.0.1:{free_port()}/",
    ]


@pytest.mark.parametrize("damaged", ["cp", "out.txt.state"])
def test_an_unreadable_checkpoint_or_state_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damaged: str
) -> None:
    (tmp_path / damaged).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(SystemExit) as exit_:
        main(["status", *settings_args(tmp_path)])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("logship: error: ")
    assert str(tmp_path / damaged) in err and "unreadable" in err


def test_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "status" in capsys.readouterr().out
    assert main([]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["stats"])
    assert exit_.value.code == 2
    assert "unknown command 'stats'" in capsys.readouterr().err


def test_watch_takes_an_optional_number_of_seconds() -> None:
    assert with_watch_default(["--watch"]) == ["--watch", "2"]
    assert with_watch_default(["--watch", "--json"]) == ["--watch", "2", "--json"]
    assert with_watch_default(["--watch", "5"]) == ["--watch", "5"]
    assert with_watch_default(["--watch", "-1"]) == ["--watch", "-1"]  # refused by the settings


def test_status_reads_without_writing(tmp_path: Path) -> None:
    """Nothing status reads is changed by it: same bytes, same modification times."""
    log = tmp_path / "in.txt"
    log.write_bytes(b"line\n")
    st = log.stat()
    Checkpoint(tmp_path / "cp", {}).new_source(str(log), st.st_dev, st.st_ino, b"line\n", 5)
    write_state(tmp_path / "out.txt", 5, {"s": [[0, 5]]})
    (tmp_path / "out.txt").write_bytes(b"line\n")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    os.utime(tmp_path, (0, 0))
    assert main(["status", "--json", *settings_args(tmp_path)]) == 0
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert after == before and tmp_path.stat().st_mtime == 0


def test_watch_refreshes_until_ctrl_c_and_exits_0(tmp_path: Path) -> None:
    program = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops",
            "status",
            "--watch",
            "0.1",
            "--json",
            *settings_args(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        # as a terminal's child: the suite itself may run in the background, SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert program.stdout is not None
    first, second = program.stdout.readline(), program.stdout.readline()
    assert json.loads(first)["time"] < json.loads(second)["time"]
    program.send_signal(signal.SIGINT)
    _, err = program.communicate(timeout=20)
    assert program.returncode == 0, err
    assert err == b""


def test_settings_share_the_programs_variables_but_display_flags_come_only_from_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "LOGSHIP_CHECKPOINT": "/srv/producer.checkpoint",
        "LOGSHIP_OUTPUT": "/srv/out.txt",
        "LOGSHIP_AMQP__QUEUE": "app-logs",
        "JSON": "1",  # someone else's variables: must not switch the output format
        "ALL": "true",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(StatusSettings, [])
    assert (str(settings.checkpoint), str(settings.output)) == (
        "/srv/producer.checkpoint",
        "/srv/out.txt",
    )
    assert settings.amqp.queue == "app-logs"
    assert (settings.json_output, settings.all_sources, settings.watch) == (False, False, None)
    flagged = load_settings(StatusSettings, ["--json", "--all", "--watch", "5"])
    assert (flagged.json_output, flagged.all_sources, flagged.watch) == (True, True, 5.0)
