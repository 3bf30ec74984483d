"""The archive across broker restarts, on a private node: what it holds survives the restart, and
a second sink following it goes on from its recorded place, identical to the consumer's output."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.support.pipeline import REPO, Pipeline, Program
from tests.support.rabbit_node import RabbitNode


def lines(n: int, tag: str) -> bytes:
    return b"".join(f"{tag} {i:07d}\n".encode() for i in range(n))


def test_a_second_sink_and_a_rebuild_across_broker_restarts(
    fault_pipe: Pipeline, node: RabbitNode
) -> None:
    audit = fault_pipe.workdir / "audit.txt"
    fault_pipe.consumer()
    fault_pipe.producer("--batch-max-bytes", "8192").ready()
    sink = Program(
        "consumer",
        ["rebuild", "--output", str(audit), "--follow"],
        fault_pipe.topology.env(),
        fault_pipe.workdir / "rebuild-audit.log",
    )
    fault_pipe.programs.append(sink.start())
    expected = b""
    for round_ in range(2):  # a restart, then one more after the reader reopened once
        chunk = lines(20_000, f"round{round_}")
        fault_pipe.append(chunk)
        expected += chunk
        time.sleep(1)
        node.restart()
    assert fault_pipe.wait_for_output(expected, timeout=120) == expected
    assert fault_pipe.wait_for_output(expected, timeout=120, output=audit) == expected
    time.sleep(1)  # nothing more arrives: no duplicate after the last line
    assert audit.read_bytes() == expected
    assert "archive_reader_reopened" in sink.log()

    restored = fault_pipe.workdir / "restored.txt"
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "rebuild", "--output", str(restored)],
        env={**os.environ, **fault_pipe.topology.env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert restored.read_bytes() == expected
