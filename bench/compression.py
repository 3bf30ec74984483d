"""`python -m bench.compression`: does `--compression zstd` pay on a cluster? logship on three
private nodes of this machine, over the same varied access-log lines (the benchmark's own lines
repeat one filler and would compress 100x), with compression off and on: throughput, CPU per
million lines of each program and of the broker nodes together, and the bytes the nodes wrote to
disk per line (/proc/PID/io)."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench import pipelines
from bench.common import REPO, append_from, cpu_seconds, files_equal, wait_until

HERE = Path(__file__).resolve().parent
PATHS = ["/api/v1/orders", "/api/v1/users", "/static/app.js", "/login", "/api/v2/search"]
AGENTS = ["curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)", "python-requests/2.31", "Go/1.22"]


def varied(path: Path, lines: int, seed: int = 7) -> Path:
    """Access-log lines with random addresses, ids, sizes and trace ids: what a real log holds."""
    if path.exists():
        return path
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for i in range(lines):
            out.write(
                f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
                f'{rng.randint(1, 254)} [{1796560000 + i // 50}] "GET {rng.choice(PATHS)}'
                f'?id={rng.randint(1, 10**7)}" {rng.choice((200, 200, 201, 304, 404, 500))} '
                f'{rng.randint(100, 90000)} {rng.random():.4f} "{rng.choice(AGENTS)}" '
                f"trace={rng.getrandbits(64):016x}\n".encode()
            )
    return path


def disk_written(pids: list[int]) -> int:
    """Bytes these processes have written to storage so far."""
    total = 0
    for pid in pids:
        for row in Path(f"/proc/{pid}/io").read_text().splitlines():
            if row.startswith("write_bytes:"):
                total += int(row.split()[1])
    return total


def node_pids(cluster: Any) -> list[int]:
    return [int(n.pid_file.read_text()) for n in cluster.nodes if n.pid_file.exists()]


def one_run(cluster: Any, data: Path, lines: int, mode: str, workdir: Path) -> dict[str, Any]:
    run = pipelines.start(
        pipelines.LOGSHIP_CLUSTER,
        workdir,
        url=cluster.amqp_url,
        producer_args=["--compression", mode],
    )
    nbytes = data.stat().st_size
    try:
        brokers = node_pids(cluster)
        cpu0 = {name: proc.cpu() for name, proc in run.procs().items()}
        broker0, disk0 = sum(map(cpu_seconds, brokers)), disk_written(brokers)
        started = time.monotonic()
        append_from(data, run.input)
        watcher = run.watcher()
        if not wait_until(lambda: watcher.size() >= nbytes, 600, interval=0.002):
            raise RuntimeError(f"{mode}: output incomplete")
        seconds = time.monotonic() - started
        cpu = {name: proc.cpu() - cpu0[name] for name, proc in run.procs().items()}
        cpu["broker"] = sum(map(cpu_seconds, brokers)) - broker0
        disk = disk_written(brokers) - disk0
        verified = files_equal(data, run.output)
    finally:
        run.stop()
    return {
        "compression": mode,
        "lines_per_s": round(lines / seconds),
        "cpu_s_per_million_lines": {k: round(v / lines * 1e6, 3) for k, v in cpu.items()},
        "broker_disk_bytes_per_line": round(disk / lines, 1),
        "input_bytes_per_line": round(nbytes / lines, 1),
        "verified": verified,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.compression", description=__doc__)
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=2, help="runs per mode, interleaved")
    p.add_argument("--workdir", type=Path, default=HERE / "work" / "compression")
    p.add_argument("--out", type=Path, default=HERE / "compression.json")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tests.support.rabbit_cluster import RabbitCluster

    data = varied(args.workdir / f"varied-{args.lines}.txt", args.lines)
    results: list[dict[str, Any]] = []
    with RabbitCluster(args.workdir / "cluster") as cluster:
        for round_ in range(args.runs):
            for mode in ("none", "zstd"):
                result = one_run(cluster, data, args.lines, mode, args.workdir / mode)
                print(f"run {round_ + 1} {json.dumps(result)}", flush=True)
                results.append(result)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["verified"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
