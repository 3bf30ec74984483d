"""The HTTP ingest API: POST /v1/lines ships a body of lines as batches of an ingest source of its
own (the file path's wire format, batch cuts and confirms) and answers with a receipt once the
broker confirmed it; GET /v1/receipts/{id} says whether those bytes are written yet, and where.

The ingest source is new at every producer start (`http-<random>`), its offsets counting the bytes
POSTed since: a restarted producer's bytes are never mistaken by a consumer for ones it wrote."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
import zlib
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CollectorRegistry, Counter, Gauge

from logship.receipts import WrittenReceipt
from logship.stages import INGEST_STAGES, stage_histogram
from logship.wire import count_newlines
from producer.ingest_batcher import Batching, Confirms, IngestBatcher, Submit
from producer.ingest_settings import IngestSettings
from producer.openapi import spec_json
from producer.receipt_store import WRITTEN, Piece, Receipt, ReceiptStore

log = logging.getLogger("logship.producer.ingest")

ACCEPTED_TYPES = ("application/octet-stream", "text/plain")
ACCEPTED_ENCODINGS = ("", "identity", "gzip", "x-gzip")
MAX_KEY_LEN = 200
RETRY_AFTER_S = "1"


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "logship_producer_ingest_requests_total",
            "ingest API requests by answer code",
            ["code"],
            registry=registry,
        )
        self.bytes = Counter(
            "logship_producer_ingest_bytes_total",
            "bytes POSTed to the ingest API and confirmed by the broker",
            registry=registry,
        )
        self.lines = Counter(
            "logship_producer_ingest_lines_total",
            "lines POSTed to the ingest API and confirmed by the broker",
            registry=registry,
        )
        self.in_flight = Gauge(
            "logship_producer_ingest_in_flight_bytes",
            "bytes received by the ingest API and not yet confirmed (the confirm window)",
            registry=registry,
        )
        self.receipts = Gauge(
            "logship_producer_ingest_receipts",
            "receipts held in memory",
            registry=registry,
        )
        self.stage = stage_histogram("producer_ingest", INGEST_STAGES, registry)

    def observe(self, entered: float, read: float, confirms: Confirms) -> None:
        """A POST's way through the stages (logship/stages.py), once its batches settled."""
        self.stage["read_body"].observe(read - entered)
        self.stage["queued"].observe(max(0.0, confirms.submitted - read))
        self.stage["batch_confirm"].observe(max(0.0, confirms.settled - confirms.submitted))
        self.stage["answer"].observe(max(0.0, time.monotonic() - confirms.settled))


class Refusal(Exception):
    """An answer other than a receipt: its status, text and headers."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=self.text + "\n", headers=self.headers)


def busy(text: str, status: int = 503) -> Refusal:
    return Refusal(status, text, {"Retry-After": RETRY_AFTER_S})


class IngestApi:
    """The handlers, the ingest source's next offset and the confirm window. `attach` gives it
    the publisher once connected; until then (and while stopping) POSTs get 503."""

    def __init__(
        self,
        settings: IngestSettings,
        batching: Batching,
        registry: CollectorRegistry,
        *,
        stop: asyncio.Event,
        receipts: bool,
    ) -> None:
        self.settings = settings
        self.receipts = receipts  # written receipts come back (--receipts): wait=written works
        self.batching = batching
        self.metrics = IngestMetrics(registry)
        self.stop = stop
        self.source = f"http-{secrets.token_hex(8)}"
        self.offset = 0
        self.in_flight = 0  # bytes reserved: being read, or sent and not yet confirmed
        self.store = ReceiptStore(max_receipts=settings.receipts_max, ttl=settings.receipts_ttl)
        self._token = settings.bearer_token()
        self._batcher: IngestBatcher | None = None
        self._ready: Callable[[], bool] = lambda: False

    def attach(self, submit: Submit, ready: Callable[[], bool]) -> None:
        self._batcher = IngestBatcher(self.source, self.batching, submit, self._release)
        self._ready = ready

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/lines", self._counted(self.post_lines)),
            web.get("/v1/receipts/{id}", self._counted(self.get_receipt)),
            web.get("/v1/openapi.json", self.openapi),
        ]

    def on_written(self, receipt: WrittenReceipt) -> None:
        """A consumer's written receipt (producer/written.py's feed): the ranges of our ingest
        source move their receipts to `written`. Repeats change nothing."""
        who = (receipt.consumer, receipt.output)
        for r in receipt.ranges:
            if r.source == self.source:
                piece = Piece(*who, r.start, r.end, r.output_start, r.output_end)
                self.store.written(r.source, r.start, r.end, piece)
        for d in receipt.duplicates:
            if d.source == self.source:
                unplaced = Piece(*who, d.start, d.end, None, None)
                self.store.written(d.source, d.start, d.end, unplaced)

    def close(self) -> None:
        """Stopping: what is queued goes to the publisher now (its drain waits for the
        confirms); waiters answer now with what they have."""
        if self._batcher is not None:
            self._batcher.flush()
        self.store.close()

    def _counted(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                self._authorize(request)
                response = await handler(request)
            except Refusal as refusal:
                response = refusal.response()
            self.metrics.requests.labels(str(response.status)).inc()
            self.metrics.receipts.set(len(self.store))
            return response

        return handle

    def _authorize(self, request: web.Request) -> None:
        """A 401 says the same whatever was wrong (no header, another scheme, a wrong token)."""
        if self._token is None:
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self._token.encode()
        )
        if not ok:
            raise Refusal(401, "unauthorized", {"WWW-Authenticate": 'Bearer realm="logship"'})

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.Response(body=spec_json(), content_type="application/json")

    # --- POST /v1/lines -----------------------------------------------------------------------

    async def post_lines(self, request: web.Request) -> web.Response:
        entered = time.monotonic()
        self._check_headers(request)
        if self.stop.is_set() or self._batcher is None or not self._ready():
            raise busy("not connected to the broker")
        if self.in_flight >= self.settings.max_in_flight_bytes:
            raise busy("too many bytes await the broker's confirm", 429)
        wait, timeout = self._wait_param(request)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 0 < len(key) <= MAX_KEY_LEN:
            raise Refusal(400, f"Idempotency-Key must have 1 to {MAX_KEY_LEN} characters")
        body = await self._read_body(request)
        read = time.monotonic()
        if self.stop.is_set():  # stopped while the body came: the publisher takes no more
            self._release(len(body))
            raise busy("stopping")
        confirms = None
        try:
            receipt = self._known(key, body)
            if receipt is None:
                receipt, confirms = self._ship(body, key)
        finally:
            self._release(len(body))  # the batches hold their own reservation from here
        if not await self._settled(receipt):
            raise busy("the broker has not confirmed yet; retry with the same Idempotency-Key")
        if confirms is not None:
            self.metrics.observe(entered, read, confirms)
        status = 200
        if wait and not await self.store.wait_written(receipt, timeout):
            status = 202
        return web.json_response(receipt.as_json(), status=status, dumps=_dumps)

    def _check_headers(self, request: web.Request) -> None:
        if request.content_type not in ACCEPTED_TYPES:
            raise Refusal(415, "Content-Type must be application/octet-stream or text/plain")
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ACCEPTED_ENCODINGS:
            raise Refusal(415, "Content-Encoding may be gzip or none")
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes and not encoding:
            raise Refusal(413, f"the body is larger than {self.settings.max_body_bytes} bytes")

    def _wait_param(self, request: web.Request) -> tuple[bool, float]:
        wait = request.query.get("wait")
        if wait not in (None, WRITTEN):
            raise Refusal(400, "wait may only be 'written'")
        if wait == WRITTEN and not self.receipts:
            raise Refusal(400, "wait=written needs written receipts (the producer's --receipts)")
        raw = request.query.get("timeout", str(self.settings.max_wait))
        try:
            timeout = float(raw)
        except ValueError:
            raise Refusal(400, "timeout must be a number of seconds") from None
        if not timeout >= 0:
            raise Refusal(400, "timeout must be a number of seconds")
        return wait == WRITTEN, min(timeout, self.settings.max_wait)

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole body, within read_timeout, never more than max_body_bytes (after gzip), each
        chunk reserved in the confirm window as it arrives: many slow or large clients at once
        get 429, not the producer's memory."""
        limit = self.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.read_timeout):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    self._reserve(len(chunk))
                    chunks.append(chunk)
                    if size > limit:
                        raise Refusal(413, f"the body is larger than {limit} bytes")
                    if self.in_flight > self.settings.max_in_flight_bytes:
                        raise busy("too many bytes await the broker's confirm", 429)
        except TimeoutError:
            self._release(size)
            raise Refusal(408, "the body did not arrive within the read timeout") from None
        except (HttpProcessingError, RequestPayloadError):
            self._release(size)
            raise Refusal(400, "the body does not decode (Content-Encoding)") from None
        except BaseException:  # a refusal, the client gone away, a cancellation
            self._release(size)
            raise
        body = b"".join(chunks)
        if not body:
            self._release(size)
            raise Refusal(400, "the body holds no lines")
        if not body.endswith(b"\n"):
            self._release(size)
            raise Refusal(400, "the body must end with a newline (every line is terminated)")
        return body

    def _known(self, key: str | None, body: bytes) -> Receipt | None:
        """The receipt a retried POST already has: the same bytes are not sent again."""
        if key is None:
            return None
        receipt = self.store.by_key(key)
        if receipt is None:
            return None
        if receipt.fingerprint != _fingerprint(body):
            raise Refusal(422, "this Idempotency-Key came with another body")
        return receipt

    def _ship(self, body: bytes, key: str | None) -> tuple[Receipt, Confirms]:
        """Give the body its byte range and queue it for its batch, in one step with no await,
        so batches go out in offset order."""
        assert self._batcher is not None
        start = self.offset
        self.offset += len(body)
        lines = count_newlines(body)
        # only a keyed POST is ever compared with a retry: no crc32 over every body
        fingerprint = _fingerprint(body) if key is not None else (0, 0)
        receipt = self.store.new(
            self.source, start, self.offset, lines, key=key, fingerprint=fingerprint
        )
        self._reserve(len(body))  # released batch by batch as they settle

        def settle(confirmed: bool) -> None:
            self.settle(receipt, confirmed=confirmed)

        confirms = Confirms(settle)
        self._batcher.add(body, start, lines, confirms)
        return receipt, confirms

    def settle(self, receipt: Receipt, *, confirmed: bool) -> None:
        """Every batch of a POST settled: confirmed, or (abandoned at shutdown) never."""
        if confirmed:
            self.store.confirmed(receipt)
            self.metrics.bytes.inc(receipt.end - receipt.start)
            self.metrics.lines.inc(receipt.lines)
        else:  # never answered with an id
            self.store.failed(receipt)

    async def _settled(self, receipt: Receipt) -> bool:
        """Wait for the broker's confirm of every batch of the POST, at most confirm_timeout."""
        settled = receipt.settled
        if settled is None:  # settled before (a retry of a confirmed POST)
            return receipt.confirmed
        # asyncio.wait leaves the future alone at the timeout (a retry may wait for it again)
        await asyncio.wait({settled}, timeout=self.settings.confirm_timeout)
        return settled.done() and settled.result()

    def _reserve(self, size: int) -> None:
        self.in_flight += size
        self.metrics.in_flight.set(self.in_flight)

    def _release(self, size: int) -> None:
        self.in_flight -= size
        self.metrics.in_flight.set(self.in_flight)

    # --- GET /v1/receipts/{id} ----------------------------------------------------------------

    async def get_receipt(self, request: web.Request) -> web.Response:
        wait, timeout = self._wait_param(request)
        receipt = self.store.get(request.match_info["id"])
        if receipt is None:
            raise Refusal(404, "no such receipt (unknown, or aged out)")
        if wait and not self.stop.is_set():
            await self.store.wait_written(receipt, timeout)
        return web.json_response(receipt.as_json(), dumps=_dumps)


def _fingerprint(body: bytes) -> tuple[int, int]:
    return len(body), zlib.crc32(body)


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
