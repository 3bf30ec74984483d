"""Wrong settings fail at start with one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from logship.cli import describe_os_error
from logship.config import AmqpSettings

REPO = Path(__file__).resolve().parents[2]


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("consumer", ["--amqp.url", "http://x"], "--amqp.url / LOGSHIP_AMQP__URL: must start"),
        ("consumer", ["--amqp.url", "amqp://u:p@host:notaport/"], "port"),
        ("consumer", ["--output", "/nonexistent/dir/out.txt"], "does not exist"),
        ("consumer", ["--prefetch", "-3"], "--prefetch / LOGSHIP_PREFETCH: must be at least 1"),
        ("consumer", ["--prefetch", "lots"], "--prefetch / LOGSHIP_PREFETCH: must be a whole"),
        ("consumer", ["--amqp.ca-file", "/no.pem"], "--amqp.ca-file / LOGSHIP_AMQP__CA_FILE"),
        ("producer", ["--input", "/nonexistent/dir/in.txt"], "does not exist"),
        ("producer", ["--batch-max-bytes", "0"], "--batch-max-bytes / LOGSHIP_BATCH_MAX_BYTES"),
        ("producer", ["--read-from", "middle"], "--read-from / LOGSHIP_READ_FROM"),
        ("producer", ["--max-in-flight", "1000000"], "must be at most 1024 (got 1000000)"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(
    module: str, args: list[str], expected: str, tmp_path: Path
) -> None:
    result = run(module, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("logship: error:") and expected in lines[0]
    assert "Traceback" not in result.stderr


def test_unwritable_output_directory(tmp_path: Path) -> None:
    # /proc/sys refuses writes even to root (permission bits alone would not stop root)
    result = run("consumer", "--output", "/proc/sys/logship-out.txt", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "not writable" in result.stderr


def test_env_and_flags_and_help(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run("producer", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--batch-max-bytes" in result.stdout
    assert "--amqp.url" in result.stdout


def test_password_never_in_redacted_url() -> None:
    settings = AmqpSettings(url="amqp://user:s3cr%40t@broker:5672/vh", password="other-secret")  # type: ignore[arg-type]
    assert "s3cr" not in settings.redacted_url() and "other-secret" not in settings.redacted_url()
    assert "other-secret" in settings.connection_url()
    assert "s3cr" not in repr(settings)


def test_input_that_is_no_regular_file_is_refused_at_start(tmp_path: Path) -> None:
    """A FIFO would block open() (deaf to SIGTERM), a directory would be watched silently
    forever: both are one line and exit 2."""
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "is a FIFO"), (tmp_path, "is a directory")):
        result = run("producer", "--input", str(path), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and kind in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content",
    [
        "null",
        "[1, 2]",
        '{"version": 1, "sources": [{"id": 5, "path": "p", "dev": 1, "ino": 2,'
        ' "head_len": 0, "head_sha": "", "offset": 0, "seq": 1}]}',
    ],
)
def test_corrupted_checkpoint_is_one_line_and_exit_2(tmp_path: Path, content: str) -> None:
    (tmp_path / "ck").write_text(content)
    result = run(
        "producer",
        "--input",
        str(tmp_path / "in.txt"),
        "--checkpoint",
        str(tmp_path / "ck"),
        "--http.port",
        "0",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint" in lines[0] and "unreadable" in lines[0], lines
    assert "Traceback" not in result.stderr


def test_an_os_error_at_start_names_the_setting_whose_file_it_is_about() -> None:
    paths = {"input": ["/logs/app.log"], "checkpoint": ["/var/lib/ck"]}
    tmp = PermissionError(13, "Permission denied", "/var/lib/ck.tmp")  # made from --checkpoint
    assert describe_os_error(tmp, paths) == (
        "--checkpoint / LOGSHIP_CHECKPOINT: cannot use /var/lib/ck.tmp (Permission denied); "
        "give the program's user access, or choose another path"
    )
    full = OSError(errno.ENOSPC, "No space left on device", "/logs/app.log")
    assert describe_os_error(full, paths).startswith("--input / LOGSHIP_INPUT: cannot use ")
    assert describe_os_error(OSError(errno.EIO, "Input/output error"), paths) == (
        "Input/output error"
    )
