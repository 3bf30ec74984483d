"""What a user sees when a start goes wrong, through the real programs: one line on stderr that
names the flag and the variable, says what is wrong and what would be right; exit code 2; nothing
printed before it; no file left in the working directory."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from tests.support.pipeline import REPO, Topology

Case = tuple[str, list[str], dict[str, str], str]


def run_in(
    workdir: Path, module: str, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *module.split(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
        # the default log level and format: nothing may come before the error even so
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **(env or {})},
    )


def the_one_error(
    result: subprocess.CompletedProcess[str], workdir: Path, *, there_before: str = "afile"
) -> str:
    """Assert the error shape shared by every case; return the line without its prefix."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("logship: error: "), result.stderr
    assert result.stdout == ""
    left = sorted(p.name for p in workdir.iterdir() if p.name not in ("afile", there_before))
    assert left == [], f"files left behind: {left}"
    return lines[0].removeprefix("logship: error: ")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory the program runs in, holding one plain file `afile` (a path under
    it has a file where a directory should be)."""
    (tmp_path / "afile").write_text("not a directory\n")
    return tmp_path


SETTING_CASES: list[Case] = [
    (
        "producer",
        ["--batch-max-bytes", "10"],
        {},
        "--batch-max-bytes / LOGSHIP_BATCH_MAX_BYTES: must be at least 64 (got 10)",
    ),
    (
        "producer",
        [],
        {"LOGSHIP_BATCH_MAX_BYTES": "10"},
        "--batch-max-bytes / LOGSHIP_BATCH_MAX_BYTES: must be at least 64 (got 10)",
    ),
    (
        "producer",
        ["--input", "afile/in.txt"],
        {},
        "--input / LOGSHIP_INPUT: afile is a file, not a directory (in afile/in.txt)",
    ),
    (
        "producer",
        ["--input", "missing/in.txt"],
        {},
        "--input / LOGSHIP_INPUT: directory missing does not exist; create it first "
        "(in missing/in.txt)",
    ),
    (
        "producer",
        ["--checkpoint", "afile/ck"],
        {},
        "--checkpoint / LOGSHIP_CHECKPOINT: afile is a file, not a directory (in afile/ck)",
    ),
    (
        "consumer",
        ["--output", "afile/out.txt"],
        {},
        "--output / LOGSHIP_OUTPUT: afile is a file, not a directory (in afile/out.txt)",
    ),
    (
        "consumer",
        [],
        {"LOGSHIP_AMQP__HEARTBEAT": "often"},
        "--amqp.heartbeat / LOGSHIP_AMQP__HEARTBEAT: must be a whole number (got often)",
    ),
    (
        "consumer",
        ["--fsync", "sometimes"],
        {},
        "--fsync / LOGSHIP_FSYNC: must be one of always or never (got sometimes)",
    ),
    (
        "consumer",
        ["--prefetch"],
        {},
        "--prefetch / LOGSHIP_PREFETCH: needs a value (see --help)",
    ),
    (
        "producer",
        ["--once=yes"],
        {},
        "--once / LOGSHIP_ONCE: takes no value: say --once or --no-once",
    ),
    (
        "producer",
        ["--batch-max-byte", "100"],
        {},
        "unknown flag --batch-max-byte: did you mean --batch-max-bytes?",
    ),
    (
        "consumer replay-dead",
        ["--limit", "0"],
        {},
        "--limit / LOGSHIP_LIMIT: must be at least 1 (got 0)",
    ),
    (
        "producer",
        [],
        {"LOGSHIP_LOG__LEVEL": "debug", "LOGSHIP_BATCH_MAX_LINES": "0"},
        # the level in lower case is taken: the only complaint is the other setting
        "--batch-max-lines / LOGSHIP_BATCH_MAX_LINES: must be at least 1 (got 0)",
    ),
    (
        "consumer",
        ["replay-ded"],
        {},
        "unknown command 'replay-ded': did you mean replay-dead?",
    ),
    (
        "consumer",
        ["--output", "o" * 300],
        {},
        f"--output / LOGSHIP_OUTPUT: {'o' * 300} cannot be used (File name too long); "
        "give another path",
    ),
    (
        "producer",
        ["--input", "i" * 300],
        {},
        f"--input / LOGSHIP_INPUT: {'i' * 300} cannot be used (File name too long); "
        "give another path",
    ),
    (
        "producer",
        [],
        {"LOGSHIP_CHECKPOINT": "c" * 300},
        f"--checkpoint / LOGSHIP_CHECKPOINT: {'c' * 300} cannot be used (File name too long); "
        "give another path",
    ),
]


@pytest.mark.parametrize(("module", "args", "env", "expected"), SETTING_CASES)
def test_a_wrong_setting_is_one_line_naming_flag_and_variable(
    module: str, args: list[str], env: dict[str, str], expected: str, workdir: Path
) -> None:
    assert the_one_error(run_in(workdir, module, args, env), workdir) == expected


@pytest.mark.parametrize("module", ["producer", "consumer", "consumer replay-dead"])
def test_wrong_password_is_one_line_and_leaves_no_files(
    module: str, workdir: Path, topology: Topology
) -> None:
    # the default paths (input.txt, the checkpoint, output.txt and its state) all lie in workdir
    env = {**topology.env(), "LOGSHIP_AMQP__PASSWORD": "not-the-password"}
    args = [] if "replay" in module else ["--http.port", "0"]
    line = the_one_error(run_in(workdir, module, args, env), workdir)
    assert line.startswith("broker refused the credentials (wrong user or password): ")
    assert "--amqp.password / LOGSHIP_AMQP__PASSWORD" in line
    assert "not-the-password" not in line


def test_log_level_and_format_are_taken_in_any_case(workdir: Path, topology: Topology) -> None:
    (workdir / "input.txt").write_bytes(b"one line\n")
    env = {**topology.env(), "LOGSHIP_LOG__LEVEL": "warning", "LOGSHIP_LOG__FORMAT": "TEXT"}
    result = run_in(workdir, "producer", ["--once", "--http.port", "0"], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # taken: the info lines of a good run are left out


@pytest.mark.parametrize("module", ["producer", "consumer"])
def test_a_refused_topology_leaves_no_files(module: str, workdir: Path, topology: Topology) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(topology.url))
    try:  # a classic queue where a quorum one is wanted: the broker refuses the declaration
        connection.channel().queue_declare(
            topology.queue,
            durable=True,
            arguments={
                "x-queue-type": "classic",
                "x-dead-letter-exchange": f"{topology.prefix}.dead",
            },
        )
    finally:
        connection.close()
    line = the_one_error(run_in(workdir, module, ["--http.port", "0"], topology.env()), workdir)
    assert line.endswith("delete it or set --amqp.queue-type classic"), line


@pytest.mark.parametrize("module", ["producer", "consumer"])
def test_a_metrics_port_in_use_names_the_flag_and_leaves_no_files(
    module: str, workdir: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--http.host", "127.0.0.1", "--http.port", str(port)]
        line = the_one_error(run_in(workdir, module, args), workdir)
    assert line == (
        f"--http.port / LOGSHIP_HTTP__PORT: cannot listen on 127.0.0.1:{port} (address already "
        "in use); choose another port (or another --http.host), or 0 to switch the server off"
    )


@pytest.mark.parametrize(
    ("module", "path", "flag"),
    [
        ("producer", "logship-producer.checkpoint", "--checkpoint / LOGSHIP_CHECKPOINT"),
        ("consumer", "output.txt.state", "--output / LOGSHIP_OUTPUT"),
    ],
)
def test_an_unreadable_checkpoint_or_state_names_its_flag(
    module: str, path: str, flag: str, workdir: Path
) -> None:
    (workdir / path).write_text("garbage")
    result = run_in(workdir, module, ["--http.port", "0"])
    line = the_one_error(result, workdir, there_before=path)
    assert line.startswith(f"{flag}: ") and f"{path} is unreadable" in line, line
    assert "move it away to start over" in line


def test_a_state_path_that_is_a_directory_names_the_output_flag(workdir: Path) -> None:
    (workdir / "output.txt.state").mkdir()
    result = run_in(workdir, "consumer", ["--http.port", "0"])
    line = the_one_error(result, workdir, there_before="output.txt.state")
    assert line == (
        "--output / LOGSHIP_OUTPUT: state file output.txt.state cannot be read (Is a "
        "directory); move it away, or choose another output"
    )


def test_an_output_the_system_will_not_create_names_the_flag(workdir: Path) -> None:
    """A plain OSError when the output is opened at start (sysfs refuses new files, even to
    root; a read-only or full file system alike): the flag, the path, the system's reason."""
    result = run_in(workdir, "consumer", ["--output", "/sys/output.txt", "--http.port", "0"])
    line = the_one_error(result, workdir)
    assert line.startswith("--output / LOGSHIP_OUTPUT: "), line
    assert "/sys/output.txt" in line or "/sys is not writable" in line, line
