"""The consumer's Prometheus metrics, on a registry of its own (no global registry)."""

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

from consumer.receipts import OUTCOMES as RECEIPT_OUTCOMES
from consumer.sink import LOSS_REASONS, ROTATION_REASONS
from logship.connection_metrics import ConnectionMetrics
from logship.gcpauses import GcPauses
from logship.stages import CONSUMER_STAGES, stage_histogram

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)


class ConsumerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)  # how many collections; how long each:
        self.gc_pauses = GcPauses("consumer", self.registry)
        r = self.registry
        self.connection = ConnectionMetrics("consumer", r)
        self.receipts = Counter(
            "logship_consumer_receipts_total",
            "Written receipts sent to producers, by outcome (sent, unroutable: no such producer, "
            "failed, dropped: too many in flight or receipts unavailable)",
            ["outcome"],
            registry=r,
        )
        for outcome in RECEIPT_OUTCOMES:
            self.receipts.labels(outcome)
        self.messages_written = Counter(
            "logship_consumer_messages_written_total",
            "Messages appended to the output",
            registry=r,
        )
        self.lines_written = Counter(
            "logship_consumer_lines_written_total", "Lines appended to the output", registry=r
        )
        self.bytes_written = Counter(
            "logship_consumer_bytes_written_total", "Bytes appended to the output", registry=r
        )
        self.duplicates_skipped = Counter(
            "logship_consumer_duplicates_skipped_total",
            "Messages wholly or partly written before, skipped or trimmed",
            registry=r,
        )
        self.duplicate_bytes = Counter(
            "logship_consumer_duplicate_bytes_total", "Bytes not written again", registry=r
        )
        self.out_of_order = Counter(
            "logship_consumer_out_of_order_total",
            "Batches that arrived past a gap in their source",
            registry=r,
        )
        self.dead_lettered = Counter(
            "logship_consumer_messages_dead_lettered_total",
            "Messages rejected to the dead-letter queue",
            ["reason"],
            registry=r,
        )
        self.write_errors = Counter(
            "logship_consumer_write_errors_total",
            "Writes that failed for a passing reason and are retried",
            registry=r,
        )
        self.output_rotations = Counter(
            "logship_consumer_output_rotations_total",
            "Times the output file was found renamed, deleted or truncated and followed",
            ["reason"],
            registry=r,
        )
        for reason in ROTATION_REASONS:  # every reason present from the start, at 0
            self.output_rotations.labels(reason)
        self.output_bytes_lost = Counter(
            "logship_consumer_output_bytes_lost_total",
            "Acknowledged output bytes cut from the output and found in no copy beside it",
            ["reason"],
            registry=r,
        )
        for reason in LOSS_REASONS:
            self.output_bytes_lost.labels(reason)
        self.output_bytes_repaired = Counter(
            "logship_consumer_output_bytes_repaired_total",
            "Bytes a copytruncate's copy missed, put back at the start of the truncated output",
            registry=r,
        )
        self.write_latency = Histogram(
            "logship_consumer_write_latency_seconds",
            "Time to append a group of messages",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fsync_latency = Histogram(
            "logship_consumer_fsync_latency_seconds",
            "Time to fsync output and state",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_latency = Histogram(
            "logship_consumer_end_to_end_latency_seconds",
            "From the producer reading the bytes to their durable write",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ack_latency = Histogram(
            "logship_consumer_ack_latency_seconds",
            "From delivery to acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_hand = Gauge(
            "logship_consumer_messages_in_hand",
            "Delivered messages not yet acknowledged",
            registry=r,
        )
        self.queue_messages_ready = Gauge(
            "logship_consumer_queue_messages_ready",
            "Messages ready in the queue, as observed",
            registry=r,
        )
        self.queue_consumers = Gauge(
            "logship_consumer_queue_consumers", "Consumers on the queue, as observed", registry=r
        )
        self.archive_oldest_age = Gauge(
            "logship_consumer_archive_oldest_entry_age_seconds",
            "Age of the archive's first entry (its producer read time), looked at every minute",
            registry=r,
        )
        self.archive_oldest_age.set(float("nan"))  # unknown (no alert compares) until looked at
        self.archive_max_age = Gauge(
            "logship_consumer_archive_max_age_seconds",
            "The archive's retention by age as configured (archive.max-age; 0: archive off)",
            registry=r,
        )
        self.stage = stage_histogram("consumer", CONSUMER_STAGES, r)
