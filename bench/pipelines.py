"""The pipelines under test, each started the same way on an empty input: logship (quorum or
classic, one node or a three-node cluster), the raw chunk pipeline, the naive pika pair,
syslog-ng, and a plain cat+fsync copy. A pipeline knows how to start, when it is ready, how many
output bytes are durable, how to stop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import syslogng
from bench.common import DurableWatcher, Proc, Topology, free_port, python_proc

LOGSHIP = "logship"
LOGSHIP_CLASSIC = "logship-classic"
LOGSHIP_CLUSTER = "logship-cluster"  # the same programs on a three-node cluster of this machine
LOGSHIP_NO_ARCHIVE = "logship-no-archive"  # what the archive costs: the same run without it
# the same programs from another checkout (`bench.run --baseline DIR`): a change measured before
# and after in the same run, rounds interleaved
LOGSHIP_BASELINE = "logship-baseline"
LOGSHIPS = (LOGSHIP, LOGSHIP_CLASSIC, LOGSHIP_NO_ARCHIVE, LOGSHIP_CLUSTER, LOGSHIP_BASELINE)
RAW = "raw-chunk"
NAIVE = "naive-pika"
SYSLOG_NG = "syslog-ng"
CAT = "cat+fsync"


@dataclass
class Running:
    """One started pipeline: its producing and consuming processes and where its output goes."""

    kind: str
    workdir: Path
    topology: Topology | None
    producer: Proc | None = None
    consumer: Proc | None = None
    done_ns: int | None = None
    rusage: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def input(self) -> Path:
        return self.workdir / "in" / "input.txt"

    @property
    def output(self) -> Path:
        return self.workdir / "out" / "output.txt"

    @property
    def is_logship(self) -> bool:
        return self.kind in LOGSHIPS

    @property
    def synced_file(self) -> Path | None:
        """Where the raw pipeline's consumer records what its fsyncs made durable."""
        return self.workdir / "out" / "synced" if self.kind == RAW else None

    def watcher(self) -> DurableWatcher:
        return DurableWatcher(self.output, logship=self.is_logship, synced=self.synced_file)

    def procs(self) -> dict[str, Proc]:
        named = {"producer": self.producer, "consumer": self.consumer}
        return {k: v for k, v in named.items() if v is not None}

    def check(self) -> None:
        for proc in self.procs().values():
            proc.check()

    def reap_consumer(self, timeout: float) -> bool:
        """For references that exit once they wrote `expect_bytes`: wait for that exit, keep its
        CPU seconds and peak RSS (from wait4) and the time it reported. False on timeout."""
        proc = self.consumer
        assert proc is not None and proc.popen is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.popen.returncode = os.waitstatus_to_exitcode(status)
                self.rusage["consumer"] = (
                    usage.ru_utime + usage.ru_stime,
                    usage.ru_maxrss * 1024 / 1e6,
                )
                assert proc.popen.stdout is not None
                for text in proc.popen.stdout.read().decode().split():
                    if text.isdigit():
                        self.done_ns = int(text)
                return True
            if self.producer is not None:
                self.producer.check()
            time.sleep(0.002)
        return False

    def stop(self) -> None:
        for proc in (self.producer, self.consumer):
            if proc is not None:
                proc.stop()
        if self.topology is not None:
            self.topology.delete()


def _logship(
    run: Running, extra_producer: list[str], extra_consumer: list[str], code: Path | None = None
) -> None:
    """`code`: another checkout to run the programs from (the baseline)."""
    assert run.topology is not None
    amqp = run.topology.logship_args()
    cport, pport = free_port(), free_port()
    env = {"LOGSHIP_LOG__FORMAT": "json"}
    where: dict[str, object] = {}
    if code is not None:
        env["PYTHONPATH"] = str(code)
        where["cwd"] = code
    run.consumer = python_proc(
        "consumer", "consumer",
        ["--output", str(run.output), "--http.port", str(cport), *amqp, *extra_consumer],
        run.workdir, http_port=cport, env=env, **where,
    ).start()  # fmt: skip
    run.consumer.wait_ready()
    run.producer = python_proc(
        "producer", "producer",
        ["--input", str(run.input), "--checkpoint", str(run.workdir / "producer.checkpoint"),
         "--http.port", str(pport), *amqp, *extra_producer],
        run.workdir, http_port=pport, env=env, **where,
    ).start()  # fmt: skip
    run.producer.wait_ready()


def _ready_line(proc: Proc) -> None:
    assert proc.popen is not None and proc.popen.stdout is not None
    first = proc.popen.stdout.readline()
    if first.strip() != b"ready":
        proc.check()
        raise RuntimeError(f"{proc.name} did not start: {first!r}")


def _reference(run: Running, module: str, expect: int, newline: bool = False) -> None:
    assert run.topology is not None
    args = run.topology.ref_args()
    consume = ["consume", "--output", str(run.output), *args]
    if expect:
        consume += ["--expect-bytes", str(expect)]
    if newline:
        consume.append("--newline")
    if run.synced_file is not None:
        consume += ["--synced-file", str(run.synced_file)]
    run.consumer = python_proc("consumer", module, consume, run.workdir, stdout_pipe=True).start()
    _ready_line(run.consumer)
    if run.kind == SYSLOG_NG:
        run.producer = syslogng.proc(run.workdir, run.input, run.topology.url, run.topology.name)
        run.producer.start()
        time.sleep(0.5)  # it connects in the background; a failure shows in check()
        run.producer.check()
        return
    produce = ["produce", "--input", str(run.input), *args]
    run.producer = python_proc("producer", module, produce, run.workdir, stdout_pipe=True).start()
    _ready_line(run.producer)


def start(
    kind: str,
    workdir: Path,
    *,
    url: str,
    expect: int = 0,
    producer_args: list[str] | None = None,
    consumer_args: list[str] | None = None,
    baseline: Path | None = None,
) -> Running:
    """Start `kind` on an empty workdir/in/input.txt (created here), writing workdir/out/output.txt
    (apart: the producer watches its input directory; in production the output is elsewhere).
    `expect` > 0 makes reference consumers exit once they wrote that many bytes. `baseline`: the
    checkout logship-baseline runs from."""
    shutil.rmtree(workdir, ignore_errors=True)  # no state, checkpoint or output of a former run
    for sub in ("in", "out"):
        (workdir / sub).mkdir(parents=True)
    (workdir / "in" / "input.txt").write_bytes(b"")
    queue_type = "classic" if kind == LOGSHIP_CLASSIC else "quorum"
    topology = None if kind == CAT else Topology(url=url, queue_type=queue_type)
    run = Running(kind, workdir, topology)
    try:
        if run.is_logship:
            off = ["--no-archive.enabled"] if kind == LOGSHIP_NO_ARCHIVE else []
            code = baseline if kind == LOGSHIP_BASELINE else None
            if kind == LOGSHIP_BASELINE and code is None:
                raise ValueError("logship-baseline needs a checkout to run (--baseline DIR)")
            _logship(run, [*off, *(producer_args or [])], [*off, *(consumer_args or [])], code)
        elif kind == RAW:
            _reference(run, "bench.raw", expect)
        elif kind == NAIVE:
            _reference(run, "bench.naive", expect)
        elif kind == SYSLOG_NG:
            _reference(run, "bench.naive", expect, newline=True)
    except BaseException:
        run.stop()
        raise
    return run


def cat_copy(source: Path, target: Path) -> tuple[float, float]:
    """`cat source > target && sync target`: (seconds, CPU seconds of the copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    before = os.times()
    subprocess.run(
        ["sh", "-c", 'cat "$0" > "$1" && sync "$1"', str(source), str(target)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return time.monotonic() - started, cpu


def python_version() -> str:
    return sys.version.split()[0]
