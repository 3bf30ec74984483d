"""Where a batch's time goes: the stages of the path, one histogram per program with a `stage`
label, and the arithmetic that reads a quantile back from such a histogram (the benchmark's).

A line's way, in order; each stage is observed once per batch (producer, publish_to_delivery) or
once per group of deliveries (the consumer's own stages), never once per line:

    producer  change_to_read      the bytes appeared in the file → read (an estimate, see
                                  `change_to_read`)
              read_to_publish     read → its frames handed to the connection (waits for confirm
                                  room, the event loop, a re-send)
              publish_to_confirm  handed to the connection → the broker's confirm
    consumer  publish_to_delivery handed to the connection (x-logship-sent-ns) → delivered to us
              delivery_to_written the group's oldest delivery → appended to the output (waiting
                                  in the inbox behind the group before, decode, plan, writev)
              written_to_synced   the output's fdatasync
              synced_to_recorded  the state record written and made durable
              recorded_to_acked   the acknowledgement sent

The producer's ingest API (POST /v1/lines) has stages of its own, once per request, between the
handler being called and its answer (the HTTP parsing before and the response write after are
aiohttp's):

    ingest    read_body           the handler called → the whole body read
              queued              the body queued for a batch → its last batch handed to the
                                  publisher (the linger while earlier batches await confirms)
              batch_confirm       that batch handed to the publisher → every batch holding the
                                  body confirmed (publish_to_confirm, per request)
              answer              confirmed → the handler running again (the event loop's delay)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Histogram

PRODUCER_STAGES = ("change_to_read", "read_to_publish", "publish_to_confirm")
CONSUMER_STAGES = (
    "publish_to_delivery",
    "delivery_to_written",
    "written_to_synced",
    "synced_to_recorded",
    "recorded_to_acked",
)
STAGES = PRODUCER_STAGES + CONSUMER_STAGES
INGEST_STAGES = ("read_body", "queued", "batch_confirm", "answer")
# fine below 20 ms, where the p99 targets are; coarse above, where only outages go
STAGE_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02,
    0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


def stage_histogram(
    component: str, stages: Sequence[str], registry: CollectorRegistry
) -> dict[str, Histogram]:
    """`logship_<component>_stage_seconds{stage=…}`, every stage present from the start; one
    child per stage, looked up once here rather than on every observation."""
    histogram = Histogram(
        f"logship_{component}_stage_seconds",
        "Seconds a batch spent in each stage of the path (see logship/stages.py)",
        ["stage"],
        buckets=STAGE_BUCKETS,
        registry=registry,
    )
    return {stage: histogram.labels(stage) for stage in stages}


def change_to_read(
    now: float, previous_look: float, *, growing: bool, now_file_ns: int, mtime_ns: int
) -> float:
    """How long the bytes of a batch waited in the file before we read them, estimated: their
    append time is not recorded anywhere. They came after the previous look that reached the
    file's end (`previous_look`, on the clock of `now`), and the last of them at the file's mtime.
    While the file is `growing` (the previous look found bytes too), every look finds what came
    since the one before, so `now - previous_look` is the wait of the first of them, high by at
    most the writer's interval, and it shows a stalled reader. After a quiet look, the bytes are
    most often one write: `now - mtime` (on the coarse file clock, `now_file_ns`), never more than
    the time since that look."""
    since_look = max(0.0, now - previous_look)
    if growing:
        return since_look
    return max(0.0, min(since_look, (now_file_ns - mtime_ns) / 1e9))


def parse_histogram(
    text: str, name: str, label: str = "stage"
) -> dict[str, list[tuple[float, float]]]:
    """From Prometheus text exposition, the cumulative buckets of histogram `name` for each value
    of `label` (the stage), as (upper bound, count), in order of bound."""
    found: dict[str, list[tuple[float, float]]] = {}
    prefix = name + "_bucket{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, _, value = line[len(prefix) :].partition("} ")
        pairs = dict(part.split("=", 1) for part in labels.split(","))
        stage = pairs.get(label, '""').strip('"')
        bound = float(pairs["le"].strip('"'))
        found.setdefault(stage, []).append((bound, float(value)))
    return {stage: sorted(buckets) for stage, buckets in found.items()}


def quantile(buckets: Iterable[tuple[float, float]], q: float) -> float | None:
    """The q-quantile (0 < q < 1) of a histogram's cumulative buckets, interpolated linearly
    within the bucket it falls in, as Prometheus' histogram_quantile does; None when empty. In
    the +Inf bucket it is the last finite bound (a lower bound, as in Prometheus)."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower
