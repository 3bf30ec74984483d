"""The service skeleton both programs run on (logship/service.py), with a program that only
records what the skeleton asks of it, against the real broker: one exit-code policy (graceful
stop 0, unexpected cancellation or crash 1, a refusal raised for its one-line error) and one
bounded shutdown whatever happened."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from logship.amqp import TopologyError
from logship.config import AmqpSettings, HttpSettings
from logship.connection_metrics import ConnectionMetrics
from logship.service import EXIT_FAILED, EXIT_STOPPED, Service
from tests.support.pipeline import Pipeline, free_port


class Recorder:
    """A program whose main loop does what the test says, and which notes each call."""

    def __init__(self, loop_body: str = "return", *, fail_in: str = "") -> None:
        self.stop = asyncio.Event()
        self.loop_body = loop_body
        self.fail_in = fail_in
        self.calls: list[str] = []
        self.connection: AbstractRobustConnection | None = None

    def ready(self) -> bool:
        return self.connection is not None

    async def prepare(self, service: Service) -> None:
        self.calls.append("prepare")
        if self.fail_in == "prepare":
            raise OSError(13, "Permission denied", "/out/output.txt")

        async def background() -> None:
            await asyncio.Event().wait()

        service.spawn(background(), "recorder-background")

    async def start(self, connection: AbstractRobustConnection, service: Service) -> None:
        self.calls.append("start")
        self.connection = connection
        if self.fail_in == "start-refused":
            raise TopologyError("broker refused the topology: test")
        if self.fail_in == "start-oserror":
            raise OSError(2, "No such file or directory", "/nowhere/ck")

    async def main_loop(self) -> None:
        self.calls.append("main_loop")
        if self.loop_body == "cancelled":
            raise asyncio.CancelledError  # a library cancelled what we awaited
        if self.loop_body == "crash":
            raise RuntimeError("a bug")
        if self.loop_body == "signal":
            os.kill(os.getpid(), signal.SIGTERM)
            await self.stop.wait()
        if self.loop_body == "stop-then-cancelled":
            self.stop.set()
            raise asyncio.CancelledError

    async def drain(self, *, refused: bool) -> None:
        self.calls.append(f"drain(refused={refused})")

    def close(self, *, refused: bool) -> None:
        self.calls.append(f"close(refused={refused})")

    def stopped(self) -> None:
        self.calls.append("stopped")


def service(program: Recorder, broker: str) -> Service:
    registry = CollectorRegistry()
    return Service(
        program,
        name="logship-test",
        amqp=AmqpSettings(url=SecretStr(broker)),
        http=HttpSettings(host="127.0.0.1", port=0),
        registry=registry,
        connection_metrics=ConnectionMetrics("test", registry),
    )


SHUTDOWN = ["drain(refused=False)", "close(refused=False)", "stopped"]


@pytest.mark.parametrize(
    ("body", "code"),
    [("return", EXIT_STOPPED), ("stop-then-cancelled", EXIT_STOPPED), ("cancelled", EXIT_FAILED)],
)
async def test_exit_code_of_each_way_the_main_loop_ends(
    broker: str, body: str, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Done or asked to stop: 0. A cancellation nobody asked for: 1, said once (both programs
    alike; the producer used to exit 0 there)."""
    program = Recorder(body)
    runner = service(program, broker)
    with caplog.at_level(logging.ERROR, logger="logship.service"):
        assert await runner.run(signals=False) == code
    assert program.calls == ["prepare", "start", "main_loop", *SHUTDOWN]
    assert program.stop.is_set()
    assert runner.connection is not None and runner.connection.is_closed
    unexpected = [r for r in caplog.records if r.getMessage() == "cancelled_unexpectedly"]
    assert len(unexpected) == (1 if code == EXIT_FAILED else 0)


async def test_a_stop_signal_is_a_graceful_stop(broker: str) -> None:
    program = Recorder("signal")
    assert await service(program, broker).run() == EXIT_STOPPED
    assert program.calls == ["prepare", "start", "main_loop", *SHUTDOWN]


async def test_a_crash_after_start_is_logged_with_its_traceback_and_exits_1(
    broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    program = Recorder("crash")
    with caplog.at_level(logging.ERROR, logger="logship.service"):
        assert await service(program, broker).run(signals=False) == EXIT_FAILED
    assert program.calls == ["prepare", "start", "main_loop", *SHUTDOWN]
    (crash,) = [r for r in caplog.records if r.getMessage() == "crashed"]
    assert crash.__dict__["error"] == "RuntimeError: a bug"
    assert "in main_loop" in crash.__dict__["traceback"]


async def test_a_refusal_at_start_is_raised_after_a_shutdown_that_knows_it(broker: str) -> None:
    """The caller prints the refusal's one line (exit 2); the program was told, so it leaves no
    files, and says no stopped line."""
    program = Recorder(fail_in="start-refused")
    runner = service(program, broker)
    with pytest.raises(TopologyError):
        await runner.run(signals=False)
    assert program.calls == ["prepare", "start", "drain(refused=True)", "close(refused=True)"]
    assert runner.connection is not None and runner.connection.is_closed


async def test_other_errors_before_the_start_returned_are_the_callers_to_say(broker: str) -> None:
    """Not a crash: a file the settings name that cannot be used is the caller's one line."""
    program = Recorder(fail_in="start-oserror")
    with pytest.raises(OSError, match="No such file"):
        await service(program, broker).run(signals=False)
    assert program.calls == ["prepare", "start", *SHUTDOWN]


async def test_a_failed_prepare_stops_only_the_telemetry_server(broker: str) -> None:
    program = Recorder(fail_in="prepare")
    runner = service(program, broker)
    with pytest.raises(PermissionError):
        await runner.run(signals=False)
    assert program.calls == ["prepare"]
    assert runner.connection is None


@pytest.mark.parametrize("module", ["producer", "consumer"])
def test_sigterm_while_waiting_for_the_broker_is_a_graceful_stop(
    pipe: Pipeline, module: str
) -> None:
    """A pod deleted while the broker is away: exit 0 like any stop, not exit 2 with the last
    connection error (as both programs did)."""
    nobody = {"LOGSHIP_AMQP__URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}
    program = pipe.producer(env=nobody) if module == "producer" else pipe.consumer(env=nobody)
    program.wait_for_event("amqp_connect_failed", timeout=20)
    assert program.terminate() == 0, program.log()[-2000:]
    assert "error:" not in program.log()
