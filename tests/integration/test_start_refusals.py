"""Every refusal of the topology by the broker at start is one line on stderr that says what to do,
and exit code 2, for the producer, the consumer and replay-dead: a queue or exchange that exists
with other arguments (PRECONDITION_FAILED), a missing one with declaration off (NOT_FOUND).
Refused permissions (ACCESS_REFUSED) need a private node: tests/fault/test_start_refusals.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.support.pipeline import REPO, Topology

PROGRAMS = ["consumer", "producer"]


def run(module: str, topology: Topology, tmp_path: Path, *extra: str) -> list[str]:
    """Run a program to its exit; return its stderr lines, asserting exit code 2."""
    if module == "consumer":
        args = ["--output", str(tmp_path / "out.txt")]
    elif module == "producer":
        args = ["--input", str(tmp_path / "in.txt"), "--checkpoint", str(tmp_path / "ck")]
    else:
        args = []
    command = [sys.executable, "-m", *module.split(), *args, *extra]
    if module in PROGRAMS:
        command += ["--http.port", "0"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        env={**topology.env(), "PYTHONPATH": str(REPO), "LOGSHIP_LOG__LEVEL": "WARNING"},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("logship: error: ")
    return lines


def declare(
    topology: Topology, *, queue: dict[str, Any] | None = None, exchange_type: str | None = None
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(topology.url))
    try:
        channel = connection.channel()
        if queue is not None:
            channel.queue_declare(topology.queue, durable=True, arguments=queue)
        if exchange_type is not None:
            channel.exchange_declare(topology.prefix, exchange_type, durable=True)
    finally:
        connection.close()


@pytest.mark.parametrize("module", PROGRAMS)
def test_existing_classic_queue_when_quorum_is_wanted(
    module: str, topology: Topology, tmp_path: Path
) -> None:
    declare(
        topology,
        queue={"x-queue-type": "classic", "x-dead-letter-exchange": f"{topology.prefix}.dead"},
    )
    assert run(module, topology, tmp_path) == [
        f"logship: error: queue '{topology.queue}' exists with different arguments "
        "(x-queue-type: 'classic' there, 'quorum' wanted): delete it or set "
        "--amqp.queue-type classic"
    ]


@pytest.mark.parametrize("module", PROGRAMS)
def test_existing_queue_without_dead_letter_exchange(
    module: str, topology: Topology, tmp_path: Path
) -> None:
    declare(topology, queue={"x-queue-type": "classic"})
    [line] = run(module, topology, tmp_path, "--amqp.queue-type", "classic")
    assert f"queue '{topology.queue}' exists with different arguments" in line
    assert "x-dead-letter-exchange: none there" in line
    assert "poison messages are dropped" in line


@pytest.mark.parametrize("module", PROGRAMS)
def test_existing_exchange_of_another_type(module: str, topology: Topology, tmp_path: Path) -> None:
    declare(topology, exchange_type="fanout")
    assert run(module, topology, tmp_path) == [
        f"logship: error: exchange '{topology.prefix}' exists with a different type ('fanout' "
        "there, 'direct' wanted): delete it or set --amqp.exchange to another name"
    ]


@pytest.mark.parametrize(("module", "kind"), [("consumer", "queue"), ("producer", "exchange")])
def test_missing_topology_without_declaring(
    module: str, kind: str, topology: Topology, tmp_path: Path
) -> None:
    assert run(module, topology, tmp_path, "--no-amqp.declare") == [
        f"logship: error: {kind} '{topology.prefix}' does not exist in vhost '/': declare it "
        "beforehand, or drop --no-amqp.declare so logship declares it"
    ]


def test_replay_dead_without_a_dead_letter_queue(topology: Topology, tmp_path: Path) -> None:
    [line] = run("consumer replay-dead", topology, tmp_path)
    assert f"queue '{topology.dead_queue}' does not exist" in line
