"""Settings of `logship-consumer rebuild`: which part of the archive goes into which output."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings

from consumer.settings import FsyncPolicy
from logship.cli import SettingProblem
from logship.config import (
    AmqpSettings,
    HttpSettings,
    LogSettings,
    check_file_path,
    settings_config,
)


class ArchiveSource(BaseModel):
    """The archive a rebuild reads (the producer and consumer declare it; see ArchiveSettings)."""

    queue: str = Field(
        default="logs.archive",
        min_length=1,
        max_length=255,
        description="stream queue that keeps the archive",
        json_schema_extra={"metavar": "NAME"},
    )


class RebuildSettings(BaseSettings):
    """Append what the archive holds to OUTPUT, exactly once (only what it lacks)."""

    model_config = settings_config("logship-consumer rebuild")

    output: Path = Field(default=Path("output.txt"), description="file the lines are appended to")
    since: datetime | None = Field(
        default=None,
        description="only batches read by the producer at or after this time (ISO 8601, UTC "
        "unless it says otherwise, or seconds since the epoch)",
        json_schema_extra={"metavar": "TIME", "unset": "the archive's start"},
    )
    until: datetime | None = Field(
        default=None,
        description="only batches read before this time",
        json_schema_extra={"metavar": "TIME", "unset": "the archive's end"},
    )
    from_offset: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="start at this stream offset instead of a time",
        json_schema_extra={"unset": "the archive's start"},
    )
    source: str | None = Field(
        default=None,
        description="only this source identity (see the state file or x-logship-source)",
        json_schema_extra={"metavar": "NAME", "unset": "all"},
    )
    path: str | None = Field(
        default=None,
        description="only batches read from this input path",
        json_schema_extra={"metavar": "PATH", "unset": "all"},
    )
    follow: bool = Field(
        default=False,
        description="keep following the archive as a second sink instead of stopping at its end",
    )
    prefetch: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=32, description="messages in hand before acknowledging (credit on the stream)"
    )
    fsync: FsyncPolicy = Field(
        default=FsyncPolicy.always,
        description="always: fsync before recording progress; never: the OS flushes",
    )
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    archive: ArchiveSource = Field(default_factory=ArchiveSource)
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=0))
    log: LogSettings = Field(default_factory=LogSettings)

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RebuildSettings:
        check_file_path("output", self.output)
        if not os.access(self.output.parent, os.W_OK | os.X_OK):
            raise SettingProblem("output", f"directory {self.output.parent} is not writable")
        if self.since is not None and self.from_offset is not None:
            raise SettingProblem("from_offset", "give --since or --from-offset, not both")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise SettingProblem("until", "must be later than --since")
        if self.follow and self.until is not None:
            raise SettingProblem("until", "a --follow sink has no end; drop --until or --follow")
        return self
