"""The producer's settings: every value from LOGSHIP_* or a flag (`python -m producer --help`)."""

from __future__ import annotations

import os
import stat
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from logship.cli import SettingProblem
from logship.config import (
    AmqpSettings,
    ArchiveSettings,
    HttpSettings,
    LogSettings,
    check_file_path,
    default_id,
    id_field,
    probe_path,
    settings_config,
)
from producer.identity import file_kind
from producer.ingest_settings import IngestSettings


class ReadFrom(StrEnum):
    beginning = "beginning"
    end = "end"


class Compression(StrEnum):
    none = "none"
    zstd = "zstd"  # level 1; the consumer decompresses by content_encoding, whatever it is told


class ProducerSettings(BaseSettings):
    """Tail INPUT (a path or a glob) and ship every complete line through RabbitMQ."""

    model_config = settings_config("logship-producer")

    input: str = Field(
        default="input.txt",
        min_length=1,
        description="file to tail, or a glob in its last part ('/var/log/app/*.log')",
        json_schema_extra={"metavar": "PATH|GLOB"},
    )
    checkpoint: Path = Field(
        default=Path("logship-producer.checkpoint"),
        description="where file identities and confirmed offsets are kept",
    )
    read_from: ReadFrom = Field(
        default=ReadFrom.beginning,
        description="where to start in a file there at the first start (later files: beginning)",
    )
    poll: bool = Field(default=False, description="poll instead of inotify (network volumes)")
    poll_interval: Annotated[float, Field(gt=0, le=60)] = Field(
        default=0.25, description="seconds between polls and between safety re-checks"
    )
    batch_max_lines: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=200_000, description="lines per message at most"
    )
    batch_max_bytes: Annotated[int, Field(ge=64, le=64 * 1024 * 1024)] = Field(
        default=1024 * 1024,
        description="bytes per message; a longer line is split across messages",
    )
    batch_linger: Annotated[float, Field(ge=0, le=10)] = Field(
        default=0.002,
        description="least seconds between two reads of a growing file (batches more lines "
        "a message; the latency it adds is at most this)",
    )
    max_in_flight: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=16, description="published batches awaiting a confirm"
    )
    max_in_flight_bytes: Annotated[int, Field(ge=64, le=1024 * 1024 * 1024)] = Field(
        default=2 * 1024 * 1024,
        description="bytes awaiting a confirm (bounds memory, plus one batch)",
    )
    publish_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0, description="seconds to wait for a confirm before sending again"
    )
    compression: Compression = Field(
        default=Compression.none,
        description="none, or zstd: batch bodies compressed on the wire (fewer broker bytes, "
        "more producer CPU; see bench/README.md)",
    )
    checkpoint_interval: Annotated[float, Field(ge=0, le=60)] = Field(
        default=0.2, description="seconds between checkpoint writes (group commit)"
    )
    rotation_grace: Annotated[float, Field(ge=0, le=600)] = Field(
        default=2.0, description="seconds a rotated-away file is still drained for late writes"
    )
    once: bool = Field(default=False, description="ship what the files hold now, then exit 0")
    shutdown_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=15.0,
        description="seconds to wait for outstanding confirms at stop (keep it under the "
        "orchestrator's grace period)",
    )
    id: str | None = id_field(
        "producer", "to which consumers send written receipts (unique among producers)"
    )
    receipts: bool = Field(
        default=True,
        description="ask consumers for written receipts (bytes-not-written, the written state of "
        "what was sent)",
    )
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=9101))
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @property
    def producer_id(self) -> str:
        """The id receipts are addressed to: `id`, else hostname:pid."""
        return self.id if self.id is not None else default_id()

    @model_validator(mode="after")
    def _paths_usable(self) -> ProducerSettings:
        given = Path(self.input)
        if not any(ch in str(given.parent) for ch in "*?["):
            probe_path("input", given)
            if given.is_dir():
                raise SettingProblem(
                    "input", f"{given} is a directory; give a file or a glob ('{given}/*.log')"
                )
            check_file_path("input", given)  # the file itself may appear later
        if not any(ch in self.input for ch in "*?["):
            try:
                mode = os.stat(self.input).st_mode
            except OSError:
                mode = None  # not there yet (it may appear), or unreadable: said when opened
            if mode is not None and not stat.S_ISREG(mode):
                raise SettingProblem(
                    "input", f"{self.input} is a {file_kind(mode)}, not a regular file"
                )
        check_file_path("checkpoint", self.checkpoint)
        return self
