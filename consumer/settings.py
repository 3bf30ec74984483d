"""The consumer's settings: every value from LOGSHIP_* or a flag (`python -m consumer --help`)."""

from __future__ import annotations

import os
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
    settings_config,
)


class FsyncPolicy(StrEnum):
    always = "always"  # fsync before every acknowledgement: survives a machine crash
    never = "never"  # write before ack, leave flushing to the OS: survives a process crash only


class ConsumerSettings(BaseSettings):
    """Consume shipped lines and append them to OUTPUT exactly once."""

    model_config = settings_config("logship-consumer")

    output: Path = Field(default=Path("output.txt"), description="file the lines are appended to")
    prefetch: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8,
        description="messages in hand before acknowledging (x batch-max-bytes bounds memory; "
        "twice that while batches wait for the ones before them, see reorder-wait)",
    )
    fsync: FsyncPolicy = Field(
        default=FsyncPolicy.always,
        description="always: fsync before every acknowledgement (survives a machine crash); "
        "never: the OS flushes (survives a process crash)",
    )
    exit_when_idle: Annotated[float, Field(gt=0, le=86400)] | None = Field(
        default=None,
        description="exit 0 once the queue has been empty this many seconds (a draining Job)",
        json_schema_extra={"unset": "never"},
    )
    shutdown_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=20.0,
        description="seconds to finish and acknowledge messages in hand at stop (keep it under "
        "the orchestrator's grace period)",
    )
    retry_max_delay: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0, description="longest pause between retries of a failing write"
    )
    queue_poll_interval: Annotated[float, Field(gt=0, le=600)] = Field(
        default=5.0, description="seconds between queue depth checks (metrics, idle exit)"
    )
    reorder_wait: Annotated[float, Field(ge=0, le=600)] = Field(
        default=10.0,
        description="seconds a batch that arrives before the ones in front of it in its file "
        "(a broker failover) waits for them, while this is the queue's only consumer (0 = write "
        "at once)",
    )
    id: str | None = id_field("consumer", "named in the written receipts it sends")
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=9102))
    log: LogSettings = Field(default_factory=LogSettings)

    @property
    def consumer_id(self) -> str:
        """The id receipts name this consumer by: `id`, else hostname:pid."""
        return self.id if self.id is not None else default_id()

    @model_validator(mode="after")
    def _output_writable(self) -> ConsumerSettings:
        check_file_path("output", self.output)
        directory = self.output.parent
        if not os.access(directory, os.W_OK | os.X_OK):
            raise SettingProblem("output", f"directory {directory} is not writable")
        if self.output.exists() and not os.access(self.output, os.W_OK):
            raise SettingProblem("output", f"{self.output} is not writable")
        return self
