"""Model-based random scenarios against the real producer and consumer (tests/support/model.py):
every seed draws ~20 ops (writes, partial lines, rotations, truncations, rewrites, deletions,
crashes, clean restarts) and the output must be every byte written, once, in order, minus only what
nobody could have read.

    make test                                   a few fixed seeds with DEFAULT_KINDS
    make chaos                                  LOGSHIP_MODEL_SCENARIOS (500) random seeds
    LOGSHIP_MODEL_SEED=123 pytest -s tests/fault/test_model.py          replay one seed
    LOGSHIP_MODEL_OPS=all | a,b,c | +rewrite,-delete                    choose the op kinds
    LOGSHIP_MODEL_LOSS=suffix|reported          how losses are judged (default: auto)
    LOGSHIP_MODEL_SCRIPT=append,copytruncate_fast,append   these ops in this order (a reduced
                                                failure; op names: the Scenario.op_* methods)
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import pytest

from tests.support.model import Scenario, Verdict, parse_kinds, summarise
from tests.support.pipeline import Topology

# The op kinds `make test` (and `make chaos`, unless LOGSHIP_MODEL_OPS says otherwise) draws from:
# all of them (issue 11 widened the set to the outage, rewrite, eager and split kinds):
#   "outage_rotation"    rotations while the producer is down
#   "rewrite"            in-place rewrite with the same first line
#   "copytruncate_fast"  copytruncate of a file the producer has not read yet
#   "eager_rotation"     any rotation before the producer caught up with the file: a producer
#                        stalled for a second on a busy box is down as far as rotation goes
#   "outage_truncate"    truncate/delete while the producer is down (a deleted source's inode
#                        reused by a new file: see test_model_findings.py)
#   "output_rotation"    output.txt renamed + SIGHUP
#   "split_partial"      a line half-written when its file is rotated (no owner yet)
DEFAULT_KINDS = (
    "append",
    "partial",
    "rename",
    "chain",
    "copytruncate",
    "truncate",
    "delete",
    "kill_producer",
    "kill_consumer",
    "term_producer",
    "term_consumer",
    "outage_rotation",
    "rewrite",
    "copytruncate_fast",
    "eager_rotation",
    "outage_truncate",
    "output_rotation",
    "split_partial",
)
MAKE_TEST_SEEDS = (1, 2, 3, 4)
OPS_PER_SCENARIO = int(os.environ.get("LOGSHIP_MODEL_OPS_PER_SCENARIO", "20"))


def kinds() -> set[str]:
    return parse_kinds(os.environ.get("LOGSHIP_MODEL_OPS"), DEFAULT_KINDS)


def seeds() -> tuple[int, ...]:
    chosen = os.environ.get("LOGSHIP_MODEL_SEED")
    if chosen:
        return tuple(int(s) for s in chosen.split(","))
    return MAKE_TEST_SEEDS


def run_one(seed: int, base: Path, broker: str) -> Verdict:
    workdir = base / f"seed-{seed}"
    workdir.mkdir(parents=True)
    topology = Topology(url=broker)
    try:
        script = os.environ.get("LOGSHIP_MODEL_SCRIPT")
        return Scenario(
            seed,
            workdir,
            topology,
            kinds(),
            ops=OPS_PER_SCENARIO,
            script=script.split(",") if script else None,
        ).run()
    finally:
        topology.delete()


@pytest.mark.parametrize("seed", seeds())
def test_model_scenario(seed: int, tmp_path: Path, broker: str) -> None:
    """One seeded scenario: the output is the input, once, in order, minus unpreventable loss."""
    verdict = run_one(seed, tmp_path, broker)
    print("\n" + verdict.report())
    assert verdict.ok, verdict.report()


@pytest.mark.soak  # make chaos (LOGSHIP_CHAOS=1) runs it; deselected elsewhere
@pytest.mark.timeout(0)  # ~5 s a scenario: hundreds of them outlast any per-test timeout
def test_model_chaos(tmp_path: Path, broker: str) -> None:
    """LOGSHIP_MODEL_SCENARIOS random seeds (500 by default) from LOGSHIP_MODEL_BASE (random,
    printed); every failure is printed with its seed, ops and diff summary."""
    count = int(os.environ.get("LOGSHIP_MODEL_SCENARIOS", "500"))
    base = int(os.environ.get("LOGSHIP_MODEL_BASE", random.SystemRandom().randrange(10**6) * 1000))
    print(f"\nmodel chaos: {count} scenarios from seed {base}, kinds {sorted(kinds())}")
    started = time.monotonic()
    verdicts = []
    for seed in range(base, base + count):
        verdict = run_one(seed, tmp_path, broker)
        verdicts.append(verdict)
        if verdict.ok:
            shutil.rmtree(verdict.workdir, ignore_errors=True)
        else:
            print("\n" + verdict.report(), flush=True)
    print(f"\n{summarise(verdicts)}\ntime {time.monotonic() - started:.0f}s")
    failed = [v.seed for v in verdicts if not v.ok]
    assert not failed, f"failed seeds: {failed}"
