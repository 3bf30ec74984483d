"""The shell scripts pass shellcheck, and scripts/k3d.sh refers only to files and overlays that
exist and answers `help` without touching a cluster."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_k8s_manifests import REPO, require_tool

SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))
K3D_SCRIPT = REPO / "scripts" / "k3d.sh"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_passes(script: Path) -> None:
    shellcheck = require_tool("shellcheck")
    proc = subprocess.run(
        # --shell=bash whatever the shebang: laptops run these with their own bash (3.2 on macOS;
        # tests/unit/test_k8s_rules.py greps for what that one lacks)
        [shellcheck, "--shell=bash", "--severity", "style", "--external-sources", str(script)],
        capture_output=True,
        text=True,
        cwd=script.parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_k3d_script_refers_to_files_that_exist() -> None:
    text = K3D_SCRIPT.read_text()
    paths = set(re.findall(r"\$ROOT/(k8s/[\w./-]+)", text))
    assert paths, "the script names no file under k8s/"
    for path in paths:
        assert (REPO / path).exists(), f"scripts/k3d.sh refers to {path}, which does not exist"
    overlays = re.search(r"cmd_apply\(\).*?local overlay=\$\{1:-([\w-]+)\}", text, re.S)
    assert overlays and (REPO / "k8s" / "overlays" / overlays[1] / "kustomization.yaml").is_file()


def test_k3d_script_helps_and_refuses_unknown_commands() -> None:
    done = subprocess.run(["bash", str(K3D_SCRIPT), "help"], capture_output=True, text=True)
    assert done.returncode == 0 and "scripts/k3d.sh up" in done.stdout
    wrong = subprocess.run(["bash", str(K3D_SCRIPT), "bogus"], capture_output=True, text=True)
    assert wrong.returncode == 2


def test_k3d_script_installs_the_charts_with_the_values_in_the_repo() -> None:
    text = K3D_SCRIPT.read_text()
    releases = dict(re.findall(r"helm upgrade --install ([\w-]+) \S+/([\w-]+)", text))
    assert releases == {
        "kube-prometheus-stack": "kube-prometheus-stack",
        "keda": "keda",
        "prometheus-adapter": "prometheus-adapter",
        "cert-manager": "cert-manager",
    }
    for chart in releases.values():
        assert f"k8s/helm/{chart}.yaml" in text
    assert "--namespace keda" in text, "the broker's NetworkPolicy admits namespace keda"
