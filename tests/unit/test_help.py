"""`--help` reads well and the README's settings table says what the code does: every flag has a
description, a readable metavar and its real default; help ends with the environment rule and an
example; the README lists every setting with that same default."""

from __future__ import annotations

import re
import subprocess
import sys
from argparse import ArgumentParser
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from consumer.__main__ import EPILOG as CONSUMER_EPILOG
from consumer.__main__ import REBUILD_EPILOG, REPLAY_EPILOG
from consumer.rebuild_settings import RebuildSettings
from consumer.replay import ReplaySettings
from consumer.settings import ConsumerSettings
from logship.cli import cli_source, default_text, fields, metavar
from logship.config import LogSettings, load_settings
from producer.__main__ import EPILOG as PRODUCER_EPILOG
from producer.settings import ProducerSettings

REPO = Path(__file__).resolve().parents[2]
PROGRAMS: dict[str, tuple[type[BaseSettings], str]] = {
    "producer": (ProducerSettings, PRODUCER_EPILOG),
    "consumer": (ConsumerSettings, CONSUMER_EPILOG),
    "replay-dead": (ReplaySettings, REPLAY_EPILOG),
    "rebuild": (RebuildSettings, REBUILD_EPILOG),
}
READABLE_METAVARS = re.compile(
    r"^(PATH|PATH\|GLOB|URL|USER|PASSWORD|HOST|PORT|NAME|KEY|N|BYTES|SECONDS|AGE|TIME|\{[a-z,]+\})$"
)
PYTHON_WORDS = re.compile(r"\b(SecretStr|Path|str|int|float|bool|None|NoneType|PosixPath)\b")


def parser(program: str) -> ArgumentParser:
    cls, epilog = PROGRAMS[program]
    root: ArgumentParser = cli_source(cls, epilog).root_parser
    return root


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_flag_has_a_description_a_readable_metavar_and_its_real_default(
    program: str,
) -> None:
    cls, _ = PROGRAMS[program]
    flags = {a.dest: a for a in parser(program)._actions if a.option_strings and a.help}
    for dest, _ in fields(cls):
        action = flags[dest]
        text = str(action.help)
        description, _, default = text.rpartition(" (default: ")
        assert description.strip(), f"--{dest} has no description"
        assert default == f"{default_text(cls, dest)})", f"--{dest}: {text}"
        assert not PYTHON_WORDS.search(default), f"--{dest}: {text}"
        if action.metavar is not None:  # on/off flags take no value
            assert READABLE_METAVARS.match(str(action.metavar)), f"--{dest}: {action.metavar}"


def test_defaults_are_the_values_the_programs_use() -> None:
    # a default a factory makes (each program's own metrics port) is shown as its value
    assert default_text(ProducerSettings, "http.port") == "9101"
    assert default_text(ConsumerSettings, "http.port") == "9102"
    assert default_text(ProducerSettings, "batch_max_bytes") == "1048576 = 1 MiB"
    assert default_text(ConsumerSettings, "exit_when_idle") == "never"
    assert metavar("amqp.url", ProducerSettings.model_fields["amqp"]) != "SecretStr"


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_ends_with_the_environment_rule_and_an_example(program: str) -> None:
    text = parser(program).format_help()
    assert "default factory" not in text and "<lambda>" not in text
    assert not re.search(r"\b(SecretStr|Path|str|int|float)\b", text), text
    assert "LOGSHIP_AMQP__URL" in text and "'.' written '__'" in text
    assert "examples:" in text and "exit codes:" in text


def test_consumer_help_lists_its_subcommand() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^  replay-dead +\S", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^  rebuild +\S", result.stdout, re.MULTILINE), result.stdout
    assert "--output PATH" in result.stdout and "(default: 9102)" in result.stdout


def test_log_names_are_taken_in_any_case() -> None:
    assert LogSettings(level="debug", format="TEXT").model_dump() == {  # type: ignore[arg-type]
        "level": "DEBUG",
        "format": "text",
    }


# --- the README's settings table ----------------------------------------------------------


def readme_table() -> dict[str, tuple[str, str]]:
    """setting → (programs tag, default cell), from README's "Running it" table."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Running it", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names, _, tag = cells[0].partition(" (")
        for name in re.findall(r"`([^`]+)`", names):
            assert name not in rows, f"{name} is in the table twice"
            rows[name] = (tag.rstrip(")"), cells[1].replace("`", ""))
    return rows


def readme_default(cls: type[BaseSettings], dest: str) -> str:
    info = dict(fields(cls))[dest]
    text = default_text(cls, dest)
    unit = metavar(dest, info) == "SECONDS" and text[:1].isdigit()
    return f"{text} s" if unit else text


def expected_table() -> dict[str, tuple[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for program, (cls, _) in PROGRAMS.items():
        for dest, _ in fields(cls):
            found.setdefault(dest.replace("_", "-"), {})[program] = readme_default(cls, dest)
    table = {}
    for name, defaults in found.items():
        tag = "" if len(defaults) == len(PROGRAMS) else ", ".join(defaults)
        if len(set(defaults.values())) == 1:
            cell = next(iter(defaults.values()))
        else:
            cell = ", ".join(f"{value} ({program})" for program, value in defaults.items())
        table[name] = (tag, cell)
    return table


def test_readme_settings_table_matches_the_settings_classes() -> None:
    assert readme_table() == expected_table()


def test_a_flag_wins_over_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGSHIP_BATCH_MAX_BYTES", "100")
    monkeypatch.setenv("LOGSHIP_AMQP__HEARTBEAT", "5")
    settings = load_settings(ProducerSettings, ["--batch-max-bytes", "200"])
    assert settings.batch_max_bytes == 200 and settings.amqp.heartbeat == 5
