"""The garbage collector's pauses are measured while installed, and not after."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from logship.gcpauses import GcPauses


def full_collections(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value("logship_test_gc_pause_seconds_count", {"generation": "2"})
    return value or 0.0


def test_each_full_collection_is_one_observed_pause_while_installed() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses("test", registry)
    pauses.install()
    pauses.install()  # once only
    try:
        gc.collect()
        gc.collect()
        assert full_collections(registry) == 2
        cpu = registry.get_sample_value("logship_test_gc_cpu_seconds_total", {"generation": "2"})
        assert cpu is not None and cpu > 0
        assert (
            registry.get_sample_value("logship_test_gc_pause_seconds_sum", {"generation": "2"}) or 0
        ) > 0
    finally:
        pauses.remove()
    gc.collect()
    assert full_collections(registry) == 2
