"""Running the real producer and consumer as processes, with unique topology names per test, and
comparing input and output bytes."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("CI"))
BROKER_URL = os.environ.get("LOGSHIP_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def broker_reachable(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Topology:
    """Unique exchange, queue and dead-letter names for one test."""

    prefix: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:10]}")
    queue_type: str = "quorum"
    url: str = BROKER_URL

    @property
    def queue(self) -> str:
        return self.prefix

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def archive(self) -> str:
        return f"{self.prefix}.archive"

    def env(self) -> dict[str, str]:
        return {
            "LOGSHIP_AMQP__URL": self.url,
            "LOGSHIP_AMQP__EXCHANGE": self.prefix,
            "LOGSHIP_AMQP__QUEUE": self.prefix,
            "LOGSHIP_AMQP__ROUTING_KEY": self.prefix,
            "LOGSHIP_AMQP__DEAD_LETTER_EXCHANGE": f"{self.prefix}.dead",
            "LOGSHIP_AMQP__DEAD_LETTER_QUEUE": f"{self.prefix}.dead",
            "LOGSHIP_AMQP__QUEUE_TYPE": self.queue_type,
            "LOGSHIP_ARCHIVE__QUEUE": self.archive,
        }

    def delete(self) -> None:
        """Remove the test's queues and exchanges (quorum queues need if_unused=False)."""
        import pika

        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.url))
        except Exception:
            return
        try:
            channel = connection.channel()
            for queue in (self.queue, self.dead_queue, self.archive):
                channel.queue_delete(queue)
            for exchange in (self.prefix, f"{self.prefix}.dead", f"{self.prefix}.receipts"):
                channel.exchange_delete(exchange)
        finally:
            connection.close()


def declare_topology(
    topology: Topology, workdir: Path, *extra: str, checkpoint: str = "ck"
) -> None:
    """Declare a test's exchanges and queues the way the programs do: a producer `--once` run
    over a file that does not exist, which ships nothing and exits 0."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "producer",
            "--once",
            *extra,
            "--input",
            str(workdir / "absent-input.txt"),
            "--checkpoint",
            str(workdir / checkpoint),
            "--http.port",
            "0",
        ],
        env={**topology.env(), "PYTHONPATH": str(REPO)},
        check=True,
        timeout=60,
        cwd=workdir,
    )


class Program:
    """One logship process: started with `python -m <module>`, its stderr kept in a log file."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Program:
        full_env = {**os.environ, "LOGSHIP_LOG__FORMAT": "json", **self.env}
        full_env["PYTHONPATH"] = str(REPO)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                env=full_env,
                stdout=log,
                stderr=log,
                cwd=REPO,
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.running and self.proc is not None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_event(self, event: str, timeout: float = 30, after: int = 0) -> None:
        """Wait until the program logged `event` (a structured log event name)."""
        needle = f'"event": "{event}"'
        if not wait_until(lambda: needle in self.log()[after:], timeout):
            raise AssertionError(f"{self.module} never logged {event}:\n{self.log()[-3000:]}")

    def ready(self, timeout: float = 30) -> Program:
        """Wait until connected: consuming (consumer) or watching its input (producer)."""
        self.wait_for_event(
            "consumer_consuming" if self.module == "consumer" else "producer_watching", timeout
        )
        return self


@dataclass
class Pipeline:
    """Input, output and checkpoint of one test, and the programs that connect them."""

    workdir: Path
    topology: Topology
    programs: list[Program] = field(default_factory=list)

    @property
    def input(self) -> Path:
        return self.workdir / "input.txt"

    @property
    def output(self) -> Path:
        return self.workdir / "output.txt"

    @property
    def checkpoint(self) -> Path:
        return self.workdir / "producer.checkpoint"

    def producer(
        self, *extra: str, env: dict[str, str] | None = None, checkpoint: Path | None = None
    ) -> Program:
        args = [
            "--input",
            str(self.input),
            "--checkpoint",
            str(checkpoint or self.checkpoint),
            "--http.port",
            "0",
            *extra,
        ]
        program = Program(
            "producer", args, {**self.topology.env(), **(env or {})}, self.workdir / "producer.log"
        )
        self.programs.append(program)
        return program.start()

    def consumer(
        self, *extra: str, output: Path | None = None, env: dict[str, str] | None = None
    ) -> Program:
        target = output or self.output
        args = ["--output", str(target), "--http.port", "0", *extra]
        program = Program(
            "consumer",
            args,
            {**self.topology.env(), **(env or {})},
            self.workdir / f"consumer-{target.name}.log",
        )
        self.programs.append(program)
        return program.start()

    def append(self, data: bytes, path: Path | None = None) -> None:
        with (path or self.input).open("ab") as handle:
            handle.write(data)

    def wait_for_output(
        self, expected: bytes | int, timeout: float = 60, output: Path | None = None
    ) -> bytes:
        """Wait until the output holds `expected` (bytes, or a size); return what it holds."""
        target = output or self.output
        size = expected if isinstance(expected, int) else len(expected)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if target.exists() and target.stat().st_size >= size:
                break
            self.assert_alive()
            time.sleep(0.05)
        data = target.read_bytes() if target.exists() else b""
        return data

    def assert_alive(self) -> None:
        for program in self.programs:
            if program.proc is not None and program.proc.poll() not in (None, 0, -9, -15, 130):
                raise AssertionError(
                    f"{program.module} exited {program.proc.returncode}:\n{program.log()[-3000:]}"
                )

    def stop_all(self) -> None:
        for program in self.programs:
            if program.running:
                program.signal(signal.SIGTERM)
        for program in self.programs:
            if program.proc is not None:
                try:
                    program.wait(30)
                except subprocess.TimeoutExpired:
                    program.kill()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@contextmanager
def pipeline(workdir: Path, topology: Topology | None = None) -> Iterator[Pipeline]:
    topo = topology or Topology()
    pipe = Pipeline(workdir, topo)
    try:
        yield pipe
    finally:
        pipe.stop_all()
        topo.delete()
