"""Rebuild's pure decisions (which batches, where to start) and the archive's place in the output's
state: recorded with the bytes, kept across a reopen, untouched by a failed write."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumer.archive import Bounds
from consumer.rebuild_select import SEEK_SLACK, Selection, choose_start
from consumer.rebuild_settings import RebuildSettings
from consumer.sink import Sink, StateError
from consumer.statefile import StateFile, read_record
from logship.config import ArchiveSettings, load_settings
from logship.wire import Delivered

MOMENT = datetime(2026, 12, 1, tzinfo=UTC)
MOMENT_NS = int(MOMENT.timestamp() * 1e9)


def batch(source: str = "s", read_ns: int | None = MOMENT_NS) -> Delivered:
    return Delivered(source, 0, 2, 1, read_ns, b"x\n")


def settings(tmp_path: Path, *args: str) -> RebuildSettings:
    return load_settings(RebuildSettings, ["--output", str(tmp_path / "out.txt"), *args])


def test_since_takes_batches_read_at_or_after_it_and_until_those_read_before() -> None:
    pick = Selection(since_ns=MOMENT_NS, until_ns=MOMENT_NS + 10)
    assert not pick.wants(batch(read_ns=MOMENT_NS - 1), None)
    assert pick.wants(batch(read_ns=MOMENT_NS), None)
    assert pick.wants(batch(read_ns=MOMENT_NS + 9), None)
    assert not pick.wants(batch(read_ns=MOMENT_NS + 10), None)
    assert pick.wants(batch(read_ns=None), None), "a batch without a time is not guessed away"


def test_source_and_path_pick_one_input() -> None:
    pick = Selection(source="a", path="/var/log/app.log")
    assert pick.wants(batch("a"), "/var/log/app.log")
    assert not pick.wants(batch("b"), "/var/log/app.log")
    assert not pick.wants(batch("a"), "/var/log/other.log")


def test_reading_stops_only_well_past_until() -> None:
    pick = Selection(until_ns=MOMENT_NS)
    slack = int(SEEK_SLACK.total_seconds() * 1e9)
    assert not pick.past_until(MOMENT_NS + slack - 1)
    assert pick.past_until(MOMENT_NS + slack)
    assert not Selection().past_until(MOMENT_NS)


def test_a_recorded_position_in_the_same_stream_wins(tmp_path: Path) -> None:
    asked = settings(tmp_path, "--since", "2026-12-01T00:00Z")
    found = Bounds(first=10, first_read_ns=MOMENT_NS - 1, last=99)
    start = choose_start(asked, ("logs.archive", 41), found)
    assert (start.spec, start.resumed, start.check_gap) == (42, True, False)
    # retention took what followed the recorded place meanwhile: that is a gap to report
    assert choose_start(asked, ("logs.archive", 3), found).check_gap
    # a position in another stream says nothing about this one
    assert choose_start(asked, ("other", 41), found).spec == MOMENT - SEEK_SLACK


def test_a_start_before_the_archive_is_checked_for_a_gap(tmp_path: Path) -> None:
    found = Bounds(first=10, first_read_ns=MOMENT_NS, last=99)
    assert choose_start(settings(tmp_path, "--from-offset", "5"), None, found).check_gap
    assert not choose_start(settings(tmp_path, "--from-offset", "10"), None, found).check_gap
    earlier = (MOMENT - timedelta(hours=1)).isoformat()
    assert choose_start(settings(tmp_path, "--since", earlier), None, found).check_gap
    later = (MOMENT + timedelta(hours=1)).isoformat()
    assert not choose_start(settings(tmp_path, "--since", later), None, found).check_gap
    whole = choose_start(settings(tmp_path), None, found)
    assert (whole.spec, whole.check_gap) == ("first", True)


def test_a_time_without_a_zone_is_utc(tmp_path: Path) -> None:
    assert settings(tmp_path, "--since", "2026-12-01T00:00").since == MOMENT


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--since", "2026-12-01T00:00Z", "--from-offset", "3"], "--from-offset"),
        (["--since", "2026-12-02T00:00Z", "--until", "2026-12-01T00:00Z"], "--until"),
        (["--follow", "--until", "2026-12-01T00:00Z"], "--until"),
        (["--since", "yesterday"], "--since"),
    ],
)
def test_contradicting_or_bad_choices_are_one_line_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        settings(tmp_path, *args)
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and named in error, error


def test_the_archive_stream_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert ArchiveSettings().arguments() == {"x-queue-type": "stream", "x-max-age": "7D"}
    sized = ArchiveSettings(max_age="12h", max_bytes=10**9, segment_bytes=10**6)
    assert sized.arguments() == {
        "x-queue-type": "stream",
        "x-max-age": "12h",
        "x-max-length-bytes": 10**9,
        "x-stream-max-segment-size-bytes": 10**6,
    }
    from consumer.settings import ConsumerSettings

    with pytest.raises(SystemExit):
        load_settings(ConsumerSettings, ["--archive.max-age", "7 days"])
    assert "--archive.max-age / LOGSHIP_ARCHIVE__MAX_AGE" in capsys.readouterr().err


def test_the_archive_position_is_recorded_with_the_bytes_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    sink = Sink(out, fsync=True)
    sink.open()
    sink.commit(sink.plan([Delivered("s", 0, 3, 1, None, b"ab\n")]), ("logs.archive", 7))
    sink.commit(sink.plan([]), ("logs.archive", 9))  # skipped messages move it too
    sink.close()
    again = Sink(out, fsync=True)
    again.open()
    assert again.archive_position == ("logs.archive", 9)
    # the consumer writing the same output keeps it in the state it records
    again.commit(again.plan([Delivered("s", 3, 6, 1, None, b"cd\n")]))
    again.close()
    third = Sink(out, fsync=True)
    third.open()
    assert third.archive_position == ("logs.archive", 9) and out.read_bytes() == b"ab\ncd\n"
    third.close()


def test_a_failed_write_does_not_move_the_archive_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.txt"
    sink = Sink(out, fsync=True)
    sink.open()
    sink.commit(sink.plan([Delivered("s", 0, 3, 1, None, b"ab\n")]), ("logs.archive", 7))
    plan = sink.plan([Delivered("s", 3, 6, 1, None, b"cd\n")])

    def no_space(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("consumer.sink.os.fdatasync", no_space)
    with pytest.raises(OSError):
        sink.commit(plan, ("logs.archive", 8))
    sink.rollback(plan)
    monkeypatch.undo()
    sink.close()
    again = Sink(out, fsync=True)
    again.open()
    assert again.archive_position == ("logs.archive", 7) and out.read_bytes() == b"ab\n"
    again.close()


def test_a_state_whose_archive_position_is_wrong_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    sink = Sink(out, fsync=True)
    sink.open()
    sink.close()
    state = out.with_name("out.txt.state")
    found = read_record(state)
    assert found is not None
    record = json.loads(found[2])
    record["archive"] = {"stream": "logs.archive", "offset": -1}
    writer = StateFile(state, durable=True)
    writer.write(json.dumps(record).encode())
    writer.close()
    with pytest.raises(StateError, match="archive"):
        Sink(out, fsync=True).open()
