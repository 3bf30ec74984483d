"""One small asyncio HTTP server for /metrics, /livez, /readyz and /status over a registry passed
in: no web framework for four paths."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from logship.cli import named

log = logging.getLogger("logship.telemetry")

MAX_REQUEST_BYTES = 8192


class TelemetryError(RuntimeError):
    """The server cannot listen where it was told (port taken, address not ours): a setting."""


class TelemetryServer:
    """/livez answers while the event loop runs (never depends on the broker, so an outage does not
    restart pods); /readyz answers 200 only while `is_ready()` is true, its body followed by one
    line per thing `detail()` says the program waits for (a person reading the probe sees why
    nothing moves); /status serves what `status()` returns as JSON (what only the live process
    knows, for `logship status`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        is_ready: Callable[[], bool],
        host: str,
        port: int,
        *,
        status: Callable[[], object] | None = None,
        detail: Callable[[], list[str]] | None = None,
    ) -> None:
        self._registry = registry
        self._is_ready = is_ready
        self._status = status
        self._detail = detail
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        """`host:port` while serving, else "off": the programs' started lines show it."""
        return f"{self._host}:{self.port}" if self._server is not None else "off"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self._host, self._port)
        except OSError as error:
            reason = str(error).rsplit(": ", 1)[-1]  # asyncio repeats the address before it
            raise TelemetryError(
                f"{named('http.port')}: cannot listen on {self._host}:{self._port} ({reason}); "
                "choose another port (or another --http.host), or 0 to switch the server off"
            ) from None
        # debug: at start nothing may come before a refusal's one-line error; the started line
        # of each program carries the address
        log.debug("telemetry_listening", extra={"host": self._host, "port": self.port})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), 2)

    def _respond(self, path: str) -> tuple[str, str, bytes]:
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/livez":
            return "200 OK", "text/plain", b"ok\n"
        if path == "/readyz":
            lines = self._detail() if self._detail is not None else []
            body = "".join(f"{line}\n" for line in lines).encode()
            if self._is_ready():
                return "200 OK", "text/plain", b"ready\n" + body
            return "503 Service Unavailable", "text/plain", b"not ready\n" + body
        if path == "/status" and self._status is not None:
            return "200 OK", "application/json", json.dumps(self._status()).encode() + b"\n"
        return "404 Not Found", "text/plain", b"not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            request_line = head[: min(len(head), MAX_REQUEST_BYTES)].split(b"\r\n", 1)[0]
            parts = request_line.decode("latin-1").split()
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            else:
                status, ctype, body = self._respond(parts[1].split("?", 1)[0])
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if parts and parts[0] != "HEAD":
                writer.write(body)
            await asyncio.wait_for(writer.drain(), 5)
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass  # a client that hung up or sent garbage gets nothing; the server carries on
        finally:
            writer.close()
