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
    """The library, or the logship module, a frame `func (path/file.py:line)` belongs to."""
    path = frame.rsplit("(", 1)[-1].rstrip(")").split(":")[0]
    parts = path.split("/")
    if parts[0] in ("producer", "consumer", "logship"):
        return path
    return parts[0] if len(parts) > 1 else path


def summarise(raw: Path, top: int = 15) -> str:
    """Collapsed stacks (py-spy --format raw) → self time by library and by function, and
    inclusive time by function (what a call costs with everything below it)."""
    by_function: collections.Counter[str] = collections.Counter()
    by_library: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for text in raw.read_text().splitlines():
        stack, _, count = text.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        total += n
        by_function[frames[-1]] += n
        by_library[bucket(frames[-1])] += n
        for name in {f.split(" (")[0] for f in frames}:
            inclusive[name] += n
    if not total:
        return "(no samples)"
    skip = {"_run_module_as_main", "_run_code", "<module>", "main", "run", "Runner.run"}
    lines = [f"{total} samples (idle excluded; a blocking syscall such as fsync counts)", ""]
    lines += ["self time by library/module:"]
    lines += [f"  {n / total * 100:5.1f} %  {name}" for name, n in by_library.most_common(top)]
    lines += ["", "self time by function:"]
    lines += [f"  {n / total * 100:5.1f} %  {name}" for name, n in by_function.most_common(top)]
    lines += ["", "inclusive time by function:"]
    ranked = [(k, n) for k, n in inclusive.most_common(top + len(skip)) if k not in skip]
    lines += [f"  {n / total * 100:5.1f} %  {name}" for name, n in ranked[:top]]
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
