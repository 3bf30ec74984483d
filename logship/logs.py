"""Structured logging: a fixed event name plus fields, as JSON lines or readable text."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = repr(record.exc_info[1])
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger event key=value ...` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _RESERVED and not key.startswith("_")
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{stamp} {record.levelname:<7} {record.name} {record.getMessage()} {fields}"
        text = text.rstrip()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" error={record.exc_info[1]!r}"
        return text


def _not_connect_failure(record: logging.LogRecord) -> bool:
    """aiormq logs every failed connection attempt at ERROR; logship logs its own line for it
    (amqp_connect_failed, or the one-line fatal error), with the retry or the reason."""
    return not str(record.msg).startswith("error when creating transport")


def setup_logging(level: str, fmt: str) -> None:
    """Called once, from __main__: logs go to stderr, aio-pika's chatter is kept to warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aio_pika", "aiormq", "watchfiles"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("aiormq.connection").addFilter(_not_connect_failure)
