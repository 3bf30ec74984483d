"""The stage arithmetic: the change → read estimate, the publish → delivery time from a header,
and the quantile read back from a histogram's buckets (what the benchmark reports)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from consumer.subscriber import since_published
from logship.stages import (
    CONSUMER_STAGES,
    STAGE_BUCKETS,
    change_to_read,
    parse_histogram,
    quantile,
    stage_histogram,
)
from logship.wire import H_SENT


def test_a_growing_file_waits_since_the_previous_look() -> None:
    # a reader stalled 30 ms: the first bytes after its last look waited that long
    assert change_to_read(10.030, 10.0, growing=True, now_file_ns=0, mtime_ns=0) == pytest.approx(
        0.030
    )


def test_after_a_quiet_look_the_wait_is_since_the_last_write_bounded_by_the_look() -> None:
    now_ns = 50_000_000_000
    one_write = change_to_read(
        10.0, 9.0, growing=False, now_file_ns=now_ns, mtime_ns=now_ns - 4_000_000
    )
    assert one_write == pytest.approx(0.004)
    # mtime from before the look (a clock step, a coarse stamp): never more than since the look
    assert change_to_read(
        10.0, 9.999, growing=False, now_file_ns=now_ns, mtime_ns=now_ns - 10**9
    ) == pytest.approx(0.001)
    assert change_to_read(10.0, 10.5, growing=True, now_file_ns=0, mtime_ns=0) == 0.0


def test_publish_to_delivery_comes_from_the_sent_header_only() -> None:
    assert since_published({H_SENT: 1_000_000_000}, 1_002_500_000) == pytest.approx(0.0025)
    assert since_published({H_SENT: 2_000}, 1_000) == 0.0  # clocks a hair apart
    assert since_published({}, 5) is None
    assert since_published(None, 5) is None
    assert since_published({H_SENT: True}, 5) is None
    assert since_published({H_SENT: "12"}, 5) is None


def test_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    buckets = [(0.001, 50.0), (0.002, 90.0), (0.005, 100.0), (math.inf, 100.0)]
    assert quantile(buckets, 0.5) == pytest.approx(0.001)
    assert quantile(buckets, 0.7) == pytest.approx(0.0015)
    assert quantile(buckets, 0.99) == pytest.approx(0.002 + 0.003 * 9 / 10)
    assert quantile(buckets, 0.25) == pytest.approx(0.0005)  # from 0 within the first bucket
    assert quantile([(0.001, 0.0), (math.inf, 0.0)], 0.99) is None
    assert quantile([(0.001, 1.0), (math.inf, 2.0)], 0.99) == 0.001  # beyond the last bound


def test_a_histogram_exposed_and_parsed_back_gives_its_quantiles() -> None:
    registry = CollectorRegistry()
    stages = stage_histogram("consumer", CONSUMER_STAGES, registry)
    for i in range(1, 101):
        stages["written_to_synced"].observe(i / 100_000)  # 0.01 .. 1 ms
    stages["recorded_to_acked"].observe(0.020)
    text = generate_latest(registry).decode()
    parsed = parse_histogram(text, "logship_consumer_stage_seconds")
    assert set(parsed) == set(CONSUMER_STAGES)  # every stage is there from the start
    assert len(parsed["written_to_synced"]) == len(STAGE_BUCKETS) + 1
    p99 = quantile(parsed["written_to_synced"], 0.99)
    assert p99 is not None and 0.0009 <= p99 <= 0.001
    assert quantile(parsed["recorded_to_acked"], 0.5) == pytest.approx(0.0175)
    assert quantile(parsed["publish_to_delivery"], 0.99) is None
