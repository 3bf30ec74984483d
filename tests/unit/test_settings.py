"""Wrong settings fail at start with one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from logship.config import AmqpSettings

REPO = Path(__file__).resolve().parents[2]


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60,
        cwd=cwd, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
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
