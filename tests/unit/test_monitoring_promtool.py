"""promtool accepts the alert rules, and their unit tests (monitoring/tests/) pass."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
RULE_FILE = MONITORING / "rules" / "logship-alerts.yaml"
ALERT_TESTS = MONITORING / "tests" / "alerts-test.yaml"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found (Debian/Ubuntu: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _run(*args: str) -> None:
    proc = subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, cwd=MONITORING
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rule_file_passes_promtool_check() -> None:
    _run("check", "rules", str(RULE_FILE))


def test_alert_unit_tests_pass() -> None:
    _run("test", "rules", str(ALERT_TESTS))


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    rules = yaml.safe_load(RULE_FILE.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    missing = alerts - firing
    assert not missing, f"never shown firing in monitoring/tests/alerts-test.yaml: {missing}"
