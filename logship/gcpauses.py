"""How long the garbage collector stopped the event loop: each collection's pause, by generation,
as a histogram (the standard GC collector counts collections but not their length). Installed
in gc.callbacks by the service for the program's run, removed at its end."""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

# a young collection takes microseconds; a full one over a large heap tens to hundreds of ms
PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses:
    """`logship_<component>_gc_pause_seconds{generation}` (wall clock: what the event loop
    lost) and `logship_<component>_gc_cpu_seconds_total{generation}` (the collector's own CPU:
    on a busy machine the pause is longer than the work, the process being preempted too)."""

    def __init__(self, component: str, registry: CollectorRegistry) -> None:
        histogram = Histogram(
            f"logship_{component}_gc_pause_seconds",
            "Seconds each garbage collection stopped the program (the event loop), by generation",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=registry,
        )
        cpu = Counter(
            f"logship_{component}_gc_cpu_seconds_total",
            "CPU seconds the garbage collector spent, by generation",
            ["generation"],
            registry=registry,
        )
        self._by_generation = [histogram.labels(str(g)) for g in range(3)]
        self._cpu = [cpu.labels(str(g)) for g in range(3)]
        self._started = 0.0
        self._started_cpu = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            self._started_cpu = time.thread_time()
        else:
            generation = info["generation"]
            self._by_generation[generation].observe(time.perf_counter() - self._started)
            self._cpu[generation].inc(time.thread_time() - self._started_cpu)

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
