"""The import contract, checked over the real import graph: the core (logship/) imports neither
program, the producer and the consumer never import each other, and only ops/ (the operator's
view) may read both. A module-level import, a function-level one and `from x import y` all
count."""

from __future__ import annotations

import ast
import subprocess
import sys
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


# What a plain start (default settings) must not load: each costs memory in every process
# (bench/README.md, "Where the memory goes") and belongs to a feature that is off by default.
NOT_LOADED_BY_DEFAULT = (
    "zstandard",  # --compression zstd only (the consumer imports it at its first zstd body)
    "producer.ingest",  # --ingest.enabled only, with everything under it:
    "producer.ingest_batcher",
    "producer.openapi",
    "producer.receipt_store",
    "ctypes.util",  # mallopt is found without it
)

BUILD_BOTH = """
import asyncio, sys
from logship import lenient_decode
from logship.config import load_settings
from logship.lifecycle import tune_malloc
from producer.settings import ProducerSettings
from producer.metrics import ProducerMetrics
from consumer.settings import ConsumerSettings
from consumer.metrics import ConsumerMetrics

async def build() -> None:
    from consumer.app import ConsumerApp
    from producer.app import ProducerApp

    ProducerApp(load_settings(ProducerSettings, sys.argv[2:], ""), ProducerMetrics())
    ConsumerApp(load_settings(ConsumerSettings, ["--output", sys.argv[1] + "/out.txt"], ""),
                ConsumerMetrics())

tune_malloc()
lenient_decode.install()
asyncio.run(build())
print(" ".join(sorted(sys.modules)))
"""


def modules_after_building(tmp_path: Path, *producer_args: str) -> set[str]:
    """The modules a fresh interpreter holds once both programs are built as their __main__
    builds them (settings, metrics, the app), nothing started."""
    args = ["--input", str(tmp_path / "in.txt"), "--checkpoint", str(tmp_path / "cp")]
    done = subprocess.run(
        [sys.executable, "-c", BUILD_BOTH, str(tmp_path), *args, *producer_args],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=True,
    )  # fmt: skip
    return set(done.stdout.split())


def test_a_plain_start_loads_no_module_of_a_feature_that_is_off(tmp_path: Path) -> None:
    loaded = modules_after_building(tmp_path)
    assert {"producer.app", "consumer.app", "aiohttp.web"} <= loaded  # it did build them
    assert not loaded & set(NOT_LOADED_BY_DEFAULT)


def test_the_ingest_api_and_compression_load_their_modules_when_switched_on(
    tmp_path: Path,
) -> None:
    loaded = modules_after_building(
        tmp_path, "--ingest.enabled", "--compression", "zstd", "--ingest.token", "t"
    )
    assert {"producer.ingest", "producer.openapi", "producer.receipt_store"} <= loaded
