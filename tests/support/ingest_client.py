"""A real HTTP client for the producer's ingest API (urllib: what any script would use), and a
producer started with the API on a known port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.support.pipeline import Pipeline, Program, free_port


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


def request(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Answer:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read())


@dataclass
class Ingest:
    """The API of one producer."""

    base: str
    token: str | None = None

    def post(
        self,
        body: bytes,
        query: str = "",
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Answer:
        sent = {"Content-Type": "application/octet-stream", **self._auth(), **(headers or {})}
        return request(
            f"{self.base}/v1/lines{query}", method="POST", body=body, headers=sent, timeout=timeout
        )

    def receipt(self, receipt_id: str, query: str = "", timeout: float = 30) -> Answer:
        return request(
            f"{self.base}/v1/receipts/{receipt_id}{query}", headers=self._auth(), timeout=timeout
        )

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def ingest_producer(pipe: Pipeline, *extra: str) -> tuple[Program, Ingest]:
    """The real producer with the ingest API on a free port, connected."""
    port = free_port()
    log = pipe.workdir / "producer.log"
    seen = len(log.read_text(errors="replace")) if log.exists() else 0  # a restart: same log
    producer = pipe.producer("--ingest.enabled", "--http.port", str(port), *extra)
    producer.wait_for_event("producer_watching", after=seen)
    return producer, Ingest(f"http://127.0.0.1:{port}")
