"""The import contract, checked over the real import graph: the core (logship/) imports neither
program, the producer and the consumer never import each other, and only ops/ (the operator's
view) may read both. A module-level import, a function-level one and `from x import y` all
count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("logship", "producer", "consumer", "ops")
# package → packages of ours it must never import
FORBIDDEN = {
    "logship": {"producer", "consumer", "ops"},
    "producer": {"consumer", "ops"},
    "consumer": {"producer", "ops"},
    "ops": set(),
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """Our top-level packages that a file imports, with the line of each import."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                found.add((top, node.lineno))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_layering_allows(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no modules found in {package}/"
    broken = [
        f"{path.relative_to(REPO)}:{line} imports {target}"
        for path in files
        for target, line in sorted(imported_packages(path))
        if target in FORBIDDEN[package]
    ]
    assert not broken, "layering broken:\n" + "\n".join(broken)


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import producer.app\n"
        "from consumer import sink\n"
        "def late():\n"
        "    from ops.status import build\n"
        "from . import sibling\n"
        "import json\n"
    )
    assert {target for target, _ in imported_packages(sample)} == {"producer", "consumer", "ops"}
