"""The benchmark's own arithmetic (test data, verification, latency parsing, medians, verdicts) is
right; nothing here starts a pipeline or needs a broker."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench import common, latency, report
from bench.common import (
    LINE_BYTES,
    DurableWatcher,
    append_from,
    files_equal,
    line,
    make_data,
    percentile,
)
from consumer.statefile import StateFile


def test_every_line_has_the_fixed_length_and_is_distinct() -> None:
    lines = [line(i) for i in range(500)]
    assert {len(x) for x in lines} == {LINE_BYTES}
    assert all(x.endswith(b"\n") and x.count(b"\n") == 1 for x in lines)
    assert len(set(lines)) == len(lines)


def test_data_is_made_once_and_appended_whole_or_repeated(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data.txt", 1000)
    assert data.stat().st_size == 1000 * LINE_BYTES
    target = tmp_path / "input.txt"
    assert append_from(data, target) == data.stat().st_size
    assert files_equal(data, target)
    append_from(data, target, 3 * LINE_BYTES)
    assert target.read_bytes() == data.read_bytes() + data.read_bytes()[: 3 * LINE_BYTES]
    assert not files_equal(data, target)


def test_timestamps_are_read_back_from_stamped_lines() -> None:
    now = time.time_ns()
    chunk = b"".join(latency.stamped(now + i, i) for i in range(5))
    assert len(chunk) == 5 * LINE_BYTES
    assert latency.timestamps(chunk).tolist() == [now + i for i in range(5)]


def test_durable_size_follows_logship_state_not_the_output(tmp_path: Path) -> None:
    output = tmp_path / "output.txt"
    output.write_bytes(b"x" * 500)
    state = tmp_path / "output.txt.state"
    watcher = DurableWatcher(output, logship=True)
    assert watcher.size() == 0
    StateFile(state, durable=False).write(
        json.dumps({"version": 1, "size": 297, "sources": {}}).encode()
    )
    assert watcher.size() == 297
    assert DurableWatcher(output, logship=False).size() == 500


def test_percentiles_and_medians() -> None:
    assert percentile([5, 1, 3], 50) == 3
    assert percentile(list(range(101)), 99) == 99
    assert common.median([4.0, 1.0, 2.0]) == 2.0


def _results() -> dict[str, Any]:
    def run(kind: str, rate: int) -> dict[str, object]:
        return {
            "pipeline": kind, "lines": 1000, "seconds": 1000 / rate, "lines_per_s": rate,
            "mb_per_s": rate * LINE_BYTES / 1e6, "verified": True,
            "cpu_s_per_million_lines": {"producer": 0.2, "consumer": 0.3},
            "peak_rss_mb": {"producer": 50.0, "consumer": 60.0},
        }  # fmt: skip

    runs = {
        "logship": [run("logship", r) for r in (900, 1000, 1100)],
        "raw-chunk": [run("r", 1000)],
    }
    return {
        "config": {"rates": [1000]},
        "runs": runs,
        "throughput": {k: report.summarise(v) for k, v in runs.items()},
        "latency": {"logship": {"1000": {"p50_ms": 3.0, "p99_ms": 12.0, "max_ms": 20.0}}},
        "memory_alarm": None,
    }


def test_summary_table_and_verdict() -> None:
    results = _results()
    summary = results["throughput"]["logship"]
    assert summary["lines_per_s"] == 1000 and summary["ok"] == 3
    text = report.table(results)
    assert "| logship | 1,000 | 1,000 |" in text and "100 %" in text
    verdict = report.targets(results)
    assert verdict["throughput >= 90 % of raw chunk pipeline"]["met"] is True
    assert verdict["p99 <= 10 ms @1,000/s"]["met"] is False
    assert verdict["p50 <= 5 ms @1,000/s"]["met"] is True
    assert verdict["consumer <= 0.25 CPU-s per million lines"]["met"] is False


def test_the_cluster_row_and_its_cost_in_words() -> None:
    results = _results()
    cluster = [
        dict(r, pipeline="logship-cluster", lines_per_s=500) for r in results["runs"]["logship"]
    ]
    for r in cluster:
        r["cpu_s_per_million_lines"] = {"producer": 0.2, "consumer": 0.3, "broker": 3.0}
    results["runs"]["logship-cluster"] = cluster
    results["throughput"]["logship-cluster"] = report.summarise(cluster)
    results["failover"] = {"rate": 20000, "failover_gap_s": 0.7, "verified": True}
    assert "| logship-cluster | 1,000 | 500 |" in report.table(results)
    words = report.cluster_lines(results)
    assert "500 vs 1,000 lines/s (50%)" in words and "broker nodes together 3.000" in words
    assert "failover gap when the queue leader is killed at 20,000 lines/s: 0.7 s" in words
    assert report.cluster_lines(_results()) == ""
