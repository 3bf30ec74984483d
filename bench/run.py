"""`python -m bench.run`: run every pipeline on the same data in the same session, print one table,
write bench/results.json and bench/results.png. `--quick` is the under-three-minutes version."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import http_ingest, pipelines, report, scenarios, syslogng
from bench.common import BROKER_URL, LINE_BYTES, REPO, make_data

HERE = Path(__file__).resolve().parent
THROUGHPUT_ORDER = [
    pipelines.CAT,
    pipelines.RAW,
    pipelines.LOGSHIP,
    pipelines.LOGSHIP_NO_ARCHIVE,
    pipelines.LOGSHIP_CLASSIC,
    pipelines.LOGSHIP_CLUSTER,
    pipelines.NAIVE,
    pipelines.SYSLOG_NG,
]
SLOW = (pipelines.NAIVE, pipelines.SYSLOG_NG)
LATENCY_ORDER = [
    pipelines.LOGSHIP,
    pipelines.LOGSHIP_NO_ARCHIVE,  # how much of the tail is the archive stream's second write
    pipelines.LOGSHIP_BASELINE,
    pipelines.LOGSHIP_CLUSTER,
    pipelines.RAW,
    pipelines.NAIVE,
    pipelines.SYSLOG_NG,
]
CLUSTER_RATE = 10_000  # the one latency rate measured on the cluster (the issue's)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 run, smaller inputs, short latency runs")
    p.add_argument("--runs", type=int, default=3, help="throughput runs per pipeline (median)")
    p.add_argument("--lines", type=int, default=5_000_000, help="lines for the fast pipelines")
    p.add_argument("--ref-lines", type=int, default=200_000,
                   help="lines for the per-line references (naive pika, syslog-ng)")  # fmt: skip
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--latency-runs", type=int, default=None,
                   help="latency runs per rate and pipeline, interleaved (median, spread); "
                   "default 3, --quick 1")  # fmt: skip
    p.add_argument("--rates", default="1000,10000,100000")
    p.add_argument("--alarm-grow-mb", type=int, default=1024, help="input growth while blocked")
    p.add_argument("--alarm-hold", type=float, default=15.0, help="seconds the alarm is held")
    p.add_argument("--only", default="throughput,latency,alarm,rebuild,failover,http",
                   help="sections to run (--only http: the HTTP ingest rows alone)")  # fmt: skip
    p.add_argument("--http-requests", type=int, default=1000,
                   help="POSTs in the HTTP ingest throughput run")  # fmt: skip
    p.add_argument("--http-post-lines", type=int, default=1000, help="lines per POST there")
    p.add_argument("--http-rate", type=float, default=1000.0,
                   help="requests/s of the HTTP latency runs")  # fmt: skip
    p.add_argument("--http-seconds", type=float, default=20.0,
                   help="seconds of latency per target, in --http-segments turns")  # fmt: skip
    p.add_argument("--http-segments", type=int, default=8,
                   help="latency segments per target, taking turns")  # fmt: skip
    p.add_argument("--http-servers", default=",".join(http_ingest.SERVERS),
                   help="HTTP ingest servers to run (the comparison needs "
                   f"{http_ingest.NO_ARCHIVE} and {http_ingest.REFERENCE})")  # fmt: skip
    p.add_argument("--http-latency-lines", type=int, default=10,
                   help="lines per POST in the HTTP latency runs")  # fmt: skip
    p.add_argument("--failover-rate", type=int, default=20_000,
                   help="lines/s while the cluster's queue leader is killed")  # fmt: skip
    p.add_argument("--failover-seconds", type=float, default=15.0)
    p.add_argument("--pipelines", default=",".join(THROUGHPUT_ORDER))
    p.add_argument("--url", default=BROKER_URL)
    p.add_argument("--baseline", type=Path, default=None,
                   help="a checkout of another commit (git worktree add DIR COMMIT): its "
                   "programs run as logship-baseline in the latency rounds (before/after, one run)",
                   )  # fmt: skip
    p.add_argument("--workdir", type=Path, default=HERE / "work")
    p.add_argument("--out", type=Path, default=HERE, help="where results.json/.png go")
    p.add_argument("--no-install", action="store_true", help="never apt-get install syslog-ng")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 1
        args.lines = min(args.lines, 1_000_000)
        args.ref_lines = min(args.ref_lines, 20_000)
        args.latency_seconds = min(args.latency_seconds, 3.0)
        args.latency_runs = args.latency_runs or 1
        args.alarm_grow_mb = min(args.alarm_grow_mb, 1024)
        args.alarm_hold = min(args.alarm_hold, 6.0)
        args.failover_seconds = min(args.failover_seconds, 9.0)
        args.http_requests = min(args.http_requests, 300)
        args.http_seconds = min(args.http_seconds, 4.0)
        args.http_segments = min(args.http_segments, 2)
    args.latency_runs = args.latency_runs or 3
    return args


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Brokers:
    """Where each pipeline's broker is: the shared node, or for logship-cluster three private
    nodes started once for the whole run (tests/support/rabbit_cluster.py) and stopped at exit."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.url = args.url
        self.cluster: Any = None
        self._dir = args.workdir / "cluster"

    def start_cluster(self) -> None:
        sys.path.insert(0, str(REPO))
        from tests.support.rabbit_cluster import RabbitCluster

        say("starting a three-node cluster of private nodes")
        self.cluster = RabbitCluster(self._dir)
        self.cluster.start()

    def url_for(self, kind: str) -> str:
        return str(self.cluster.amqp_url) if kind == pipelines.LOGSHIP_CLUSTER else self.url

    def pids_for(self, kind: str) -> list[int] | None:
        """The cluster's VMs for logship-cluster; None (the shared node) otherwise."""
        if kind != pipelines.LOGSHIP_CLUSTER:
            return None
        pids = (int(n.pid_file.read_text()) for n in self.cluster.nodes if n.pid_file.exists())
        return list(pids)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            shutil.rmtree(self._dir, ignore_errors=True)


def run_throughput(
    args: argparse.Namespace, kinds: list[str], brokers: Brokers
) -> dict[str, list[dict[str, Any]]]:
    data = make_data(args.workdir / f"data-{args.lines}.txt", args.lines)
    ref = make_data(args.workdir / f"data-{args.ref_lines}.txt", args.ref_lines)
    kinds = [k for k in kinds if k != pipelines.LOGSHIP_BASELINE]  # a latency comparison only
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for round_ in range(args.runs):
        for kind in kinds:  # interleaved, so drift in machine speed hits every pipeline alike
            source = ref if kind in SLOW else data
            say(f"throughput {kind} run {round_ + 1}/{args.runs}")
            try:
                result = scenarios.throughput(
                    kind, source, args.workdir / kind, url=brokers.url_for(kind),
                    broker_pids=brokers.pids_for(kind),
                )  # fmt: skip
            except Exception as error:
                traceback.print_exc()
                result = {"pipeline": kind, "error": f"{type(error).__name__}: {error}"}
            else:
                say(f"  {result['lines_per_s']:,} lines/s in {result['seconds']:.2f} s, "
                    f"verified={result['verified']}")  # fmt: skip
            runs[kind].append(result)
    return runs


def _latency_kinds(kinds: list[str], rate: int, round_: int) -> list[str]:
    """The pipelines measured at `rate` in this round: every other round in reverse order, so
    neither logship nor the raw pipeline always runs just after the other; the per-line
    references (naive pika, syslog-ng) in the first round only."""
    order = [k for k in LATENCY_ORDER if k in kinds]
    order = [k for k in order if k != pipelines.LOGSHIP_CLUSTER or rate == CLUSTER_RATE]
    if round_:  # the per-line references are far from any target: once is enough
        order = [k for k in order if k not in SLOW]
    return order if round_ % 2 == 0 else order[::-1]


def run_latency(
    args: argparse.Namespace, kinds: list[str], throughput: dict[str, Any], brokers: Brokers
) -> dict[str, dict[str, Any]]:
    """At each rate, `--latency-runs` rounds of every pipeline, interleaved: the machine's drift
    (other work on the two cores) hits logship and the raw pipeline alike within a round, and the
    ratios are taken within a round (report.summarise_latency)."""
    rates = [int(r) for r in args.rates.split(",")]
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {}
    skipped: dict[str, dict[str, Any]] = {}
    for rate in rates:
        for round_ in range(args.latency_runs):
            for kind in _latency_kinds(kinds, rate, round_):
                best = throughput.get(kind, {}).get("lines_per_s")
                # a pipeline that cannot reach half the rate would only measure its backlog
                if best is not None and best < rate * 0.5:
                    skipped.setdefault(kind, {})[str(rate)] = {
                        "skipped": f"its throughput ({best:,.0f} lines/s) cannot sustain {rate:,}/s"
                    }
                    continue
                say(f"latency {kind} at {rate:,} lines/s for {args.latency_seconds:.0f} s, "
                    f"run {round_ + 1}/{args.latency_runs}")  # fmt: skip
                try:
                    cell = scenarios.steady_latency(
                        kind, rate, args.latency_seconds, args.workdir / f"lat-{kind}",
                        url=brokers.url_for(kind),
                        drain_s=30 + args.latency_seconds * rate / (best or rate),
                        baseline=args.baseline,
                    )  # fmt: skip
                    say(f"  p50 {cell['p50_ms']} ms, p99 {cell['p99_ms']} ms, max "
                        f"{cell['max_ms']} ms, verified={cell['verified']}"
                        + report.p99_stage_words(cell))  # fmt: skip
                except Exception as error:
                    traceback.print_exc()
                    cell = {"error": f"{type(error).__name__}: {error}"}
                cell["round"] = round_
                cells.setdefault(kind, {}).setdefault(str(rate), []).append(cell)
    out = report.summarise_latency(cells)
    for kind, by_rate in skipped.items():
        for rate_key, cell in by_rate.items():
            out.setdefault(kind, {})[rate_key] = cell
    return out


def _measure(
    args: argparse.Namespace,
    kinds: list[str],
    sections: set[str],
    brokers: Brokers,
    results: dict[str, Any],
) -> None:
    if "throughput" in sections:
        results["runs"] = run_throughput(args, kinds, brokers)
        results["throughput"] = {k: report.summarise(v) for k, v in results["runs"].items()}
    if "latency" in sections:
        results["latency"] = run_latency(args, kinds, results["throughput"], brokers)
    if "failover" in sections and brokers.cluster is not None:
        say(f"failover on the cluster at {args.failover_rate:,} lines/s, queue leader killed")
        try:
            results["failover"] = scenarios.cluster_failover(
                brokers.cluster, args.workdir / "failover", rate=args.failover_rate,
                seconds=args.failover_seconds,
            )  # fmt: skip
            say(f"  failover gap {results['failover']['failover_gap_s']} s, "
                f"verified={results['failover']['verified']}")  # fmt: skip
        except Exception as error:
            traceback.print_exc()
            results["failover"] = {"error": f"{type(error).__name__}: {error}"}


def run_rebuild(args: argparse.Namespace) -> dict[str, Any]:
    say(f"rebuild of {args.lines:,} lines from the archive")
    try:
        data = make_data(args.workdir / f"data-{args.lines}.txt", args.lines)
        result = scenarios.rebuild(data, args.workdir / "rebuild", url=args.url)
    except Exception as error:
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {error}"}
    say(f"  {result['lines_per_s']:,} lines/s in {result['seconds']:.2f} s, "
        f"verified={result['verified']}")  # fmt: skip
    return result


def run_http(args: argparse.Namespace) -> dict[str, Any]:
    say(
        f"HTTP ingest: {args.http_requests:,} POSTs of {args.http_post_lines:,} lines, then "
        f"{args.http_rate:,.0f} requests/s for {args.http_seconds:.0f} s per target in "
        f"{args.http_segments} segments: {args.http_servers}"
    )
    try:
        return http_ingest.run(
            args.workdir / "http", url=args.url, post_lines=args.http_post_lines,
            requests=args.http_requests, rate=args.http_rate, seconds=args.http_seconds,
            latency_lines=args.http_latency_lines, rounds=args.latency_runs,
            segments=args.http_segments, servers=tuple(args.http_servers.split(",")),
            baseline=args.baseline,
        )  # fmt: skip
    except Exception as error:
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {error}"}


def print_results(results: dict[str, Any]) -> None:
    print(report.table(results))
    stages = report.stage_table(results)
    if stages:
        print("\nwhere logship's p99 goes (median over runs of each stage's p99, ms):\n" + stages)
    cluster = report.cluster_lines(results)
    if cluster:
        print("\n" + cluster)
    alarm = results["memory_alarm"] or {}
    if "rss_blocked_max_mb" in alarm:
        print(
            f"\nmemory alarm: input +{alarm['grow_bytes'] / 2**20:.0f} MiB while blocked "
            f"{alarm['hold_s']:.0f} s; RSS MB before {alarm['rss_before_mb']}, blocked max "
            f"{alarm['rss_blocked_max_mb']}, draining max {alarm['rss_draining_max_mb']}; "
            f"drained in {alarm['drain_s']} s, verified={alarm['verified']}"
        )
    print(report.archive_lines(results))
    print_http(results)
    print("\ntargets:\n" + report.verdict_lines(results["targets"]))


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every run's stop()


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupted)
    args = parse(argv)
    started = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in THROUGHPUT_ORDER if k in args.pipelines.split(",")]
    if args.baseline is not None:
        kinds.append(pipelines.LOGSHIP_BASELINE)
    sections = set(args.only.split(","))
    if pipelines.SYSLOG_NG in kinds:
        problem = "not installed (--no-install)" if args.no_install else syslogng.ensure_installed()
        if args.no_install and shutil.which("syslog-ng"):
            problem = None
        if problem:
            say(f"syslog-ng skipped: {problem}")
            kinds.remove(pipelines.SYSLOG_NG)
    results: dict[str, Any] = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "machine": report.machine(),
        "load_before": report.load(),
        "versions": report.versions(),
        "config": {
            "runs": args.runs,
            "lines": args.lines,
            "ref_lines": args.ref_lines,
            "line_bytes": LINE_BYTES,
            "latency_seconds": args.latency_seconds,
            "latency_runs": args.latency_runs,
            "rates": [int(r) for r in args.rates.split(",")],
            "alarm_grow_mb": args.alarm_grow_mb,
            "alarm_hold_s": args.alarm_hold,
            "logship_settings": "production defaults (quorum queue, persistent, confirms, fsync "
            "always, checkpoints, metrics server on)",
        },
        "runs": {},
        "throughput": {},
        "latency": {},
        "memory_alarm": None,
        "failover": None,
        "rebuild": None,
        "http_ingest": None,
    }
    brokers = Brokers(args)
    try:
        if pipelines.LOGSHIP_CLUSTER in kinds and sections & {"throughput", "latency", "failover"}:
            brokers.start_cluster()
        _measure(args, kinds, sections, brokers, results)
    finally:
        brokers.stop()
    if "alarm" in sections:
        say(f"memory alarm on a private node, input grows by {args.alarm_grow_mb} MB")
        try:
            data = make_data(args.workdir / f"data-{args.lines}.txt", args.lines)
            results["memory_alarm"] = scenarios.memory_alarm(
                data, args.workdir / "alarm", grow_bytes=args.alarm_grow_mb * 2**20,
                hold_s=args.alarm_hold,
            )  # fmt: skip
        except Exception as error:
            traceback.print_exc()
            results["memory_alarm"] = {"error": f"{type(error).__name__}: {error}"}
        shutil.rmtree(args.workdir / "alarm", ignore_errors=True)
    if "rebuild" in sections:
        results["rebuild"] = run_rebuild(args)
    if "http" in sections:
        results["http_ingest"] = run_http(args)
    results["load_after"] = report.load()
    results["targets"] = report.targets(results)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if results["throughput"]:
        report.draw(results, args.out / "results.png")
    print_results(results)
    out_dir = args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out
    print(f"\nwrote {out_dir}/results.json and results.png in {results['elapsed_s']:.0f} s")
    return exit_code(results)


def print_http(results: dict[str, Any]) -> None:
    http = results["http_ingest"] or {}
    if "config" in http:
        print("\n" + http_ingest.lines_of(http))


def exit_code(results: dict[str, Any]) -> int:
    """1 when a section failed or an output was not byte-identical."""
    failed = any("error" in r for v in results["runs"].values() for r in v)
    failed |= "error" in (results["failover"] or {})
    verified = all(r.get("verified", True) for v in results["runs"].values() for r in v)
    verified &= (results["failover"] or {}).get("verified", True)
    rebuilt = results["rebuild"] or {}
    http = results["http_ingest"] or {}
    failed = failed or "error" in rebuilt or "error" in http
    verified = verified and rebuilt.get("verified", True)
    for name in (http_ingest.LOGSHIP_HTTP, http_ingest.NO_ARCHIVE):
        verified = verified and http.get(name, {}).get("verified", True)
    return 1 if failed or not verified else 0


if __name__ == "__main__":
    sys.exit(main())
