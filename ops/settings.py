"""`logship status` settings: the same LOGSHIP_* variables and defaults as the programs it reads."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from logship.config import AmqpSettings, settings_config

DEFAULT_WATCH_S = 2.0
# flags named by an alias: pydantic-settings would also read them from the unprefixed variables
# JSON and ALL, which an operator's shell may hold for other reasons
FLAG_ONLY = ("json_output", "all_sources")


class _EnvExceptFlagOnly(EnvSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in FLAG_ONLY:
            return None, field_name, False
        return super().get_field_value(field, field_name)


class StatusSettings(BaseSettings):
    """Show, for each input file, its size and the offsets read (producer), confirmed (broker)
    and written (consumer), with the lag; the output, the queue and the dead letters. Reads the
    producer's checkpoint, the consumer's state file and the broker (passive checks only), and
    asks the running programs' HTTP endpoints; changes nothing and stops nothing.

    Lag: bytes = the file's size (or, for a rotated-away file, where reading it ended) minus
    the written offset (everything before it is in the output). Seconds = how long ago the file
    last changed while bytes are lagging: a lower bound for the age of the oldest unwritten byte,
    0 when nothing lags. Exit 0 when the status was shown (even with the broker unreachable),
    2 on a bad setting or an unreadable checkpoint or state file."""

    model_config = settings_config("logship status")

    checkpoint: Path = Field(
        default=Path("logship-producer.checkpoint"),
        description="the producer's checkpoint (as --checkpoint of the producer)",
    )
    output: Path = Field(
        default=Path("output.txt"),
        description="the consumer's output; its state is OUTPUT.state (as the consumer's --output)",
    )
    producer_url: str = Field(
        default="http://127.0.0.1:9101",
        description="the running producer's HTTP server, for read offsets ('' = do not ask)",
    )
    consumer_url: str = Field(
        default="http://127.0.0.1:9102",
        description="the running consumer's HTTP server, for its readiness ('' = do not ask)",
    )
    json_output: bool = Field(
        default=False,
        alias="json",
        description="print one JSON document (with --watch: one per line) instead of a table",
    )
    watch: Annotated[float, Field(gt=0, le=3600)] | None = Field(
        default=None,
        description=f"refresh every SECONDS ({DEFAULT_WATCH_S:g} when none given) until Ctrl-C",
    )
    all_sources: bool = Field(
        default=False,
        alias="all",
        description="list every source, also finished (rotated, truncated) files fully written",
    )
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """--json and --all are flags only (see FLAG_ONLY); everything else as usual."""
        env = _EnvExceptFlagOnly(settings_cls)
        return init_settings, env, dotenv_settings, file_secret_settings


# --help prints the docstring as written: without the class body's indentation
StatusSettings.__doc__ = inspect.cleandoc(StatusSettings.__doc__ or "")
