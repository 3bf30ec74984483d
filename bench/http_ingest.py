"""HTTP ingest: lines/s through POSTs of 1,000 lines, and p50/p99 of POST→confirmed and
POST→written at a steady request rate, for logship's producer (`--ingest.enabled`, its consumer
running) beside the reference (bench/http_reference.py: an aiohttp handler publishing each body
with a confirm through aio-pika; the raw chunk consumer drains its queue) in the same run, through
the same aiohttp client.

POST→confirmed is the answer time of a plain POST (logship answers after the broker's confirm of
every batch of the body; the reference after the confirm of its one message). POST→written is the
answer time of `POST ?wait=written` (after the consumer's fsync and state write, reported back as
a written receipt): the reference does not say when its consumer wrote, so it has no such column.
Latencies are taken from each request's scheduled time (open loop), so a stall counts for every
request it delays."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import pipelines
from bench.common import LINE_BYTES, Proc, Topology, free_port, line, percentile, python_proc

LOGSHIP_HTTP = "logship-http"  # production defaults: the archive stream on (two broker writes)
NO_ARCHIVE = "logship-http-no-archive"  # the broker does what it does for the reference
REFERENCE = "aiohttp+aio-pika"
CONNECTIONS = 64  # client connections at most (keep-alive)
THROUGHPUT_CONCURRENCY = 8  # POSTs in flight in the throughput run


def body_of(lines: int, first: int = 0) -> bytes:
    return b"".join(line(first + i) for i in range(lines))


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> int:
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        return response.status


async def throughput(url: str, body: bytes, requests: int) -> dict[str, Any]:
    """`requests` POSTs of `body`, THROUGHPUT_CONCURRENCY at a time: lines/s answered 200."""
    headers = {"Content-Type": "application/octet-stream"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                statuses.append(await _post(session, url, body, headers))

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(THROUGHPUT_CONCURRENCY)))
        seconds = time.monotonic() - started
    ok = statuses.count(200)
    lines = body.count(b"\n")
    return {
        "requests": requests,
        "ok": ok,
        "seconds": round(seconds, 3),
        "lines_per_s": round(ok * lines / seconds),
        "requests_per_s": round(ok / seconds, 1),
    }


async def steady(url: str, body: bytes, rate: float, seconds: float) -> dict[str, Any]:
    """POSTs at `rate` a second for `seconds`, each timed from when it was due."""
    headers = {"Content-Type": "application/octet-stream"}
    latencies: list[float] = []
    failed = 0
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(due: float) -> None:
            nonlocal failed
            status = await _post(session, url, body, headers)
            if status == 200:
                latencies.append((time.monotonic() - due) * 1000)
            else:
                failed += 1

        tasks: list[asyncio.Task[None]] = []
        started = time.monotonic()
        total = int(rate * seconds)
        for i in range(total):
            due = started + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
    return {
        "rate": rate,
        "requests": total,
        "failed": failed,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies, default=float("nan")), 2),
    }


def _start_reference(workdir: Path, url: str) -> tuple[list[Proc], Topology, int]:
    """The reference server, and the raw chunk pipeline's consumer draining its queue (so the
    machine carries a consumer in both runs, as it does for logship)."""
    topology = Topology(url=url)
    port = free_port()
    consume = ["consume", "--output", str(workdir / "reference-output.txt")]
    consumer = python_proc("http-reference-consumer", "bench.raw",
                           [*consume, *topology.ref_args()], workdir, stdout_pipe=True)  # fmt: skip
    args = ["--url", url, "--name", topology.name, "--port", str(port)]
    server = python_proc("http-reference", "bench.http_reference", args, workdir, stdout_pipe=True)
    procs = [consumer.start()]
    try:
        _ready_line(consumer)
        procs.append(server.start())
        _ready_line(server)
    except BaseException:
        for proc in procs:
            proc.stop()
        topology.delete()
        raise
    return procs, topology, port


def _ready_line(proc: Proc) -> None:
    assert proc.popen is not None and proc.popen.stdout is not None
    if proc.popen.stdout.readline().strip() != b"ready":
        proc.check()
        raise RuntimeError(f"{proc.name} did not start")


def _verified(run: pipelines.Running, expected: bytes, timeout: float = 60) -> bool:
    """logship's output holds exactly what was POSTed, once durable."""
    watcher = run.watcher()
    deadline = time.monotonic() + timeout
    while watcher.size() < len(expected) and time.monotonic() < deadline:
        time.sleep(0.05)
    return run.output.read_bytes() == expected


def _logship(
    kind: str,
    workdir: Path,
    url: str,
    big: bytes,
    small: bytes,
    requests: int,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    logship = pipelines.start(kind, workdir, url=url, producer_args=["--ingest.enabled"])
    try:
        assert logship.producer is not None
        base = f"http://127.0.0.1:{logship.producer.http_port}/v1/lines"
        result = asyncio.run(throughput(base, big, requests))
        result["verified"] = _verified(logship, big * result["ok"])
        result["confirmed"] = asyncio.run(steady(base, small, rate, seconds))
        result["written"] = asyncio.run(steady(base + "?wait=written", small, rate, seconds))
        return result
    finally:
        logship.stop()


def run(
    workdir: Path,
    *,
    url: str,
    post_lines: int,
    requests: int,
    rate: float,
    seconds: float,
    latency_lines: int,
    rounds: int = 3,
) -> dict[str, Any]:
    """`rounds` rounds of the three servers, every other round in reverse order (one short run
    is at the machine's mercy: a full run once measured 76 % and 99 % of the reference minutes
    apart); the section's rows are the medians, `rounds` keeps every run."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    big, small = body_of(post_lines), body_of(latency_lines, 10_000_000)
    out: dict[str, Any] = {
        "config": {
            "post_lines": post_lines,
            "line_bytes": LINE_BYTES,
            "requests": requests,
            "concurrency": THROUGHPUT_CONCURRENCY,
            "rate": rate,
            "seconds": seconds,
            "latency_lines": latency_lines,
            "rounds": rounds,
        },
        "rounds": [],
    }
    kinds = {LOGSHIP_HTTP: pipelines.LOGSHIP, NO_ARCHIVE: pipelines.LOGSHIP_NO_ARCHIVE}
    order = [LOGSHIP_HTTP, NO_ARCHIVE, REFERENCE]
    for round_ in range(rounds):
        results: dict[str, Any] = {}
        for name in order if round_ % 2 == 0 else order[::-1]:
            where = workdir / f"{name}-{round_}"
            if name == REFERENCE:
                results[name] = _reference(where, url, big, small, requests, rate, seconds)
            else:
                results[name] = _logship(
                    kinds[name], where, url, big, small, requests, rate, seconds
                )
        out["rounds"].append(results)
    for name in order:
        out[name] = _median_of([r[name] for r in out["rounds"]])
    ratios = [
        r[NO_ARCHIVE]["lines_per_s"] / max(1, r[REFERENCE]["lines_per_s"]) for r in out["rounds"]
    ]
    out["throughput_share"] = round(statistics.median(ratios), 3)
    out["throughput_shares"] = [round(x, 3) for x in ratios]
    return out


def _reference(
    workdir: Path, url: str, big: bytes, small: bytes, requests: int, rate: float, seconds: float
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    procs, topology, port = _start_reference(workdir, url)
    try:
        base = f"http://127.0.0.1:{port}/v1/lines"
        result = asyncio.run(throughput(base, big, requests))
        result["confirmed"] = asyncio.run(steady(base, small, rate, seconds))
        return result
    finally:
        for proc in procs:
            proc.stop()
        topology.delete()


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from several runs: the median of each figure, and the p99s' spread."""
    first = dict(runs[0])
    first["lines_per_s"] = round(statistics.median(r["lines_per_s"] for r in runs))
    first["requests_per_s"] = round(statistics.median(r["requests_per_s"] for r in runs), 1)
    for key in ("confirmed", "written"):
        if not isinstance(first.get(key), dict):
            continue
        cells = [r[key] for r in runs if isinstance(r.get(key), dict)]
        merged = dict(cells[0])
        for figure in ("p50_ms", "p99_ms"):
            values = [c[figure] for c in cells if c.get(figure) is not None]
            if values:
                merged[figure] = round(statistics.median(values), 2)
                merged[f"{figure}_spread"] = [min(values), max(values)]
        first[key] = merged
    first["verified"] = all(r.get("verified", True) for r in runs)
    return first


def lines_of(section: dict[str, Any]) -> str:
    """The section as a small table for the run's printout."""
    rows = [
        "HTTP ingest (POSTs of {post_lines:,} lines; latency at {rate:,.0f} requests/s of "
        "{latency_lines} lines):".format(**section["config"]),
        "| server | lines/s | requests/s | POST→confirmed p50/p99 ms | POST→written p50/p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in (LOGSHIP_HTTP, NO_ARCHIVE, REFERENCE):
        result = section.get(name)
        if not result:
            continue
        confirmed = result.get("confirmed", {})
        written = result.get("written")
        rows.append(
            f"| {name} | {result['lines_per_s']:,} | {result['requests_per_s']:,} | "
            f"{confirmed.get('p50_ms')} / {confirmed.get('p99_ms')} | "
            + (f"{written['p50_ms']} / {written['p99_ms']} |" if written else "n/a |")
        )
    ours, ref = section.get(NO_ARCHIVE), section.get(REFERENCE)
    if ours and ref:
        share = section.get("throughput_share", ours["lines_per_s"] / max(1, ref["lines_per_s"]))
        shares = ", ".join(f"{x:.0%}" for x in section.get("throughput_shares", []))
        rows.append(
            f"logship (no archive, like the reference) at {share:.0%} of the reference's "
            f"throughput (median of rounds: {shares}); POST→confirmed p99 "
            f"{ours['confirmed']['p99_ms']} vs {ref['confirmed']['p99_ms']} ms (medians)"
        )
    return "\n".join(rows)
