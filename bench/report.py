"""Raw runs into medians, the one table, the targets verdict, results.json and results.png."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import pipelines, syslogng
from bench.common import median
from logship.stages import STAGES

TARGET_RATIO_RAW = 0.90
TARGET_MULTIPLE = 150
TARGET_P99_MS = 10.0
TARGET_P99_RATIO_RAW = 0.75  # logship's p99 over the raw pipeline's, same round (issue 13)
TARGET_P50_1K_MS = 5.0
TARGET_RSS_MB = 64.0
TARGET_CPU_PER_M = 0.25
NONE = "-"
ORDER = [
    pipelines.LOGSHIP,
    pipelines.LOGSHIP_BASELINE,
    pipelines.LOGSHIP_NO_ARCHIVE,
    pipelines.LOGSHIP_CLASSIC,
    pipelines.LOGSHIP_CLUSTER,
    pipelines.RAW,
    pipelines.NAIVE,
    pipelines.SYSLOG_NG,
    pipelines.CAT,
]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every number over the successful runs of one pipeline."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"runs": len(runs), "ok": 0}
    out: dict[str, Any] = {"runs": len(runs), "ok": len(good)}
    for key in ("seconds", "lines_per_s", "mb_per_s"):
        out[key] = median([r[key] for r in good])
    for key in ("cpu_s_per_million_lines", "peak_rss_mb"):
        names = {n for r in good for n in r[key]}
        out[key] = {n: median([r[key][n] for r in good if n in r[key]]) for n in sorted(names)}
    out["verified"] = all(r["verified"] for r in good)
    out["lines"] = good[0]["lines"]
    return out


def _stage_medians(good: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage, the median over runs of that stage's p50 and p99 (ms)."""
    out: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        cells = [r["stages"][stage] for r in good if stage in r.get("stages", {})]
        p99 = [c["p99_ms"] for c in cells if c.get("p99_ms") is not None]
        p50 = [c["p50_ms"] for c in cells if c.get("p50_ms") is not None]
        if p99:
            out[stage] = {"p50_ms": median(p50), "p99_ms": median(p99)}
    return out


def p99_stage(stages: dict[str, dict[str, Any]]) -> str | None:
    """The stage with the highest p99: where the tail is."""
    timed = {k: v["p99_ms"] for k, v in stages.items() if v.get("p99_ms") is not None}
    return max(timed, key=lambda k: timed[k]) if timed else None


def p99_stage_words(cell: dict[str, Any]) -> str:
    """', p99 stage: <stage> <ms> ms' for one logship run; empty for the references."""
    stage = p99_stage(cell.get("stages", {}))
    return "" if stage is None else f", p99 stage: {stage} {cell['stages'][stage]['p99_ms']} ms"


def same_round_ratios(ours: list[dict[str, Any]], raw: list[dict[str, Any]]) -> list[float]:
    """Our p99 over the raw pipeline's p99 for every round both measured (in round order):
    within a round both ran minutes apart on the same machine, so the ratio cancels most of the
    load that moves both."""
    theirs = {r["round"]: r["p99_ms"] for r in raw if "error" not in r and r.get("p99_ms")}
    return [
        round(r["p99_ms"] / theirs[r["round"]], 3)
        for r in ours
        if "error" not in r and r.get("round") in theirs
    ]


def _summarise_rate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[-1].get("error", "no run") if runs else "no run", "runs": runs}
    out: dict[str, Any] = {"runs": runs, "ok": len(good), "lines": good[0]["lines"]}
    for key in ("p50_ms", "p99_ms", "max_ms"):
        values = [r[key] for r in good]
        out[key] = median(values)
        out[key.replace("_ms", "_spread_ms")] = [min(values), max(values)]
    names = {n for r in good for n in r.get("peak_rss_mb", {})}
    out["peak_rss_mb"] = {n: max(r["peak_rss_mb"].get(n, 0.0) for r in good) for n in names}
    out["verified"] = all(r["verified"] for r in good)
    stages = _stage_medians(good)
    if stages:
        out["stages"] = stages
        out["p99_stage"] = p99_stage(stages)
    return out


def summarise_latency(cells: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per pipeline and rate, from every run (each kept under `runs`): the medians of p50, p99 and
    max with their spread (lowest, highest), per stage the median of its p99 and the stage that
    holds the p99; for logship's pipelines the p99 over the raw pipeline's in the same round,
    each and their median (what the ratio target is judged on)."""
    out: dict[str, dict[str, Any]] = {}
    for kind, by_rate in cells.items():
        for rate, runs in by_rate.items():
            out.setdefault(kind, {})[rate] = summary = _summarise_rate(runs)
            if kind not in pipelines.LOGSHIPS or "error" in summary:
                continue
            for ref, key in ((pipelines.RAW, "raw"), (pipelines.LOGSHIP_BASELINE, "baseline")):
                ratios = same_round_ratios(runs, cells.get(ref, {}).get(rate, []))
                if ratios and kind != ref:
                    summary[f"p99_ratios_to_{key}"] = ratios
                    summary[f"p99_ratio_to_{key}"] = median(ratios)
    return out


def stage_table(results: dict[str, Any]) -> str:
    """A row per rate: logship's line p99 and its ratio to the raw pipeline's, each stage's p99
    (median over runs; per batch or group, see logship/stages.py) and the stage holding the
    tail. Empty when no logship run had stage figures."""
    lat = results["latency"].get(pipelines.LOGSHIP, {})
    rows = [
        ["rate lines/s", "runs", "p99 ms", "p99 / raw", *STAGES, "p99 stage"],
    ]
    rows.append(["---"] * len(rows[0]))
    for rate in results["config"]["rates"]:
        cell = lat.get(str(rate), {})
        stages = cell.get("stages")
        if not stages:
            continue
        ratio = cell.get("p99_ratio_to_raw")
        rows.append([
            f"{rate:,}", str(cell["ok"]), f"{cell['p99_ms']:.1f}",
            NONE if ratio is None else f"{ratio:.2f}",
            *[f"{stages[s]['p99_ms']:.1f}" if s in stages else NONE for s in STAGES],
            cell.get("p99_stage") or NONE,
        ])  # fmt: skip
    if len(rows) == 2:
        return ""
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gb, 1),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def load() -> dict[str, Any]:
    """How busy the machine is besides the benchmark: everything here shares two cores, so other
    work (a test suite, a private broker) shows up in every number."""
    busy: list[str] = []
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True
        ).stdout.splitlines()[1:9]
        rows = [text.split(None, 2) for text in out]
        busy = [
            f"{cpu}% {args[:100]}"
            for pid, cpu, args in rows
            if int(pid) != os.getpid() and float(cpu) >= 5.0
        ]
    except (OSError, ValueError, IndexError):
        pass
    return {"loadavg": list(os.getloadavg()), "busy_processes": busy}


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in ("logship", "aio-pika", "aiormq", "pamqp", "uvloop", "pika", "watchfiles"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    try:
        found["rabbitmq-server"] = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        found["rabbitmq-server"] = "unknown"
    found["syslog-ng"] = syslogng.version()
    return found


def _fmt_rate(value: float | None) -> str:
    return NONE if value is None else f"{value:,.0f}"


def _lat(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return NONE
    if "skipped" in cell:
        return "n/a"
    if "error" in cell:
        return "failed"
    spread = cell.get("p99_spread_ms")
    if spread is None or cell.get("ok", 1) < 2:
        return f"{cell['p50_ms']:.1f} / {cell['p99_ms']:.1f} / {cell['max_ms']:.0f}"
    # medians over the runs; the p99's lowest and highest in brackets
    return (
        f"{cell['p50_ms']:.1f} / {cell['p99_ms']:.1f} ({spread[0]:.1f}-{spread[1]:.1f}) / "
        f"{cell['max_ms']:.0f}"
    )


def table(results: dict[str, Any]) -> str:
    """The one table: a row per pipeline, throughput, ratios, CPU, memory and latency."""
    tp = results["throughput"]
    rates = results["config"]["rates"]
    raw = tp.get(pipelines.RAW, {}).get("lines_per_s")
    naive = tp.get(pipelines.NAIVE, {}).get("lines_per_s")
    sng = tp.get(pipelines.SYSLOG_NG, {}).get("lines_per_s")
    head = [
        "pipeline", "lines", "lines/s", "MB/s", "% of raw", "x naive", "x syslog-ng",
        "CPU-s/M lines prod / cons", "peak RSS MB prod / cons",
        *[f"latency ms p50/p99 (spread)/max @{r // 1000}k/s" for r in rates],
    ]  # fmt: skip
    rows = [head, ["---"] * len(head)]
    for kind in ORDER:
        s = tp.get(kind)
        if (not s or not s.get("ok")) and kind in results["latency"]:
            # measured for latency only (--only latency, the baseline)
            cells = [_lat(results["latency"][kind].get(str(r))) for r in rates]
            rows.append([kind, *[NONE] * (len(head) - len(rates) - 1), *cells])
            continue
        if not s or not s.get("ok"):
            continue
        rate = s["lines_per_s"]
        cpu = s["cpu_s_per_million_lines"]
        rss = s["peak_rss_mb"]
        prod = cpu.get("producer", cpu.get("copy"))
        row = [
            kind + ("" if s["verified"] else " (OUTPUT DIFFERS)"),
            f"{s['lines']:,}",
            _fmt_rate(rate),
            f"{s['mb_per_s']:.0f}",
            f"{rate / raw * 100:.0f} %" if raw else NONE,
            f"{rate / naive:.0f}x" if naive else NONE,
            f"{rate / sng:.0f}x" if sng else NONE,
            f"{prod:.3f} / {cpu['consumer']:.3f}" if "consumer" in cpu else f"{prod:.3f}",
            f"{rss['producer']:.0f} / {rss['consumer']:.0f}" if rss else NONE,
            *[_lat(results["latency"].get(kind, {}).get(str(r))) for r in rates],
        ]
        rows.append(row)
    return "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in rows)


def cluster_lines(results: dict[str, Any]) -> str:
    """The cost of replication in words: the cluster beside the single node, broker CPU included,
    and the failover gap. Empty when the cluster was not measured."""
    tp = results["throughput"]
    one, three = tp.get(pipelines.LOGSHIP, {}), tp.get(pipelines.LOGSHIP_CLUSTER, {})
    lines = []
    if one.get("ok") and three.get("ok"):
        cpu1, cpu3 = one["cpu_s_per_million_lines"], three["cpu_s_per_million_lines"]
        rate1, rate3 = one["lines_per_s"], three["lines_per_s"]
        lines.append(
            f"cluster (3 nodes on this machine) vs one node: {_fmt_rate(rate3)} vs "
            f"{_fmt_rate(rate1)} lines/s ({rate3 / rate1:.0%}); "
            f"CPU-s per million lines producer {cpu3.get('producer', 0):.3f} vs "
            f"{cpu1.get('producer', 0):.3f}, consumer {cpu3.get('consumer', 0):.3f} vs "
            f"{cpu1.get('consumer', 0):.3f}, broker nodes together {cpu3.get('broker', 0):.3f} "
            f"vs {cpu1.get('broker', 0):.3f}"
        )
    failover = results.get("failover") or {}
    if "failover_gap_s" in failover:
        lines.append(
            f"failover gap when the queue leader is killed at {failover['rate']:,} lines/s: "
            f"{failover['failover_gap_s']} s, verified={failover['verified']}"
        )
    elif "error" in failover:
        lines.append(f"failover: failed ({failover['error']})")
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of issue 8 with the measured value and whether it is met."""
    tp = results["throughput"]
    ours = tp.get(pipelines.LOGSHIP, {})
    verdict: dict[str, dict[str, Any]] = {}

    def put(name: str, value: Any, met: bool | None) -> None:
        verdict[name] = {"value": value, "met": met}

    rate = ours.get("lines_per_s")
    for ref, key, goal in (
        (pipelines.RAW, "throughput >= 90 % of raw chunk pipeline", TARGET_RATIO_RAW),
        (pipelines.NAIVE, "throughput >= 150x naive pika pair", TARGET_MULTIPLE),
        (pipelines.SYSLOG_NG, "throughput >= 150x syslog-ng", TARGET_MULTIPLE),
    ):
        other = tp.get(ref, {}).get("lines_per_s")
        ratio = rate / other if rate and other else None
        put(
            key,
            None if ratio is None else round(ratio, 3),
            None if ratio is None else ratio >= goal,
        )
    lat = results["latency"].get(pipelines.LOGSHIP, {})
    for r in results["config"]["rates"]:
        cell = lat.get(str(r), {})
        p99 = cell.get("p99_ms")
        put(f"p99 <= 10 ms @{r:,}/s", p99, None if p99 is None else p99 <= TARGET_P99_MS)
        ratio = cell.get("p99_ratio_to_raw")
        put(f"p99 <= 0.75x raw chunk pipeline's @{r:,}/s (median of same-run ratios)", ratio,
            None if ratio is None else ratio <= TARGET_P99_RATIO_RAW)  # fmt: skip
    p50 = lat.get("1000", {}).get("p50_ms")
    put("p50 <= 5 ms @1,000/s", p50, None if p50 is None else p50 <= TARGET_P50_1K_MS)
    rss = _max_rss(results)
    put("RSS <= 64 MB each, every scenario", rss, None if not rss else max(rss.values()) <= 64)
    alarm = results.get("memory_alarm") or {}
    if "rss_before_mb" in alarm:
        growth = alarm["rss_blocked_max_mb"]["producer"] - alarm["rss_before_mb"]["producer"]
        put("producer RSS flat under a 1 GB blocked backlog (growth MB)", round(growth, 1),
            growth <= 8 and alarm["rss_blocked_max_mb"]["producer"] <= TARGET_RSS_MB)  # fmt: skip
    cpu = ours.get("cpu_s_per_million_lines", {})
    for prog in ("producer", "consumer"):
        value = cpu.get(prog)
        put(f"{prog} <= 0.25 CPU-s per million lines", value,
            None if value is None else value <= TARGET_CPU_PER_M)  # fmt: skip
    return verdict


def _max_rss(results: dict[str, Any]) -> dict[str, float]:
    """Highest peak RSS of each logship program over every scenario it ran in."""
    seen: dict[str, float] = {}
    cells: list[dict[str, float]] = []
    for kind in pipelines.LOGSHIPS:
        cells += [r["peak_rss_mb"] for r in results["runs"].get(kind, []) if "peak_rss_mb" in r]
        cells += [c["peak_rss_mb"] for c in results["latency"].get(kind, {}).values()
                  if "peak_rss_mb" in c]  # fmt: skip
    alarm = results.get("memory_alarm") or {}
    if "peak_rss_mb" in alarm:
        cells.append(alarm["peak_rss_mb"])
    for cell in cells:
        for name, value in cell.items():
            seen[name] = max(seen.get(name, 0.0), value)
    return seen


def archive_lines(results: dict[str, Any]) -> str:
    """What the archive costs the live pipeline (the same run with and without it) and how fast
    an output is rebuilt from it."""
    tp = results["throughput"]
    out = []
    on = tp.get(pipelines.LOGSHIP, {}).get("lines_per_s")
    off = tp.get(pipelines.LOGSHIP_NO_ARCHIVE, {}).get("lines_per_s")
    if on and off:
        out.append(
            f"archive cost: {_fmt_rate(on)} lines/s with it, {_fmt_rate(off)} without "
            f"({(on - off) / off * 100:+.0f} %)"
        )
    rebuilt = results.get("rebuild") or {}
    if "error" in rebuilt:
        out.append(f"rebuild: failed ({rebuilt['error']})")
    elif rebuilt:
        disk = rebuilt["archive_disk_mb_per_million_lines"]
        out.append(
            f"rebuild: {_fmt_rate(rebuilt['lines_per_s'])} lines/s from the archive to a "
            f"durable output ({rebuilt['lines']:,} lines in {rebuilt['seconds']:.1f} s, "
            f"{rebuilt['cpu_s']:.1f} CPU-s, peak RSS {rebuilt['peak_rss_mb']:.0f} MB, "
            f"verified={rebuilt['verified']}); archive on disk: "
            + ("not readable here" if disk is None else f"{disk} MB per million lines")
        )
    return "\n" + "\n".join(out) if out else ""


def verdict_lines(verdict: dict[str, dict[str, Any]]) -> str:
    mark = {True: "met", False: "NOT met", None: "not measured"}
    return "\n".join(f"- {k}: {v['value']} — {mark[v['met']]}" for k, v in verdict.items())


def draw(results: dict[str, Any], path: Path) -> None:
    """Throughput bars (log scale) and latency percentiles per rate against the references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tp = results["throughput"]
    kinds = [k for k in ORDER if tp.get(k, {}).get("ok")]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [1, 1.4]}
    )
    colours = {
        pipelines.LOGSHIP: "#1f77b4", pipelines.LOGSHIP_CLASSIC: "#6baed6",
        pipelines.LOGSHIP_NO_ARCHIVE: "#9467bd", pipelines.LOGSHIP_BASELINE: "#17becf",
        pipelines.LOGSHIP_CLUSTER: "#8c564b",
        pipelines.RAW: "#2ca02c", pipelines.NAIVE: "#d62728",
        pipelines.SYSLOG_NG: "#ff7f0e", pipelines.CAT: "#7f7f7f",
    }  # fmt: skip
    values = [tp[k]["lines_per_s"] for k in kinds]
    bars = left.barh(kinds[::-1], values[::-1], color=[colours[k] for k in kinds[::-1]])
    left.set_xscale("log")
    left.set_xlabel("lines/s end to end (log scale, median)")
    left.set_title("Throughput, ~99-byte lines, fsync'd output")
    for bar, value in zip(bars, values[::-1], strict=True):
        left.text(value, bar.get_y() + bar.get_height() / 2, f" {value:,.0f}", va="center")
    left.set_xlim(right=max(values) * 8)

    rates = results["config"]["rates"]
    lat_kinds = [k for k in ORDER if k in results["latency"]]
    width = 0.8 / max(1, len(lat_kinds))
    for i, kind in enumerate(lat_kinds):
        cells = [results["latency"][kind].get(str(r), {}) for r in rates]
        xs = [j + i * width for j in range(len(rates))]
        p99 = [c.get("p99_ms", math.nan) for c in cells]
        p50 = [c.get("p50_ms", math.nan) for c in cells]
        right.bar(xs, p99, width * 0.9, color=colours[kind], alpha=0.45, label=f"{kind} p99")
        right.bar(xs, p50, width * 0.9, color=colours[kind], label=f"{kind} p50")
    right.axhline(TARGET_P99_MS, color="black", linestyle="--", linewidth=1, label="p99 target")
    right.set_yscale("log")
    right.set_xticks([j + width * (len(lat_kinds) - 1) / 2 for j in range(len(rates))])
    right.set_xticklabels([f"{r:,} lines/s" for r in rates])
    right.set_ylabel("append → durable output, ms (log scale)")
    right.set_title("Latency at a steady rate (p50 solid, p99 light)")
    right.legend(fontsize=7, ncol=2)
    gap = (results.get("failover") or {}).get("failover_gap_s")
    if gap is not None:
        fig.suptitle(f"{pipelines.LOGSHIP_CLUSTER}: failover gap {gap} s when the queue leader "
                     "is killed", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
