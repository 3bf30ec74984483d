"""The ingest API's heap without a broker: how long full garbage collections stop the producer's
event loop as receipts accumulate at a steady POST rate. Each checkout's IngestApi runs in a
process of its own behind aiohttp, with a stand-in publisher that confirms every batch 3 ms after
it is submitted; one client (bench/http_ingest.steady) takes turns between them. The collections'
cost is read as CPU time of the server's thread (what the collector itself spent, whatever else
the machine ran) and as wall time.

    python -m bench.http_gc --baseline DIR [--seconds 10] [--rounds 4] [--rate 1000]

The checkout given as --baseline runs without gc.freeze (as before it existed); this one with it
when its logship/service.py has freeze_heap."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvloop

REPO = Path(__file__).resolve().parent.parent


def serve(port: int, freeze: bool) -> None:
    """The server process: whatever `producer` PYTHONPATH names, its IngestApi on `port`."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from producer.ingest import IngestApi
    from producer.ingest_batcher import Batching
    from producer.ingest_settings import IngestSettings

    pauses: list[tuple[float, float]] = []
    started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.thread_time(), time.perf_counter()]
        elif info["generation"] == 2:
            cpu, wall = time.thread_time() - started[0], time.perf_counter() - started[1]
            pauses.append((cpu * 1e3, wall * 1e3))

    async def report(_request: web.Request) -> web.Response:
        cpu, wall = [p[0] for p in pauses], [p[1] for p in pauses]
        out = {
            "full_collections": len(pauses),
            "cpu_ms_total": round(sum(cpu), 1),
            "cpu_ms_max": round(max(cpu, default=0.0), 1),
            "wall_ms_total": round(sum(wall), 1),
            "wall_ms_max": round(max(wall, default=0.0), 1),
            "tracked_objects": len(gc.get_objects()),
        }
        pauses.clear()
        return web.json_response(out)

    async def main() -> None:
        stop = asyncio.Event()
        settings = IngestSettings(enabled=True)
        batching = Batching(1 << 20, 200_000, 0.002)
        api = IngestApi(settings, batching, CollectorRegistry(), stop=stop, receipts=True)
        loop = asyncio.get_running_loop()

        def submit(_batch: object) -> asyncio.Future[None]:
            confirmed = loop.create_future()
            loop.call_later(0.003, confirmed.set_result, None)
            return confirmed

        api.attach(submit, lambda: True)
        app = web.Application()
        app.router.add_routes(api.routes())
        app.router.add_get("/gc", report)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        if freeze:
            gc.collect()
            gc.freeze()
        gc.callbacks.append(on_gc)
        print("ready", flush=True)
        await stop.wait()

    uvloop.run(main())


def drive(args: argparse.Namespace) -> list[dict[str, Any]]:
    from bench.common import free_port
    from bench.http_ingest import body_of, steady

    variants = {"baseline": (args.baseline, False), "this": (REPO, _has_freeze(REPO))}
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    rows: list[dict[str, Any]] = []
    try:
        for name, (code, freeze) in variants.items():
            port = free_port()
            # as a script: `producer` comes from `code` alone
            argv = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port)]
            argv += ["--freeze"] if freeze else []
            env = {**os.environ, "PYTHONPATH": str(code)}
            proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE)
            procs[name] = (proc, port)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"{name} did not start")
        body = body_of(10, 10_000_000)
        names = list(variants)
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                port = procs[name][1]
                url = f"http://127.0.0.1:{port}/v1/lines"
                latency = uvloop.run(steady(url, body, args.rate, args.seconds)).summary(args.rate)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/gc", timeout=10) as reply:
                    row = {"round": round_, "code": name, **json.load(reply)}
                row.update({k: latency[k] for k in ("p50_ms", "p99_ms", "late_p99_ms")})
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(10)
    return rows


def _has_freeze(code: Path) -> bool:
    service = code / "logship" / "service.py"
    return service.exists() and "def freeze_heap" in service.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.http_gc", description=__doc__)
    parser.add_argument("--baseline", type=Path, help="the other checkout (before)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per turn")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rate", type=float, default=1000.0, help="POSTs/s of 10 lines")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--freeze", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.freeze)
        return
    if args.baseline is None:
        parser.error("--baseline DIR is needed")
    drive(args)


if __name__ == "__main__":
    main()
