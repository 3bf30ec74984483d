"""The measurements: end-to-end throughput with CPU and peak RSS per program, latency at a steady
rate, and memory while a private broker blocks publishing. Every run verifies the output byte for
byte."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import latency, pipelines
from bench.common import (
    LINE_BYTES,
    REPO,
    append_from,
    broker_pid,
    cpu_seconds,
    files_equal,
    wait_until,
)
from logship.stages import STAGES, parse_histogram, quantile

MIN_RATE_LINES_S = 2_000  # a pipeline slower than this on a run is reported as failed
GC_KEYS = ("gc_full_collections_producer", "gc_full_collections_consumer")


def _cpu_all(run: pipelines.Running, brokers: list[int]) -> dict[str, float]:
    """CPU seconds of each program, and of the broker's nodes together."""
    cpu = {name: proc.cpu() for name, proc in run.procs().items()}
    cpu["broker"] = sum(cpu_seconds(pid) for pid in brokers)
    return cpu


def throughput(
    kind: str,
    data: Path,
    workdir: Path,
    *,
    url: str,
    producer_args: list[str] | None = None,
    consumer_args: list[str] | None = None,
    broker_pids: list[int] | None = None,
) -> dict[str, Any]:
    """Append `data` to an empty input at disk speed; time it from the first byte appended to the
    last byte durable in the output. `broker_pids`: the VMs whose CPU is the broker's (default:
    the shared node's)."""
    nbytes = data.stat().st_size
    lines = nbytes // LINE_BYTES
    if kind == pipelines.CAT:
        seconds, copy_cpu = pipelines.cat_copy(data, workdir / "output.txt")
        verified = files_equal(data, workdir / "output.txt")
        (workdir / "output.txt").unlink()
        return _result(kind, lines, nbytes, seconds, {"copy": copy_cpu}, {}, verified)
    timeout = 60 + lines / MIN_RATE_LINES_S
    run = pipelines.start(
        kind,
        workdir,
        url=url,
        expect=0 if kind in pipelines.LOGSHIPS else nbytes,
        producer_args=producer_args,
        consumer_args=consumer_args,
    )
    shared = broker_pid()
    brokers = broker_pids if broker_pids is not None else ([shared] if shared else [])
    try:
        cpu0 = _cpu_all(run, brokers)
        t0 = time.time_ns()
        append_from(data, run.input)
        if run.is_logship:
            watcher = run.watcher()

            def durable() -> bool:
                run.check()
                return watcher.size() >= nbytes

            if not wait_until(durable, timeout, interval=0.001):
                raise RuntimeError(f"{kind}: output incomplete after {timeout:.0f} s")
            t1 = time.time_ns()
            cpu1 = _cpu_all(run, brokers)
            peak = {name: proc.memory()[1] for name, proc in run.procs().items()}
        else:
            if not run.reap_consumer(timeout):
                raise RuntimeError(f"{kind}: output incomplete after {timeout:.0f} s")
            t1 = run.done_ns or time.time_ns()
            cpu1 = _cpu_all(run, brokers)
            cpu1["consumer"], consumer_peak = run.rusage["consumer"]
            assert run.producer is not None
            peak = {"producer": run.producer.memory()[1], "consumer": consumer_peak}
        cpu = {name: cpu1[name] - cpu0[name] for name in cpu0}
        verified = files_equal(data, run.output)
    finally:
        run.stop()
    result = _result(kind, lines, nbytes, (t1 - t0) / 1e9, cpu, peak, verified)
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def _result(
    kind: str,
    lines: int,
    nbytes: int,
    seconds: float,
    cpu: dict[str, float],
    peak_rss_mb: dict[str, float],
    verified: bool,
) -> dict[str, Any]:
    return {
        "pipeline": kind,
        "lines": lines,
        "bytes": nbytes,
        "seconds": round(seconds, 4),
        "lines_per_s": round(lines / seconds),
        "mb_per_s": round(nbytes / seconds / 1e6, 1),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "cpu_s_per_million_lines": {k: round(v / lines * 1e6, 4) for k, v in cpu.items()},
        "peak_rss_mb": {k: round(v, 1) for k, v in peak_rss_mb.items()},
        "verified": verified,
    }


def steady_latency(
    kind: str,
    rate: int,
    seconds: float,
    workdir: Path,
    *,
    url: str,
    drain_s: float = 30,
    baseline: Path | None = None,
) -> dict[str, Any]:
    """Append `rate` lines a second for `seconds`; each line's append→durable-output latency."""
    run = pipelines.start(kind, workdir, url=url, baseline=baseline)
    expected = int(rate * seconds) * LINE_BYTES
    try:
        cpu0 = {name: proc.cpu() for name, proc in run.procs().items()}
        writer = subprocess.Popen(
            [sys.executable, "-m", "bench.latency", "--input", str(run.input),
             "--rate", str(rate), "--seconds", str(seconds)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            ms = latency.read(
                run.output, expected, watcher=run.watcher(), timeout=seconds + drain_s
            )
        finally:
            writer.wait(seconds + 60)
        cpu = {name: proc.cpu() - cpu0[name] for name, proc in run.procs().items()}
        peak = {name: proc.memory()[1] for name, proc in run.procs().items()}
        stages = stage_quantiles(run) if run.is_logship else None
        stages = stages or None  # a baseline from before the stage histograms has none
        verified = files_equal(run.input, run.output)
    finally:
        run.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    ordered = sorted(ms.tolist())

    def pct(q: float) -> float:
        return round(float(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]), 2)

    return {
        "pipeline": kind,
        "rate": rate,
        "seconds": seconds,
        "lines": len(ordered),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": round(ordered[-1], 2),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "peak_rss_mb": {k: round(v, 1) for k, v in peak.items()},
        "verified": verified,
        **({"stages": stages} if stages is not None else {}),
    }


def stage_quantiles(run: pipelines.Running) -> dict[str, dict[str, float | None]]:
    """Each stage's p50 and p99 in ms and its count, from the programs' own stage histograms
    (logship/stages.py), scraped at the end of the run: the run started on fresh programs, so
    they hold this run's batches only."""
    found: dict[str, dict[str, float | None]] = {}
    for name, proc in run.procs().items():
        url = f"http://127.0.0.1:{proc.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        for line in text.splitlines():  # how often the collector stopped the loop for long
            if line.startswith('python_gc_collections_total{generation="2"}'):
                found[f"gc_full_collections_{name}"] = {"count": float(line.split()[-1])}
        for stage, buckets in parse_histogram(text, f"logship_{name}_stage_seconds").items():
            p50, p99 = quantile(buckets, 0.5), quantile(buckets, 0.99)
            found[stage] = {
                "p50_ms": None if p50 is None else round(p50 * 1e3, 2),
                "p99_ms": None if p99 is None else round(p99 * 1e3, 2),
                "count": buckets[-1][1],
            }
    return {stage: found[stage] for stage in (*STAGES, *GC_KEYS) if stage in found}


def memory_alarm(data: Path, workdir: Path, *, grow_bytes: int, hold_s: float) -> dict[str, Any]:
    """On a private node: raise the memory alarm (publishing blocked), grow the input by
    `grow_bytes`, sample both programs' RSS while blocked, clear the alarm, drain and verify."""
    sys.path.insert(0, str(REPO))
    from tests.support.rabbit_node import RabbitNode

    workdir.mkdir(parents=True, exist_ok=True)
    with RabbitNode(workdir) as node:
        run = pipelines.start(pipelines.LOGSHIP, workdir / "pipe", url=node.amqp_url)
        assert run.topology is not None
        try:
            return _alarm_phases(run, node, data, grow_bytes, hold_s)
        finally:
            run.stop()


def _sample(run: pipelines.Running, seconds: float, into: dict[str, list[float]]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run.check()
        for name, proc in run.procs().items():
            into.setdefault(name, []).append(proc.memory()[0])
        time.sleep(0.1)


def _alarm_phases(
    run: pipelines.Running, node: Any, data: Path, grow_bytes: int, hold_s: float
) -> dict[str, Any]:
    warm = 10 * 1024 * 1024 // LINE_BYTES * LINE_BYTES
    append_from(data, run.input, warm)
    watcher = run.watcher()
    if not wait_until(lambda: watcher.size() >= warm, 60, interval=0.01):
        raise RuntimeError("memory alarm: warm-up did not arrive")
    before = {name: proc.memory()[0] for name, proc in run.procs().items()}
    node.set_memory_alarm(True)
    time.sleep(1.0)
    blocked: dict[str, list[float]] = {}
    grow = grow_bytes - grow_bytes % LINE_BYTES
    started = time.monotonic()
    append_from(data, run.input, grow)
    _sample(run, max(0.0, hold_s - (time.monotonic() - started)), blocked)
    durable_while_blocked = watcher.size()
    node.set_memory_alarm(False)
    total = warm + grow
    draining: dict[str, list[float]] = {}
    started = time.monotonic()
    while watcher.size() < total:
        if time.monotonic() - started > 300:
            raise RuntimeError("memory alarm: backlog not drained after 300 s")
        _sample(run, 0.5, draining)
    drain_s = time.monotonic() - started
    peak = {name: proc.memory()[1] for name, proc in run.procs().items()}
    verified = files_equal(run.input, run.output)
    return {
        "grow_bytes": grow,
        "hold_s": hold_s,
        "rss_before_mb": {k: round(v, 1) for k, v in before.items()},
        "rss_blocked_max_mb": {k: round(max(v), 1) for k, v in blocked.items()},
        "rss_draining_max_mb": {k: round(max(v), 1) for k, v in draining.items()},
        "peak_rss_mb": {k: round(v, 1) for k, v in peak.items()},
        "durable_while_blocked_bytes": durable_while_blocked,
        "drain_s": round(drain_s, 2),
        "verified": verified,
    }


def cluster_failover(cluster: Any, workdir: Path, *, rate: int, seconds: float) -> dict[str, Any]:
    """logship on the three-node cluster at a steady `rate`: a third of the way in, the node
    leading the queue is killed (SIGKILL) and started again. The failover gap is the longest
    time the durable output did not grow while lines were being written."""
    run = pipelines.start(pipelines.LOGSHIP_CLUSTER, workdir, url=cluster.amqp_url)
    assert run.topology is not None
    queue = run.topology.name
    expected = int(rate * seconds) * LINE_BYTES
    killed: list[str] = []

    def kill_leader() -> None:
        time.sleep(seconds / 3)
        leader = cluster.leader(queue)
        leader.kill()
        killed.append(leader.name)
        leader.start()

    fault = threading.Thread(target=kill_leader, daemon=True)
    try:
        writer = subprocess.Popen(
            [sys.executable, "-m", "bench.latency", "--input", str(run.input),
             "--rate", str(rate), "--seconds", str(seconds)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        fault.start()
        watcher = run.watcher()
        gap, size, changed = 0.0, 0, time.monotonic()
        deadline = time.monotonic() + seconds + 120
        while size < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster failover: output stuck at {size} of {expected}")
            run.check()
            now, current = time.monotonic(), watcher.size()
            if current != size:
                if size:
                    gap = max(gap, now - changed)
                size, changed = current, now
            time.sleep(0.005)
        writer.wait(60)
        fault.join(120)
        verified = files_equal(run.input, run.output)
    finally:
        run.stop()
    if verified:  # else the logs and files stay for a look
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "rate": rate,
        "seconds": seconds,
        "killed": killed[0] if killed else None,
        "failover_gap_s": round(gap, 2),
        "verified": verified,
    }


def rebuild(data: Path, workdir: Path, *, url: str) -> dict[str, Any]:
    """Ship `data` through logship (archive on), then rebuild a second output from the archive
    alone with `logship-consumer rebuild`: lines/s from the archive to a durable output (process
    start and the look at the archive's ends included), its CPU and peak RSS, and the archive's
    size on the broker's disk when the broker's data directory is readable here."""
    nbytes = data.stat().st_size
    lines = nbytes // LINE_BYTES
    timeout = 60 + lines / MIN_RATE_LINES_S
    run = pipelines.start(pipelines.LOGSHIP, workdir, url=url)
    try:
        append_from(data, run.input)
        watcher = run.watcher()

        def shipped() -> bool:
            run.check()
            return watcher.size() >= nbytes

        if not wait_until(shipped, timeout, interval=0.01):
            raise RuntimeError(f"rebuild: the pipeline did not ship the data in {timeout:.0f} s")
        assert run.topology is not None
        disk = stream_disk_bytes(run.topology.archive)
        target = workdir / "out" / "rebuilt.txt"
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "rebuild", "--output", str(target),
             *run.topology.logship_args()],
            env={**os.environ, "PYTHONPATH": str(REPO), "LOGSHIP_LOG__FORMAT": "json"},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.stderr is not None
        if proc.returncode != 0:
            raise RuntimeError(f"rebuild exited {proc.returncode}: {proc.stderr.read()[-2000:]!r}")
        verified = files_equal(data, target)
    finally:
        run.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "lines": lines,
        "bytes": nbytes,
        "seconds": round(seconds, 3),
        "lines_per_s": round(lines / seconds),
        "mb_per_s": round(nbytes / seconds / 1e6, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mb": round(usage.ru_maxrss * 1024 / 1e6, 1),
        "archive_disk_bytes": disk,
        "archive_disk_mb_per_million_lines": (
            None if disk is None else round(disk / lines * 1e6 / 1e6, 1)
        ),
        "verified": verified,
    }


def stream_disk_bytes(stream: str) -> int | None:
    """The bytes of a stream's segment and index files in the local broker's data directory
    (`__<name, '.' as '_'>_<id>`), or None when it cannot be read from here."""
    base = os.environ.get("RABBITMQ_MNESIA_BASE", "/var/lib/rabbitmq/mnesia")
    found = list(Path(base).glob(f"*/stream/__{stream.replace('.', '_')}_*"))
    if not found:
        return None
    return sum(f.stat().st_size for d in found for f in d.iterdir() if f.is_file())
