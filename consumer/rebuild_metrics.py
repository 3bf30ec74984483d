"""The metrics of `logship-consumer rebuild` and of a `--follow` sink, on their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from logship.wire import UNDECODABLE

SKIP_REASONS = ("foreign", "bad_header", "bad_version", "bad_range", UNDECODABLE)


class RebuildMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.offset = Gauge(
            "logship_archive_rebuild_offset",
            "Stream offset of the last archived message written (or skipped) into the output",
            registry=r,
        )
        self.end_offset = Gauge(
            "logship_archive_rebuild_end_offset",
            "Last offset of the archive when the rebuild started (where it stops)",
            registry=r,
        )
        self.lines = Counter(
            "logship_archive_rebuild_lines_written_total",
            "Lines appended to the output from the archive",
            registry=r,
        )
        self.bytes = Counter(
            "logship_archive_rebuild_bytes_written_total",
            "Bytes appended to the output from the archive",
            registry=r,
        )
        self.skipped = Counter(
            "logship_archive_rebuild_messages_skipped_total",
            "Archived messages that are not logship batches (foreign) or can never be written",
            ["reason"],
            registry=r,
        )
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        self.oldest_age = Gauge(
            "logship_archive_oldest_entry_age_seconds",
            "Age of the archive's first entry (by its producer read time) when last looked at",
            registry=r,
        )
        self.bytes_missing = Gauge(
            "logship_archive_rebuild_bytes_missing",
            "Bytes of a source before its first archived byte that the output lacks",
            ["source"],
            registry=r,
        )
