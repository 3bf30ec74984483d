"""Where logship's time goes: one throughput run with py-spy sampling the producer and the consumer,
summarised as the functions (self time) and the libraries that take the samples.

    python -m bench.profile [--lines 2000000] [--out bench/profiles]
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import pipelines
from bench.common import BROKER_URL, append_from, make_data, wait_until

HERE = Path(__file__).resolve().parent


def bucket(frame: str) -> str:
    """The library or logship module a frame belongs to."""
    path = frame.split("(", 1)[-1]
    for name in (
        "aiormq",
        "aio_pika",
        "pamqp",
        "prometheus_client",
        "pydantic",
        "uvloop",
        "asyncio",
    ):
        if f"/{name}/" in path:
            return name
    for name in ("producer", "consumer", "logship"):
        if f"/{name}/" in path:
            return f"{name}/{path.rsplit('/', 1)[-1].split(':')[0]}"
    return "other"


def summarise(raw: Path, top: int = 15) -> str:
    """Collapsed stacks (py-spy --format raw) → self time by function and by library."""
    by_function: collections.Counter[str] = collections.Counter()
    by_library: collections.Counter[str] = collections.Counter()
    total = 0
    for text in raw.read_text().splitlines():
        stack, _, count = text.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        total += n
        leaf = frames[-1]
        by_function[leaf] += n
        by_library[bucket(leaf)] += n
    if not total:
        return "(no samples)"
    lines = [f"{total} samples (idle excluded)", "", "self time by library/module:"]
    lines += [f"  {n / total * 100:5.1f} %  {name}" for name, n in by_library.most_common(top)]
    lines += ["", "self time by function:"]
    lines += [f"  {n / total * 100:5.1f} %  {name}" for name, n in by_function.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.profile")
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--url", default=BROKER_URL)
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--out", type=Path, default=HERE / "profiles")
    parser.add_argument("--producer-args", default="")
    parser.add_argument("--consumer-args", default="")
    args = parser.parse_args(argv)
    data = make_data(args.workdir / f"data-{args.lines}.txt", args.lines)
    args.out.mkdir(parents=True, exist_ok=True)
    run = pipelines.start(
        pipelines.LOGSHIP,
        args.workdir / "profile",
        url=args.url,
        producer_args=args.producer_args.split(),
        consumer_args=args.consumer_args.split(),
    )
    spies: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, proc in run.procs().items():
            spies[name] = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(proc.pid),
                 "--rate", "200", "--format", "raw", "--nonblocking",
                 "--output", str(args.out / f"{name}.raw")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        time.sleep(1.0)
        started = time.monotonic()
        append_from(data, run.input)
        watcher = run.watcher()
        wait_until(lambda: watcher.size() >= data.stat().st_size, 300, interval=0.005)
        seconds = time.monotonic() - started
    finally:
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for spy in spies.values():
            spy.wait(30)
        run.stop()
    print(f"{args.lines:,} lines in {seconds:.2f} s ({args.lines / seconds:,.0f} lines/s)\n")
    for name in spies:
        text = summarise(args.out / f"{name}.raw")
        (args.out / f"{name}.txt").write_text(text + "\n")
        print(f"== {name}\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
