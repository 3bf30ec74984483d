"""What every benchmark scenario shares: test data, unique broker topologies, processes with their
CPU and memory read from /proc, byte-exact verification and percentiles."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from consumer.sink import recorded_size
from consumer.statefile import StateReader

REPO = Path(__file__).resolve().parents[1]
BROKER_URL = os.environ.get("LOGSHIP_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
LINE_BYTES = 99  # every benchmark line is exactly this long, newline included
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FILLER = (
    b"GET /api/v1/orders?customer=4711&page=3 200 1532 0.004 host=web-7 trace=9f8e7d6c5b4a "
    b"user-agent=curl/8.5.0 region=eu-west-1 "
) * 2


def line(seq: int) -> bytes:
    """One benchmark line of LINE_BYTES bytes; the sequence number makes every line distinct."""
    head = b"%012d " % seq
    return head + FILLER[seq % 40 : seq % 40 + LINE_BYTES - 1 - len(head)] + b"\n"


def make_data(path: Path, lines: int) -> Path:
    """Write `lines` benchmark lines to `path` once; later runs reuse the file."""
    if path.exists() and path.stat().st_size == lines * LINE_BYTES:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        block = 100_000
        for first in range(0, lines, block):
            out.write(b"".join(line(i) for i in range(first, min(lines, first + block))))
    tmp.rename(path)
    return path


def append_from(
    source: Path, target: Path, nbytes: int | None = None, chunk: int = 16 << 20
) -> int:
    """Append `nbytes` of `source` (all of it by default, repeated if it is shorter) to `target`
    in large kernel-side copies: the writer must never be what limits a pipeline."""
    size = source.stat().st_size
    want = size if nbytes is None else nbytes
    src = os.open(source, os.O_RDONLY)
    dst = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        offset_out = os.fstat(dst).st_size
        done = 0
        while done < want:
            offset_in = done % size
            step = min(chunk, want - done, size - offset_in)
            copied = os.copy_file_range(src, dst, step, offset_in, offset_out)
            if copied <= 0:
                raise OSError(f"copy_file_range copied {copied} bytes")
            done += copied
            offset_out += copied
    finally:
        os.close(src)
        os.close(dst)
    return done


def files_equal(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x = fa.read(8 << 20)
            if x != fb.read(8 << 20):
                return False
            if not x:
                return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[index])


def median(values: Sequence[float]) -> float:
    """The middle value; of an even count, the mean of the two middle ones (the lower of them
    alone would flatter two runs)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


# -- processes ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB (10^6 bytes) from /proc/PID/status."""
    rss = hwm = 0.0
    try:
        for text in Path(f"/proc/{pid}/status").read_text().splitlines():
            if text.startswith("VmRSS:"):
                rss = int(text.split()[1]) * 1024 / 1e6
            elif text.startswith("VmHWM:"):
                hwm = int(text.split()[1]) * 1024 / 1e6
    except (FileNotFoundError, ProcessLookupError):
        pass
    return rss, hwm


def broker_pid() -> int | None:
    """The Erlang VM of the shared broker (the Debian service's, home /var/lib/rabbitmq)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"beam.smp" in cmdline and b"/var/lib/rabbitmq" in cmdline:
            return int(entry.name)
    return None


@dataclass
class Proc:
    """A program under test: its process, log file and CPU/memory readings."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    popen: subprocess.Popen[bytes] | None = None
    http_port: int | None = None
    stdout_pipe: bool = False

    def start(self) -> Proc:
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=env,
                cwd=self.cwd,
                stdout=subprocess.PIPE if self.stdout_pipe else log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def memory(self) -> tuple[float, float]:
        return memory_mb(self.pid)

    def check(self) -> None:
        if self.popen is not None and self.popen.poll() not in (None, 0):
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name} exited {self.popen.returncode}:\n{tail}")

    def wait_ready(self, timeout: float = 30) -> None:
        """Poll /readyz (logship programs) until it answers 200."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        while time.monotonic() < deadline:
            self.check()
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout} s")

    def wait_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if self.log.exists() and text in self.log.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} never logged {text!r}")

    def stop(self, timeout: float = 30) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)


def python_proc(name: str, module: str, args: list[str], workdir: Path, **kw: object) -> Proc:
    proc = Proc(name, [sys.executable, "-m", module, *args], workdir / f"{name}.log", cwd=REPO)
    for key, value in kw.items():
        setattr(proc, key, value)
    return proc


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


# -- broker topology ------------------------------------------------------------------------------


@dataclass
class Topology:
    """Unique exchange, queue and dead-letter names for one run; deleted afterwards."""

    url: str = BROKER_URL
    queue_type: str = "quorum"
    name: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:10]}")

    def logship_args(self) -> list[str]:
        return [
            "--amqp.url", self.url,
            "--amqp.queue", self.name,
            "--amqp.exchange", self.name,
            "--amqp.routing-key", self.name,
            "--amqp.dead-letter-exchange", f"{self.name}.d",
            "--amqp.dead-letter-queue", f"{self.name}.d",
            "--amqp.queue-type", self.queue_type,
            "--archive.queue", self.archive,
        ]  # fmt: skip

    @property
    def archive(self) -> str:
        return f"{self.name}.a"

    def ref_args(self) -> list[str]:
        return ["--url", self.url, "--name", self.name, "--queue-type", self.queue_type]

    def delete(self) -> None:
        """Remove queues and exchanges (a quorum queue refuses `if_unused`)."""
        import pika

        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.url))
        except Exception:
            return
        try:
            channel = connection.channel()
            for queue in (self.name, f"{self.name}.d", self.archive):
                channel.queue_delete(queue)
            for exchange in (self.name, f"{self.name}.d"):
                channel.exchange_delete(exchange)
        finally:
            connection.close()


def logship_state_size(output: Path) -> int:
    """Bytes of `output` that logship's consumer made durable (its state file is written after the
    data's fsync and before the acknowledgement)."""
    return recorded_size(output)


class DurableWatcher:
    """How many bytes of an output are durable now: the size recorded in logship's state file
    (written in place after the data's fdatasync, before the ack; followed by a StateReader, which
    reads two slot headers per call and a record only when a new one landed); for the raw
    pipeline the size its consumer writes to `synced` after each fsync, at the same point; else
    (consumers that never fsync) the file's size."""

    def __init__(self, output: Path, *, logship: bool, synced: Path | None = None) -> None:
        self.output = output
        self.logship = logship
        self.synced = synced
        self._reader = StateReader(output.with_name(output.name + ".state"))
        self._size = 0

    def size(self) -> int:
        if self.synced is not None:
            try:
                with self.synced.open("rb") as handle:
                    return int(handle.read(20) or 0)
            except (FileNotFoundError, ValueError):
                return 0  # not created yet, or caught while first written
        if not self.logship:
            try:
                return os.stat(self.output).st_size
            except FileNotFoundError:
                return 0
        try:
            payload = self._reader.poll()
            if payload is not None:
                self._size = max(self._size, int(json.loads(payload)["size"]))
        except (OSError, ValueError, KeyError):
            pass  # a state file being replaced or written: the next call reads it
        return self._size
