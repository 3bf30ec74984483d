"""Settings shared by both programs (AMQP, HTTP, logging) and the one place that turns bad ones into
a clear single-line error."""

from __future__ import annotations

import os
import re
import socket
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar
from urllib.parse import quote

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from logship.cli import (
    SettingProblem,
    cli_source,
    describe_cli_error,
    describe_validation_error,
)
from logship.nodes import BrokerUrl, Node, parse_broker_url

EXIT_BAD_SETTINGS = 2


class QueueType(StrEnum):
    quorum = "quorum"
    classic = "classic"


class AmqpSettings(BaseModel):
    """How to reach RabbitMQ and which topology to use. The URL holds no secret worth logging:
    `redacted_url` is what logs show."""

    url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description=(
            "broker URL, amqp:// or amqps:// (TLS); a cluster's nodes comma-separated, sharing "
            "credentials, vhost and options: amqp://user:pass@host1:5672,host2,host3:5673/vhost; "
            "user and password may come separately"
        ),
        json_schema_extra={"metavar": "URL"},
    )
    username: str | None = Field(
        default=None,
        description="user to log in as, instead of the URL's",
        json_schema_extra={"metavar": "USER", "unset": "the URL's"},
    )
    password: SecretStr | None = Field(
        default=None,
        description="password, instead of the URL's (keeps it out of the URL)",
        json_schema_extra={"metavar": "PASSWORD", "unset": "the URL's"},
    )
    ca_file: Path | None = Field(
        default=None,
        description="CA certificate (PEM) that verifies the broker",
        json_schema_extra={"unset": "the system's CAs"},
    )
    cert_file: Path | None = Field(
        default=None, description="client certificate (PEM) for mutual TLS"
    )
    key_file: Path | None = Field(default=None, description="client key (PEM) for mutual TLS")
    heartbeat: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=15,
        description="AMQP heartbeat in seconds (0 disables it)",
        json_schema_extra={"metavar": "SECONDS"},
    )
    blocked_timeout: Annotated[float, Field(gt=0, le=86400)] = Field(
        default=60.0,
        description="seconds a connection may stay blocked by a broker alarm before it is dropped",
    )
    connect_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0, description="seconds one connection attempt may take"
    )
    exchange: str = Field(
        default="logs",
        min_length=1,
        max_length=255,
        description="exchange batches are published to",
        json_schema_extra={"metavar": "NAME"},
    )
    queue: str = Field(
        default="logs",
        min_length=1,
        max_length=255,
        description="queue the consumer reads, bound to the exchange",
        json_schema_extra={"metavar": "NAME"},
    )
    routing_key: str = Field(
        default="logs",
        max_length=255,
        description="routing key of published batches and of the queue's binding",
        json_schema_extra={"metavar": "KEY"},
    )
    queue_type: QueueType = Field(
        default=QueueType.quorum,
        description="quorum (replicated, delivery limit) or classic",
    )
    dead_letter_exchange: str = Field(
        default="logs.dead",
        min_length=1,
        max_length=255,
        description="exchange poison messages are dead-lettered to",
        json_schema_extra={"metavar": "NAME"},
    )
    dead_letter_queue: str = Field(
        default="logs.dead",
        min_length=1,
        max_length=255,
        description="queue that keeps dead letters (see replay-dead)",
        json_schema_extra={"metavar": "NAME"},
    )
    delivery_limit: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=20, description="deliveries before a quorum queue dead-letters a message"
    )
    quorum_initial_group_size: Annotated[int, Field(ge=1, le=99)] | None = Field(
        default=None,
        description=(
            "replicas of a new quorum queue and its dead-letter queue (x-quorum-initial-group-"
            "size); on a cluster, an odd number keeps a majority through a node loss"
        ),
        json_schema_extra={"metavar": "N", "unset": "the broker's: every cluster node"},
    )
    declare: bool = Field(
        default=True, description="declare the topology (switch off for locked-down brokers)"
    )
    reconnect_max_delay: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0, description="longest pause between reconnection attempts (backoff cap)"
    )

    @field_validator("url")
    @classmethod
    def _url_is_amqp(cls, value: SecretStr) -> SecretStr:
        parse_broker_url(value.get_secret_value())  # raises ValueError with the reason
        return value

    @model_validator(mode="after")
    def _tls_files_exist(self) -> AmqpSettings:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise SettingProblem(name, f"{path} is not a readable file")
        return self

    def broker(self) -> BrokerUrl:
        """The URL's parts: scheme, credentials, vhost, options and every node."""
        return parse_broker_url(self.url.get_secret_value())

    @property
    def nodes(self) -> tuple[Node, ...]:
        """Every broker node the URL names, in the order given."""
        return self.broker().nodes

    def connection_url(self, node: Node | None = None) -> str:
        """The URL to connect to `node` (default: the first one) with: credentials merged in,
        heartbeat and TLS as query options."""
        broker = self.broker()
        user = self.username if self.username is not None else (broker.username or "guest")
        password = (
            self.password.get_secret_value()
            if self.password is not None
            else (broker.password if broker.password is not None else "guest")
        )
        query = [q for q in broker.query.split("&") if q and not q.startswith("heartbeat=")]
        query.append(f"heartbeat={self.heartbeat}")
        if self.ca_file is not None:
            query.append(f"cafile={quote(str(self.ca_file))}")
        if self.cert_file is not None:
            query.append(f"certfile={quote(str(self.cert_file))}")
        if self.key_file is not None:
            query.append(f"keyfile={quote(str(self.key_file))}")
        single = BrokerUrl(broker.scheme, None, None, broker.nodes, broker.path, "&".join(query))
        userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return single.node_url(node or broker.nodes[0], userinfo)

    def redacted_url(self) -> str:
        """The URL as logs may show it, every node: no password, ever."""
        broker = self.broker()
        user = self.username if self.username is not None else (broker.username or "guest")
        hosts = ",".join(str(n) for n in broker.nodes)
        return f"{broker.scheme}://{user}:***@{hosts}{broker.path or '/'}"


MAX_AGE = re.compile(r"^[1-9][0-9]{0,8}(Y|M|D|h|m|s)$")


class ArchiveSettings(BaseModel):
    """The archive: a stream queue bound beside the work queue that keeps every published batch
    for a retention period, so an output can be rebuilt (`logship-consumer rebuild`). Declared
    with the rest of the topology by both programs; the stream's arguments are fixed at its first
    declaration (change them by deleting it, or by a broker policy)."""

    enabled: bool = Field(
        default=True, description="keep every batch in a stream queue too (see rebuild)"
    )
    queue: str = Field(
        default="logs.archive",
        min_length=1,
        max_length=255,
        description="stream queue that keeps the archive, bound beside the work queue",
        json_schema_extra={"metavar": "NAME"},
    )
    max_age: str = Field(
        default="7D",
        description="how long batches are kept: a number and Y, M, D, h, m or s (x-max-age)",
        json_schema_extra={"metavar": "AGE"},
    )
    max_bytes: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="size the archive is kept under, oldest segments dropped first",
        json_schema_extra={"unset": "no size limit"},
    )
    segment_bytes: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="size of one stream segment: retention drops whole segments",
        json_schema_extra={"unset": "the broker's (500 MB)"},
    )

    @field_validator("max_age")
    @classmethod
    def _age(cls, value: str) -> str:
        if not MAX_AGE.match(value):
            raise ValueError(
                f"must be a number and a unit, Y, M, D, h, m or s, like 7D or 12h (got {value!r})"
            )
        return value

    def max_age_seconds(self) -> float:
        """`max_age` in seconds (a month is 30 days, a year 365, as near as alerts need)."""
        unit = {"s": 1, "m": 60, "h": 3600, "D": 86400, "M": 30 * 86400, "Y": 365 * 86400}
        return float(int(self.max_age[:-1]) * unit[self.max_age[-1]])

    def arguments(self) -> dict[str, Any]:
        """The stream's declare arguments."""
        arguments: dict[str, Any] = {"x-queue-type": "stream", "x-max-age": self.max_age}
        if self.max_bytes is not None:
            arguments["x-max-length-bytes"] = self.max_bytes
        if self.segment_bytes is not None:
            arguments["x-stream-max-segment-size-bytes"] = self.segment_bytes
        return arguments


class HttpSettings(BaseModel):
    """Where /metrics, /livez and /readyz are served."""

    host: str = Field(
        default="0.0.0.0",
        description="address of the metrics and health server",
        json_schema_extra={"metavar": "HOST"},
    )
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9100, description="port of the metrics and health server (0 = off)"
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) to serve HTTPS with; needs --http.tls-key",
        json_schema_extra={"metavar": "PATH", "unset": "plain HTTP"},
    )
    tls_key: Path | None = Field(
        default=None,
        description="PEM private key of --http.tls-cert",
        json_schema_extra={"metavar": "PATH", "unset": "plain HTTP"},
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise SettingProblem(missing, "HTTPS needs both --http.tls-cert and --http.tls-key")
        return self


class LogSettings(BaseModel):
    """Where logs go (stderr) and how they read. Names are taken in any case."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="least severe level logged, any case",
        json_schema_extra={"metavar": "{debug,info,warning,error}"},
    )
    format: Literal["json", "text"] = Field(
        default="json", description="json: one object a line; text: for people"
    )

    @field_validator("level", "format", mode="before")
    @classmethod
    def _any_case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip()
        return value.upper() if info.field_name == "level" else value.lower()


MAX_ID_LEN = 200  # an id is a routing key (255 bytes at most) and part of a queue name


def default_id() -> str:
    """A program's id when none is set: hostname:pid, unique on a host and in a Kubernetes pod
    (whose hostname is the pod's name)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def id_field(program: str, why: str) -> Any:
    """The `id` setting of a program (receipts name producers and consumers by it)."""
    return Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_LEN,
        description=f"this {program}'s id, {why}",
        json_schema_extra={"metavar": "NAME", "unset": "hostname:pid"},
    )


def probe_path(field: str, path: Path) -> None:
    """A path the system refuses to even look at (a name too long, a symlink loop, no search
    permission on a directory on the way): a SettingProblem, not a traceback. Absent is fine."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as error:
        raise SettingProblem(
            field, f"{path} cannot be used ({error.strerror or error}); give another path"
        ) from None


def check_file_path(field: str, path: Path) -> None:
    """A file the program creates or rewrites: its directory exists and is a directory, and the
    path itself is not a directory. Raises SettingProblem saying which part is wrong."""
    probe_path(field, path)
    if path.is_dir():
        raise SettingProblem(field, f"{path} is a directory; give the path of a file in it")
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise SettingProblem(field, f"{ancestor} is a file, not a directory (in {path})")
            break
    if not path.parent.is_dir():
        raise SettingProblem(
            field, f"directory {path.parent} does not exist; create it first (in {path})"
        )


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


def load_settings(
    cls: type[SettingsT], argv: list[str] | None, epilog: str = "", usage: str | None = None
) -> SettingsT:
    """Build settings from the environment and the flags in argv, or fail with one line that names
    the flag and the variable. `epilog` ends --help (an example, the commands)."""
    source = cli_source(cls, epilog, usage)
    try:
        return cls(_cli_settings_source=source(args=argv if argv is not None else sys.argv[1:]))
    except ValidationError as error:
        fail(describe_validation_error(cls, error))
    except SettingsError as error:
        fail(describe_cli_error(source.root_parser, str(error)))
