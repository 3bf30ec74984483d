"""The producer's Prometheus metrics, on a registry of its own (no global registry)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from logship.connection_metrics import ConnectionMetrics
from logship.gcpauses import GcPauses
from logship.stages import PRODUCER_STAGES, stage_histogram

# why bytes could not be read: cut before they were read, the copy compressed or gone at restart,
# a rotated file deleted while the producer was down
LOSS_REASONS = ("truncated", "copy_compressed", "copy_missing", "deleted")
RECEIPT_OUTCOMES = ("received", "malformed")
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ProducerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)  # how many collections; how long each:
        self.gc_pauses = GcPauses("producer", self.registry)
        r = self.registry
        self.connection = ConnectionMetrics("producer", r)
        self.lines_read = Counter(
            "logship_producer_lines_read_total", "Complete lines read from input files", registry=r
        )
        self.bytes_read = Counter(
            "logship_producer_bytes_read_total", "Bytes read from input files", registry=r
        )
        self.batches_published = Counter(
            "logship_producer_batches_published_total", "Batches sent to the broker", registry=r
        )
        self.confirms = Counter(
            "logship_producer_confirms_total", "Batches confirmed by the broker", registry=r
        )
        self.lines_confirmed = Counter(
            "logship_producer_lines_confirmed_total", "Lines in confirmed batches", registry=r
        )
        self.nacks = Counter(
            "logship_producer_nacks_total", "Batches nacked or returned by the broker", registry=r
        )
        self.publish_retries = Counter(
            "logship_producer_publish_retries_total",
            "Batches sent again after a nack, timeout or lost connection",
            registry=r,
        )
        self.confirm_latency = Histogram(
            "logship_producer_publish_confirm_latency_seconds",
            "Time from publish to broker confirm",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_behind = Gauge(
            "logship_producer_bytes_behind",
            "File size minus confirmed checkpoint offset",
            ["file"],
            registry=r,
        )
        self.bytes_not_written = Gauge(
            "logship_producer_bytes_not_written",
            "Bytes this run read and sent that no consumer has reported written yet (by written "
            "receipts); absent with receipts off",
            ["file"],
            registry=r,
        )
        self.receipts = Counter(
            "logship_producer_receipts_total",
            "Written receipts received from consumers, by outcome (received, malformed)",
            ["outcome"],
            registry=r,
        )
        for outcome in RECEIPT_OUTCOMES:
            self.receipts.labels(outcome)
        self.rotations = Counter(
            "logship_producer_rotations_total", "Files replaced by rename or delete", registry=r
        )
        self.truncations = Counter(
            "logship_producer_truncations_total", "Files truncated in place", registry=r
        )
        self.bytes_lost = Counter(
            "logship_producer_bytes_lost_total",
            "Bytes nobody can read any more (truncated before they were read, a copy compressed "
            "or missing, a rotated file deleted), by reason",
            ["reason"],
            registry=r,
        )
        for reason in LOSS_REASONS:  # every series exists at 0, so an alert sees the first loss
            self.bytes_lost.labels(reason)
        self.oversized_lines = Counter(
            "logship_producer_oversized_lines_total",
            "Lines longer than batch_max_bytes, split across messages",
            registry=r,
        )
        self.in_flight = Gauge(
            "logship_producer_in_flight_batches", "Batches awaiting a confirm", registry=r
        )
        self.checkpoint_writes = Counter(
            "logship_producer_checkpoint_writes_total", "Checkpoint files written", registry=r
        )
        self.stage = stage_histogram("producer", PRODUCER_STAGES, r)
