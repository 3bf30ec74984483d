"""The consumer's commit of one small group with many sources in its state: what a consumer that
has followed many files (every rotation or truncation is a new source, kept up to 10,000) pays
per group, with the event loop stopped. No broker.

    python -m bench.commit [--sources 1,1000,10000] [--groups 200]

To compare two commits, run it from each checkout in turn (PYTHONPATH=DIR), several times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from consumer.sink import Sink
from logship.wire import Delivered

LINE = b"x" * 98 + b"\n"


def commit_ms(sources: int, *, fsync: bool, groups: int) -> tuple[float, float]:
    """(p50, p99) of Sink.commit for a one-line group, `sources` sources already recorded."""
    with tempfile.TemporaryDirectory() as tmp:
        sink = Sink(Path(tmp) / "output.txt", fsync=fsync)
        sink.open()
        seeded = [Delivered(f"src-{i:08d}", 0, len(LINE), 1, None, LINE) for i in range(sources)]
        for first in range(0, sources, 500):
            sink.commit(sink.plan(seeded[first : first + 500]))
        times = []
        for g in range(groups):
            one = Delivered("live", g * len(LINE), (g + 1) * len(LINE), 1, None, LINE)
            plan = sink.plan([one])
            started = time.perf_counter()
            sink.commit(plan)
            times.append(time.perf_counter() - started)
        sink.close()
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.99 * len(times))] * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.commit", description=__doc__)
    parser.add_argument("--sources", default="1,1000,10000")
    parser.add_argument("--groups", type=int, default=200)
    args = parser.parse_args(argv)
    for sources in (int(n) for n in args.sources.split(",")):
        for fsync in (False, True):
            p50, p99 = commit_ms(sources, fsync=fsync, groups=args.groups)
            print(f"sources {sources:>6}  fsync {'on ' if fsync else 'off'}  commit p50 "
                  f"{p50:6.2f} ms  p99 {p99:6.2f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
