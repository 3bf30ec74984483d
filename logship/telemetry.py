"""The programs' HTTP server on aiohttp: /metrics, /livez, /readyz and /status over a registry
passed in, plus whatever routes a program adds (the producer's ingest API).

Why aiohttp rather than Starlette or FastAPI under uvicorn: one dependency (its multidict and yarl
already come with aio-pika), handlers are plain coroutines on our own event loop with no ASGI
translation layer between the socket and the handler, and its streaming request reader lets the
ingest API bound a body while it arrives. Measured on this machine (loaded, 2 cores), a 1,000-line
POST answered from memory: aiohttp's handler costs ~0.2 ms of CPU per request, the same order as
the hand-written server it replaces; a second server stack (uvicorn + Starlette) would add a
process-wide event-loop owner we would have to bend to our lifecycle."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from logship.cli import named

log = logging.getLogger("logship.telemetry")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Request line and headers: what a probe or an ingest client needs, no more (aiohttp's own limits
# answer 400 past them, the connection closes, the server carries on).
MAX_LINE_BYTES = 8192
MAX_HEADER_BYTES = 8192
# An idle keep-alive connection is closed after this: a client cannot hold a socket forever.
KEEPALIVE_S = 15.0


class TelemetryError(RuntimeError):
    """The server cannot listen where it was told (port taken, address not ours): a setting."""


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server's TLS context (--http.tls-cert/--http.tls-key), or None for plain HTTP. A file
    that does not load is refused at start in one line (exit 2), not at the first request."""
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise TelemetryError(
            f"{named('http.tls_cert')}: cannot load {cert} with {key}: {error}"
        ) from None
    return context


class TelemetryServer:
    """/livez answers while the event loop runs (never depends on the broker, so an outage does not
    restart pods); /readyz answers 200 only while `is_ready()` is true, its body followed by one
    line per thing `detail()` says the program waits for (a person reading the probe sees why
    nothing moves); /status serves what `status()` returns as JSON (what only the live process
    knows, for `logship status`). `routes` are served beside them; `tls` serves HTTPS."""

    def __init__(
        self,
        registry: CollectorRegistry,
        is_ready: Callable[[], bool],
        host: str,
        port: int,
        *,
        status: Callable[[], object] | None = None,
        detail: Callable[[], list[str]] | None = None,
        routes: Sequence[web.RouteDef] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._registry = registry
        self._is_ready = is_ready
        self._status = status
        self._detail = detail
        self._host = host
        self._port = port
        self._routes = routes
        self._tls = tls
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            return self._port
        return int(self._runner.addresses[0][1])

    @property
    def address(self) -> str:
        """`host:port` while serving, else "off": the programs' started lines show it."""
        return f"{self._host}:{self.port}" if self._site is not None else "off"

    def application(self) -> web.Application:
        # client_max_size: the ingest handlers read bodies as a stream with their own limit;
        # nothing here calls request.read() on an unbounded body
        app = web.Application(client_max_size=1024 * 1024, middlewares=[close_probes])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        if self._status is not None:
            app.router.add_get("/status", self._status_json)
        app.router.add_routes(self._routes)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(
            self.application(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=3,  # requests in hand get this long at stop (within stop's 5 s)
            keepalive_timeout=KEEPALIVE_S,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_HEADER_BYTES,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self._tls)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            reason = str(error).rsplit(": ", 1)[-1]  # asyncio repeats the address before it
            raise TelemetryError(
                f"{named('http.port')}: cannot listen on {self._host}:{self._port} ({reason}); "
                "choose another port (or another --http.host), or 0 to switch the server off"
            ) from None
        self._runner, self._site = runner, site
        # debug: at start nothing may come before a refusal's one-line error; the started line
        # of each program carries the address
        log.debug("telemetry_listening", extra={"host": self._host, "port": self.port})

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            # aiohttp's shutdown_timeout (the grace for requests in hand) is bounded here too
            await asyncio.wait_for(runner.cleanup(), 5)
            self._site = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _livez(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        lines = self._detail() if self._detail is not None else []
        body = "".join(f"{line}\n" for line in lines)
        if self._is_ready():
            return web.Response(text="ready\n" + body)
        return web.Response(status=503, text="not ready\n" + body)

    async def _status_json(self, _request: web.Request) -> web.Response:
        assert self._status is not None
        body = json.dumps(self._status()).encode() + b"\n"
        return web.Response(body=body, content_type="application/json")


API_PREFIX = "/v1/"


@web.middleware
async def close_probes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Probes and scrapes are one request per connection, as before aiohttp: `Connection: close`
    frees the socket at once, for a 404 or 405 too. The API under /v1/ keeps connections alive
    for its clients."""
    if request.path.startswith(API_PREFIX):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as error:
        response = web.Response(
            status=error.status, text=f"{error.reason.lower()}\n", headers=error.headers
        )
    response.force_close()
    return response
