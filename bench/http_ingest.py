"""HTTP ingest: lines/s through POSTs of 1,000 lines, and p50/p99 of POST→confirmed and
POST→written at a steady request rate, for logship's producer (`--ingest.enabled`, its consumer
running) beside the reference (bench/http_reference.py: an aiohttp handler publishing each body
with a confirm through aio-pika; the raw chunk consumer drains its queue) and a null server (the
same handler answering once the body is read, no broker: the floor the client, the HTTP stack and
the machine leave), in the same run, through the same aiohttp client.

Every server is started once and stays up for the whole section; the measurements take turns:
throughput in `rounds` rounds, latency in `segments` short segments per target, every other
round or segment in reverse order, each segment on fresh keep-alive connections warmed up for
WARMUP_S before its clock starts. So drift on the shared machine falls on every target alike, and
the comparison is made per segment (logship's p99 over the reference's in the same segment; the
median of those ratios decides), with the pooled percentiles of all segments beside it.

POST→confirmed is the answer time of a plain POST (logship answers after the broker's confirm of
every batch of the body; the reference after the confirm of its one message). POST→written is the
answer time of `POST ?wait=written` (after the consumer's fsync and state write, reported back as
a written receipt): the reference does not say when its consumer wrote, so it has no such column.
Latencies are taken from each request's scheduled time (open loop), so a stall counts for every
request it delays; how late the client itself started requests (`late_p99_ms`) and the share of a
core it used (`client_cpu`) show whether the load generator kept up."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench import pipelines
from bench.common import LINE_BYTES, Proc, Topology, free_port, line, percentile, python_proc
from logship.stages import parse_histogram, quantile

LOGSHIP_HTTP = "logship-http"  # production defaults: the archive stream on (two broker writes)
NO_ARCHIVE = "logship-http-no-archive"  # the broker does what it does for the reference
REFERENCE = "aiohttp+aio-pika"
NULL = "aiohttp-null"  # no broker: the client's and the HTTP stack's own share
BASELINE = "logship-http-baseline"  # no archive, from another checkout (--baseline): before/after
SERVERS = (LOGSHIP_HTTP, NO_ARCHIVE, REFERENCE, NULL)
WRITTEN = "written"  # the `?wait=written` target of a logship server: "<name> written"
CONNECTIONS = 64  # client connections at most (keep-alive)
THROUGHPUT_CONCURRENCY = 8  # POSTs in flight in the throughput run
WARMUP_S = 0.5  # each segment's first half second opens its connections, unmeasured
HEADERS = {"Content-Type": "application/octet-stream"}


def body_of(lines: int, first: int = 0) -> bytes:
    return b"".join(line(first + i) for i in range(lines))


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    async with session.post(url, data=body, headers=HEADERS) as response:
        await response.read()
        return response.status


async def throughput(url: str, body: bytes, requests: int) -> dict[str, Any]:
    """`requests` POSTs of `body`, THROUGHPUT_CONCURRENCY at a time: lines/s answered 200."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                statuses.append(await _post(session, url, body))

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


@dataclass
class Segment:
    """One target's share of one latency segment: every request's latency and lateness, ms."""

    latencies: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)  # the client's own delay before sending
    landed: int = 0  # answered 200 or 202 (the body is in the output either way)
    failed: int = 0
    client_cpu: float = 0.0  # share of one core the client process used
    server_cpu_s: float = 0.0  # CPU seconds of the server's own processes, warm-up included
    sent: int = 0  # requests, warm-up included

    def summary(self, rate: float) -> dict[str, Any]:
        return {
            "rate": rate,
            "requests": len(self.latencies) + self.failed,
            "failed": self.failed,
            "p50_ms": round(percentile(self.latencies, 50), 2),
            "p99_ms": round(percentile(self.latencies, 99), 2),
            "max_ms": round(max(self.latencies, default=float("nan")), 2),
            "late_p99_ms": round(percentile(self.late, 99), 2),
            "client_cpu": round(self.client_cpu, 2),
        }


async def steady(
    url: str, body: bytes, rate: float, seconds: float, *, warmup: float = WARMUP_S
) -> Segment:
    """POSTs at `rate` a second for `warmup` + `seconds` on one session (keep-alive), each timed
    from when it was due; the warm-up's requests open the connections and are not counted."""
    out = Segment()
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(due: float, counted: bool) -> None:
            late = (time.monotonic() - due) * 1000
            status = await _post(session, url, body)
            if status in (200, 202):
                out.landed += 1
            if not counted:
                return
            if status == 200:
                out.latencies.append((time.monotonic() - due) * 1000)
                out.late.append(late)
            else:
                out.failed += 1

        tasks: list[asyncio.Task[None]] = []
        started = time.monotonic()
        first_counted = int(rate * warmup)
        total = first_counted + int(rate * seconds)
        out.sent = total
        cpu = wall = 0.0
        for i in range(total):
            if i == first_counted:
                cpu, wall = time.process_time(), time.monotonic()
            due = started + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, i >= first_counted)))
        await asyncio.gather(*tasks)
        out.client_cpu = (time.process_time() - cpu) / max(1e-9, time.monotonic() - wall)
    return out


def _wait_ready(proc: Proc) -> None:
    assert proc.popen is not None and proc.popen.stdout is not None
    if proc.popen.stdout.readline().strip() != b"ready":
        proc.check()
        raise RuntimeError(f"{proc.name} did not start")


@dataclass
class Servers:
    """Every server of the section, up at once: name → POST URL; what to stop afterwards."""

    urls: dict[str, str] = field(default_factory=dict)
    logships: dict[str, pipelines.Running] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    topologies: list[Topology] = field(default_factory=list)
    owned: dict[str, list[Proc]] = field(default_factory=dict)  # each server's processes

    def cpu(self, target: str) -> float:
        """CPU seconds so far of the processes serving `target` (its server and consumer; the
        shared broker's are not anyone's alone)."""
        if target.endswith(f" {WRITTEN}"):
            target = target.removesuffix(f" {WRITTEN}")
        run = self.logships.get(target)
        procs = list(run.procs().values()) if run is not None else self.owned.get(target, [])
        return sum(proc.cpu() for proc in procs)

    def stop(self) -> None:
        for run in self.logships.values():
            run.stop()
        for proc in self.procs:
            proc.stop()
        for topology in self.topologies:
            topology.delete()


def _start_logship(
    servers: Servers, name: str, kind: str, workdir: Path, url: str, baseline: Path | None = None
) -> None:
    off = ["--no-archive.enabled"] if name == BASELINE else []
    run = pipelines.start(
        kind,
        workdir,
        url=url,
        producer_args=["--ingest.enabled", *off],
        consumer_args=off,
        baseline=baseline,
    )
    servers.logships[name] = run
    assert run.producer is not None
    servers.urls[name] = f"http://127.0.0.1:{run.producer.http_port}/v1/lines"


def _start_reference(servers: Servers, workdir: Path, url: str) -> None:
    """The reference server, and the raw chunk pipeline's consumer draining its queue (so the
    machine carries a consumer for it too, as it does for logship)."""
    workdir.mkdir(parents=True, exist_ok=True)
    topology = Topology(url=url)
    servers.topologies.append(topology)
    consume = ["consume", "--output", str(workdir / "reference-output.txt")]
    consumer = python_proc("http-reference-consumer", "bench.raw",
                           [*consume, *topology.ref_args()], workdir, stdout_pipe=True)  # fmt: skip
    servers.procs.append(consumer.start())
    _wait_ready(consumer)
    port = free_port()
    args = ["--url", url, "--name", topology.name, "--port", str(port)]
    server = python_proc("http-reference", "bench.http_reference", args, workdir, stdout_pipe=True)
    servers.procs.append(server.start())
    _wait_ready(server)
    servers.urls[REFERENCE] = f"http://127.0.0.1:{port}/v1/lines"
    servers.owned[REFERENCE] = [consumer, server]


def _start_null(servers: Servers, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = ["--null", "--port", str(port)]
    server = python_proc("http-null", "bench.http_reference", args, workdir, stdout_pipe=True)
    servers.procs.append(server.start())
    _wait_ready(server)
    servers.urls[NULL] = f"http://127.0.0.1:{port}/v1/lines"
    servers.owned[NULL] = [server]


@contextlib.contextmanager
def started(
    workdir: Path, url: str, names: tuple[str, ...] = SERVERS, baseline: Path | None = None
) -> Iterator[Servers]:
    servers = Servers()
    kinds = {
        LOGSHIP_HTTP: pipelines.LOGSHIP,
        NO_ARCHIVE: pipelines.LOGSHIP_NO_ARCHIVE,
        BASELINE: pipelines.LOGSHIP_BASELINE,
    }
    try:
        for name in names:
            if name in kinds:
                _start_logship(servers, name, kinds[name], workdir / name, url, baseline)
            elif name == REFERENCE:
                _start_reference(servers, workdir / name, url)
            elif name == NULL:
                _start_null(servers, workdir / name)
        yield servers
    finally:
        servers.stop()


def _verified(run: pipelines.Running, parts: list[tuple[bytes, int]], timeout: float = 60) -> bool:
    """logship's output holds exactly what was POSTed, once durable: each phase's bodies are
    alike, so any order of its concurrent POSTs gives the same bytes
    (`body` repeated `count` times, part after part)."""
    expected = sum(len(body) * count for body, count in parts)
    watcher = run.watcher()
    deadline = time.monotonic() + timeout
    while watcher.size() < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    if run.output.stat().st_size != expected:
        return False
    with run.output.open("rb") as output:
        for body, count in parts:
            for _ in range(count):
                if output.read(len(body)) != body:
                    return False
    return True


HISTOGRAMS = {  # what each logship program's stages say of the latency phase
    "producer": ("logship_producer_ingest_stage_seconds", "logship_producer_stage_seconds"),
    "consumer": ("logship_consumer_stage_seconds",),
}


def scrape(run: pipelines.Running) -> dict[str, str]:
    """Both programs' /metrics text."""
    texts = {}
    for name, proc in run.procs().items():
        url = f"http://127.0.0.1:{proc.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            texts[name] = reply.read().decode()
    return texts


def stage_deltas(before: dict[str, str], after: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each stage's p50/p99 in ms over what happened between two scrapes (bucket differences: the
    latency phase alone, not the throughput rounds before it), and the full collections then."""
    found: dict[str, dict[str, Any]] = {}
    for program, names in HISTOGRAMS.items():
        for name in names:
            old = parse_histogram(before[program], name)
            for stage, buckets in parse_histogram(after[program], name).items():
                was = dict(old.get(stage, []))
                delta = [(bound, count - was.get(bound, 0.0)) for bound, count in buckets]
                p50, p99 = quantile(delta, 0.5), quantile(delta, 0.99)
                key = f"ingest.{stage}" if "ingest" in name else stage
                found[key] = {
                    "p50_ms": None if p50 is None else round(p50 * 1e3, 2),
                    "p99_ms": None if p99 is None else round(p99 * 1e3, 2),
                    "count": delta[-1][1] if delta else 0,
                }
        found[f"gc_pauses_{program}"] = _gc_pauses(before[program], after[program], program)
        full = 'python_gc_collections_total{generation="2"}'
        found[f"gc_pauses_{program}"]["collections"] = _sample(after[program], full) - _sample(
            before[program], full
        )
    return found


def _gc_pauses(before: str, after: str, program: str) -> dict[str, Any]:
    """The full collections between two scrapes: how many, their total and longest pause (the
    bound of the highest bucket that gained one), ms."""
    name = f"logship_{program}_gc_pause_seconds"
    old = dict(parse_histogram(before, name, "generation").get("2", []))
    new = parse_histogram(after, name, "generation").get("2", [])
    delta = [(bound, count - old.get(bound, 0.0)) for bound, count in new]
    total = _sample(after, f'{name}_sum{{generation="2"}}') - _sample(
        before, f'{name}_sum{{generation="2"}}'
    )
    longest = next((bound for bound, count in delta if count >= (delta[-1][1] if delta else 0)), 0)
    cpu_name = f'logship_{program}_gc_cpu_seconds_total{{generation="2"}}'
    cpu = _sample(after, cpu_name) - _sample(before, cpu_name)
    return {
        "count": delta[-1][1] if delta else 0,
        "total_ms": round(total * 1e3, 1),
        "cpu_ms": round(cpu * 1e3, 1),
        "longest_ms_at_most": None if not delta or not delta[-1][1] else longest * 1e3,
    }


def _sample(text: str, prefix: str) -> float:
    for line_ in text.splitlines():
        if line_.startswith(prefix + " "):
            return float(line_.split()[-1])
    return 0.0


def latency_targets(servers: Servers) -> dict[str, str]:
    """What the latency segments measure: every server's plain POST, and for logship's the
    `?wait=written` POST too."""
    targets = dict(servers.urls)
    for name in servers.logships:
        targets[f"{name} {WRITTEN}"] = servers.urls[name] + "?wait=written"
    return targets


async def latency_segments(
    servers: Servers,
    targets: dict[str, str],
    body: bytes,
    rate: float,
    seconds: float,
    segments: int,
) -> dict[str, list[Segment]]:
    """`segments` segments of `seconds` / `segments` per target, taking turns, every other
    segment in reverse order; each segment notes the CPU its server's processes used."""
    out: dict[str, list[Segment]] = {name: [] for name in targets}
    names = list(targets)
    each = seconds / segments
    for index in range(segments):
        for name in names if index % 2 == 0 else names[::-1]:
            cpu = servers.cpu(name)
            segment = await steady(targets[name], body, rate, each)
            segment.server_cpu_s = servers.cpu(name) - cpu
            out[name].append(segment)
    return out


def pooled(segments: list[Segment], rate: float) -> dict[str, Any]:
    """One target's latency row: the percentiles of every counted request of every segment,
    each segment's p99 (and their spread), the client's lateness and CPU at worst."""
    merged = Segment()
    for segment in segments:
        merged.latencies += segment.latencies
        merged.late += segment.late
        merged.failed += segment.failed
    row = merged.summary(rate)
    del row["client_cpu"]
    p99s = [round(percentile(s.latencies, 99), 2) for s in segments]
    row["segment_p99_ms"] = p99s
    row["p99_ms_spread"] = [min(p99s), max(p99s)] if p99s else []
    row["p99_ms_median_of_segments"] = round(statistics.median(p99s), 2) if p99s else None
    row["client_cpu_max"] = round(max((s.client_cpu for s in segments), default=0.0), 2)
    # per request of the segments (warm-ups included): server and consumer, not the broker
    sent = sum(s.sent for s in segments)
    row["server_cpu_ms_per_request"] = round(
        1e3 * sum(s.server_cpu_s for s in segments) / max(1.0, sent), 3
    )
    return row


def segment_ratios(ours: list[Segment], theirs: list[Segment]) -> list[float]:
    """Our p99 over theirs, segment by segment (the same minute of the machine)."""
    return [
        round(percentile(a.latencies, 99) / max(1e-9, percentile(b.latencies, 99)), 3)
        for a, b in zip(ours, theirs, strict=True)
    ]


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
    segments: int = 8,
    servers: tuple[str, ...] = SERVERS,
    baseline: Path | None = None,
) -> dict[str, Any]:
    """Throughput in `rounds` rounds (every other in reverse order; one short run is at the
    machine's mercy: a full run once measured 76 % and 99 % of the reference minutes apart), then
    `seconds` of latency per target in `segments` segments; the rows are medians (throughput) and
    pooled percentiles (latency), `rounds` and `segment_p99_ms` keep every run. `baseline`: a
    checkout whose programs run as BASELINE (no archive) beside the others, for before/after."""
    if baseline is not None and BASELINE not in servers:
        servers = (*servers, BASELINE)
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
            "segments": segments,
            "warmup_s": WARMUP_S,
            "latency_lines": latency_lines,
            "rounds": rounds,
            "client": "aiohttp on uvloop, in the benchmark's process",
        },
        "rounds": [],
    }
    with started(workdir, url, servers, baseline) as up:
        order = list(up.urls)
        landed = {name: 0 for name in up.logships}  # bodies of `big` answered 200
        for round_ in range(rounds):
            results: dict[str, Any] = {}
            for name in order if round_ % 2 == 0 else order[::-1]:
                results[name] = uvloop.run(throughput(up.urls[name], big, requests))
                if name in landed:
                    landed[name] += results[name]["ok"]
            out["rounds"].append(results)
        targets = latency_targets(up)
        before = {name: scrape(run) for name, run in up.logships.items()}
        measured = uvloop.run(latency_segments(up, targets, small, rate, seconds, segments))
        stages = {name: stage_deltas(before[name], scrape(r)) for name, r in up.logships.items()}
        smalls = {
            name: sum(s.landed for key in (name, f"{name} {WRITTEN}") for s in measured[key])
            for name in up.logships
        }
        for name in order:
            row = _median_of([r[name] for r in out["rounds"]])
            row["confirmed"] = pooled(measured[name], rate)
            if name in up.logships:
                row["written"] = pooled(measured[f"{name} {WRITTEN}"], rate)
                parts = [(big, landed[name]), (small, smalls[name])]
                row["verified"] = _verified(up.logships[name], parts)
                row["stages"] = stages[name]
            out[name] = row
    _compare(out, measured)
    return out


def _compare(out: dict[str, Any], measured: dict[str, list[Segment]]) -> None:
    """The target's figures: logship without the archive (the broker does what it does for the
    reference) against the reference, throughput per round and p99 per segment."""
    if NO_ARCHIVE not in out or REFERENCE not in out:
        return
    shares = [
        r[NO_ARCHIVE]["lines_per_s"] / max(1, r[REFERENCE]["lines_per_s"]) for r in out["rounds"]
    ]
    out["throughput_share"] = round(statistics.median(shares), 3)
    out["throughput_shares"] = [round(x, 3) for x in shares]
    ratios = segment_ratios(measured[NO_ARCHIVE], measured[REFERENCE])
    out["p99_ratio"] = round(statistics.median(ratios), 3)
    out["p99_ratios"] = ratios
    if BASELINE in out:
        out["p99_ratios_vs_baseline"] = segment_ratios(measured[NO_ARCHIVE], measured[BASELINE])
        out["p99_ratio_vs_baseline"] = round(statistics.median(out["p99_ratios_vs_baseline"]), 3)
    out["p99_ratio_pooled"] = round(
        out[NO_ARCHIVE]["confirmed"]["p99_ms"] / max(1e-9, out[REFERENCE]["confirmed"]["p99_ms"]),
        3,
    )


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One throughput row from several rounds: the median of each figure."""
    first = dict(runs[0])
    first["lines_per_s"] = round(statistics.median(r["lines_per_s"] for r in runs))
    first["requests_per_s"] = round(statistics.median(r["requests_per_s"] for r in runs), 1)
    first["lines_per_s_spread"] = [min(r["lines_per_s"] for r in runs),
                                   max(r["lines_per_s"] for r in runs)]  # fmt: skip
    return first


def lines_of(section: dict[str, Any]) -> str:
    """The section as a small table for the run's printout."""
    config = section["config"]
    rows = [
        "HTTP ingest (POSTs of {post_lines:,} lines; latency at {rate:,.0f} requests/s of "
        "{latency_lines} lines, {seconds:.0f} s per target in {segments} segments):".format(
            **{"segments": 1, **config}
        ),
        "| server | lines/s (spread) | POST→confirmed p50/p99 ms (segment p99s) | "
        "POST→written p50/p99 ms | server CPU ms/request | client late p99 ms / CPU |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in (*SERVERS, BASELINE):
        result = section.get(name)
        if not result:
            continue
        confirmed = result.get("confirmed", {})
        written = result.get("written")
        spread = result.get("lines_per_s_spread") or [result["lines_per_s"]] * 2
        p99s = confirmed.get("p99_ms_spread") or [confirmed.get("p99_ms")] * 2
        rows.append(
            f"| {name} | {result['lines_per_s']:,} ({spread[0]:,}-{spread[1]:,}) | "
            f"{confirmed.get('p50_ms')} / {confirmed.get('p99_ms')} ({p99s[0]}-{p99s[1]}) | "
            + (f"{written['p50_ms']} / {written['p99_ms']} | " if written else "n/a | ")
            + f"{confirmed.get('server_cpu_ms_per_request')} | "
            + f"{confirmed.get('late_p99_ms')} / {confirmed.get('client_cpu_max')} |"
        )
    ours, ref = section.get(NO_ARCHIVE), section.get(REFERENCE)
    if ours and ref and "throughput_share" in section:
        shares = ", ".join(f"{x:.0%}" for x in section.get("throughput_shares", []))
        ratios = ", ".join(f"{x:.2f}" for x in section.get("p99_ratios", []))
        rows.append(
            f"logship (no archive, like the reference) at {section['throughput_share']:.0%} of "
            f"the reference's throughput (rounds: {shares}); POST→confirmed p99 "
            f"{ours['confirmed']['p99_ms']} vs {ref['confirmed']['p99_ms']} ms pooled, "
            f"ratio {section['p99_ratio']:.2f} (median of segments: {ratios})"
        )
    if "p99_ratio_vs_baseline" in section:
        ratios = ", ".join(f"{x:.2f}" for x in section["p99_ratios_vs_baseline"])
        rows.append(
            f"POST→confirmed p99 against {BASELINE}: ratio {section['p99_ratio_vs_baseline']:.2f} "
            f"(median of segments: {ratios})"
        )
    return "\n".join(rows)
