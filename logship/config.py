"""Settings shared by both programs (AMQP, HTTP, logging) and the one place that turns bad ones into
a clear single-line error."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, NoReturn, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

EXIT_BAD_SETTINGS = 2


class QueueType(StrEnum):
    quorum = "quorum"
    classic = "classic"


class AmqpSettings(BaseModel):
    """How to reach RabbitMQ and which topology to use. The URL holds no secret worth logging:
    `redacted_url` is what logs show."""

    url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="AMQP URL, amqp:// or amqps://; user and password may also come separately",
    )
    username: str | None = Field(default=None, description="overrides the user in the URL")
    password: SecretStr | None = Field(default=None, description="overrides the URL's password")
    ca_file: Path | None = Field(default=None, description="CA that verifies the broker (TLS)")
    cert_file: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(default=None, description="client key (mutual TLS)")
    heartbeat: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=15, description="AMQP heartbeat in seconds (0 disables it)"
    )
    blocked_timeout: Annotated[float, Field(gt=0, le=86400)] = Field(
        default=60.0,
        description="seconds a connection may stay blocked by a broker alarm before it is dropped",
    )
    connect_timeout: Annotated[float, Field(gt=0, le=600)] = Field(default=10.0)
    exchange: str = Field(default="logs", min_length=1, max_length=255)
    queue: str = Field(default="logs", min_length=1, max_length=255)
    routing_key: str = Field(default="logs", max_length=255)
    queue_type: QueueType = Field(default=QueueType.quorum)
    dead_letter_exchange: str = Field(default="logs.dead", min_length=1, max_length=255)
    dead_letter_queue: str = Field(default="logs.dead", min_length=1, max_length=255)
    delivery_limit: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=20, description="deliveries before a quorum queue dead-letters a message"
    )
    declare: bool = Field(
        default=True, description="declare the topology (switch off for locked-down brokers)"
    )
    reconnect_max_delay: Annotated[float, Field(gt=0, le=600)] = Field(default=10.0)

    @field_validator("url")
    @classmethod
    def _url_is_amqp(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError(
                f"must start with amqp:// or amqps:// (got {parts.scheme or 'none'}://)"
            )
        if not parts.hostname:
            raise ValueError("has no host")
        try:
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError as error:
            raise ValueError("has a port that is not a number") from error
        return value

    @model_validator(mode="after")
    def _tls_files_exist(self) -> AmqpSettings:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path} is not a readable file")
        return self

    def connection_url(self) -> str:
        """The URL to connect with: credentials merged in, heartbeat and TLS as query options."""
        parts = urlsplit(self.url.get_secret_value())
        user = self.username if self.username is not None else unquote(parts.username or "guest")
        password = (
            self.password.get_secret_value()
            if self.password is not None
            else unquote(parts.password or "guest")
        )
        host = parts.hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}"
        query = [q for q in parts.query.split("&") if q and not q.startswith("heartbeat=")]
        query.append(f"heartbeat={self.heartbeat}")
        if self.ca_file is not None:
            query.append(f"cafile={quote(str(self.ca_file))}")
        if self.cert_file is not None:
            query.append(f"certfile={quote(str(self.cert_file))}")
        if self.key_file is not None:
            query.append(f"keyfile={quote(str(self.key_file))}")
        return urlunsplit((parts.scheme, netloc, parts.path or "/", "&".join(query), ""))

    def redacted_url(self) -> str:
        """The URL as logs may show it: no password, ever."""
        parts = urlsplit(self.url.get_secret_value())
        user = self.username if self.username is not None else (parts.username or "guest")
        host = parts.hostname or "localhost"
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        return f"{parts.scheme}://{user}:***@{host}:{port}{parts.path or '/'}"


class HttpSettings(BaseModel):
    """Where /metrics, /livez and /readyz are served."""

    host: str = Field(default="0.0.0.0", description="address of the metrics and health server")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9100, description="port of the metrics and health server (0 = off)"
    )


class LogSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


def settings_config(prog: str) -> SettingsConfigDict:
    """One settings convention for both programs: LOGSHIP_* variables, nested with '__', and a
    kebab-case flag for every value."""
    return SettingsConfigDict(
        env_prefix="LOGSHIP_",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
        cli_prog_name=prog,
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
        cli_exit_on_error=False,
    )


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def fail(message: str) -> NoReturn:
    """Print one clear line on stderr and exit 2: a wrong setting is not a traceback."""
    print(f"logship: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_SETTINGS)


def load_settings(cls: type[SettingsT], argv: list[str] | None) -> SettingsT:
    """Build settings from the environment and the flags in argv, or fail with one line."""
    try:
        return cls(_cli_parse_args=argv if argv is not None else sys.argv[1:])
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        fail(f"invalid setting {where}: {message}{more}")
    except SettingsError as error:
        fail(str(error).splitlines()[0])
