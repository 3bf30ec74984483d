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


def test_the_raw_pipeline_is_followed_by_what_its_fsyncs_made_durable(tmp_path: Path) -> None:
    # its output grows at write(), before the fsync: following the file's size would leave the
    # fsync out of its latency while logship's includes it
    output = tmp_path / "output.txt"
    output.write_bytes(b"x" * 500)
    synced = tmp_path / "synced"
    watcher = DurableWatcher(output, logship=False, synced=synced)
    assert watcher.size() == 0
    synced.write_bytes(b"%020d" % 396)
    assert watcher.size() == 396


def test_percentiles_and_medians() -> None:
    assert percentile([5, 1, 3], 50) == 3
    assert percentile(list(range(101)), 99) == 99
    assert common.median([4.0, 1.0, 2.0]) == 2.0
    assert common.median([4.0, 1.0]) == 2.5


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


def _lat_run(p99: float, round_: int, stages: dict[str, float] | None = None) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "p50_ms": p99 / 3, "p99_ms": p99, "max_ms": p99 * 2, "lines": 1000, "round": round_,
        "verified": True, "peak_rss_mb": {"producer": 50.0 + round_, "consumer": 40.0},
    }  # fmt: skip
    if stages is not None:
        cell["stages"] = {
            k: {"p50_ms": v / 2, "p99_ms": v, "count": 10.0} for k, v in stages.items()
        }
    return cell


def test_latency_runs_give_medians_spread_same_round_ratios_and_the_p99_stage() -> None:
    ours = [
        _lat_run(9.0, 0, {"publish_to_confirm": 6.0, "written_to_synced": 1.0}),
        _lat_run(30.0, 1, {"publish_to_confirm": 25.0, "written_to_synced": 2.0}),
        _lat_run(8.0, 2, {"publish_to_confirm": 5.0, "written_to_synced": 7.0}),
    ]
    raw = [_lat_run(12.0, 0), _lat_run(20.0, 1), {"error": "boom", "round": 2}]
    out = report.summarise_latency({"logship": {"1000": ours}, "raw-chunk": {"1000": raw}})
    cell = out["logship"]["1000"]
    assert cell["ok"] == 3 and cell["p99_ms"] == 9.0 and cell["p99_spread_ms"] == [8.0, 30.0]
    assert cell["peak_rss_mb"] == {"producer": 52.0, "consumer": 40.0}
    # a noisy round moves both pipelines: judged on each round's ratio, the failed round left out
    assert cell["p99_ratios_to_raw"] == [0.75, 1.5]
    assert cell["p99_ratio_to_raw"] == 1.125  # median of two: their mean
    assert cell["stages"]["publish_to_confirm"]["p99_ms"] == 6.0
    assert cell["stages"]["written_to_synced"]["p99_ms"] == 2.0
    assert cell["p99_stage"] == "publish_to_confirm"
    assert (
        out["raw-chunk"]["1000"]["ok"] == 2 and "p99_ratio_to_raw" not in out["raw-chunk"]["1000"]
    )
    assert (
        "error" in report.summarise_latency({"raw-chunk": {"1000": raw[2:]}})["raw-chunk"]["1000"]
    )


def test_latency_table_cells_stage_table_and_ratio_target() -> None:
    results = _results()
    ours = [_lat_run(p, i, {"publish_to_delivery": p / 2}) for i, p in enumerate((6.0, 7.0, 9.0))]
    raw = [_lat_run(p, i) for i, p in enumerate((10.0, 9.0, 10.0))]
    results["latency"] = report.summarise_latency(
        {"logship": {"1000": ours}, "raw-chunk": {"1000": raw}}
    )
    assert "| 2.3 / 7.0 (6.0-9.0) / 14 |" in report.table(results)
    stage_rows = report.stage_table(results).splitlines()
    assert stage_rows[0].startswith("| rate lines/s | runs | p99 ms | p99 / raw | change_to_read")
    assert stage_rows[2].startswith("| 1,000 | 3 | 7.0 | 0.78 | - |")
    assert stage_rows[2].endswith("| publish_to_delivery |")
    verdict = report.targets(results)
    ratio = verdict["p99 <= 0.75x raw chunk pipeline's @1,000/s (median of same-run ratios)"]
    assert ratio == {"value": 0.778, "met": False}
    assert report.p99_stage_words(ours[2]) == ", p99 stage: publish_to_delivery 4.5 ms"
    assert report.p99_stage_words(raw[0]) == ""


def test_a_baseline_checkout_is_compared_round_by_round_and_listed_without_throughput() -> None:
    ours = [_lat_run(p, i) for i, p in enumerate((6.0, 8.0, 9.0))]
    base = [_lat_run(p, i) for i, p in enumerate((12.0, 8.0, 10.0))]
    results = _results()
    results["latency"] = report.summarise_latency(
        {"logship": {"1000": ours}, "logship-baseline": {"1000": base}}
    )
    cell = results["latency"]["logship"]["1000"]
    assert cell["p99_ratios_to_baseline"] == [0.5, 1.0, 0.9]
    assert cell["p99_ratio_to_baseline"] == 0.9
    assert "p99_ratio_to_baseline" not in results["latency"]["logship-baseline"]["1000"]
    assert "| logship-baseline | - | - |" in report.table(results)


def test_latency_rounds_interleave_and_alternate_their_order() -> None:
    from bench import run

    kinds = ["logship", "raw-chunk", "naive-pika", "logship-cluster"]
    assert run._latency_kinds(kinds, 1000, 0) == ["logship", "raw-chunk", "naive-pika"]
    assert run._latency_kinds(kinds, 1000, 1) == ["raw-chunk", "logship"]
    assert run._latency_kinds(kinds, 10000, 2) == ["logship", "logship-cluster", "raw-chunk"]


def test_http_segments_are_compared_segment_by_segment_and_pooled() -> None:
    from bench import http_ingest

    ours = [http_ingest.Segment(latencies=[1.0] * 98 + [10.0] * 2) for _ in range(3)]
    theirs = [http_ingest.Segment(latencies=[1.0] * 98 + [x] * 2) for x in (5.0, 10.0, 20.0)]
    assert http_ingest.segment_ratios(ours, theirs) == [2.0, 1.0, 0.5]
    row = http_ingest.pooled(theirs, 1000)
    assert row["segment_p99_ms"] == [5.0, 10.0, 20.0] and row["p99_ms_spread"] == [5.0, 20.0]
    assert row["requests"] == 300 and row["p50_ms"] == 1.0


def test_http_stage_deltas_hold_only_what_happened_between_two_scrapes() -> None:
    from bench import http_ingest

    def text(fast: int, slow: int) -> str:
        name = "logship_producer_ingest_stage_seconds"
        rows = [
            f'{name}_bucket{{stage="queued",le="0.002"}} {fast}',
            f'{name}_bucket{{stage="queued",le="0.1"}} {fast + slow}',
            f'{name}_bucket{{stage="queued",le="+Inf"}} {fast + slow}',
            'python_gc_collections_total{generation="2"} ' + str(slow),
        ]
        return "\n".join(rows) + "\n"

    before = {"producer": text(0, 1000), "consumer": ""}
    after = {"producer": text(1000, 1000), "consumer": ""}  # the phase: 1,000 fast ones
    found = http_ingest.stage_deltas(before, after)
    assert found["ingest.queued"]["count"] == 1000
    assert found["ingest.queued"]["p99_ms"] is not None and found["ingest.queued"]["p99_ms"] <= 2.0
    assert found["gc_pauses_producer"]["collections"] == 0
