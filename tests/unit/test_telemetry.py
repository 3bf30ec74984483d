"""The metrics and health server: /livez never depends on the broker, /readyz does."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry, Counter

from logship.telemetry import TelemetryServer


async def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_endpoints() -> None:
    registry = CollectorRegistry()
    Counter("logship_test_things_total", "things", registry=registry).inc(3)
    ready = {"value": False}
    server = TelemetryServer(registry, lambda: ready["value"], "127.0.0.1", 0)
    await server.start()
    try:
        assert await get(server.port, "/livez") == (200, b"ok\n")
        assert (await get(server.port, "/readyz"))[0] == 503
        ready["value"] = True
        assert (await get(server.port, "/readyz"))[0] == 200
        status, body = await get(server.port, "/metrics")
        assert status == 200 and b"logship_test_things_total 3.0" in body
        assert (await get(server.port, "/nope"))[0] == 404
        assert (await get(server.port, "/metrics", "POST"))[0] == 405
        # a client that sends garbage and hangs up does not hurt the server
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x00\xff garbage")
        writer.close()
        assert (await get(server.port, "/livez"))[0] == 200
    finally:
        await server.stop()


async def test_status_serves_what_the_app_provides_as_json() -> None:
    offsets = {"read": {"source-a": 10}}
    server = TelemetryServer(
        CollectorRegistry(), lambda: True, "127.0.0.1", 0, status=lambda: offsets
    )
    plain = TelemetryServer(CollectorRegistry(), lambda: True, "127.0.0.1", 0)
    await server.start()
    await plain.start()
    try:
        assert await get(server.port, "/status") == (200, b'{"read": {"source-a": 10}}\n')
        offsets["read"]["source-a"] = 25  # asked again on every request
        assert json.loads((await get(server.port, "/status"))[1]) == {"read": {"source-a": 25}}
        assert (await get(plain.port, "/status"))[0] == 404
    finally:
        await server.stop()
        await plain.stop()


async def test_readyz_body_carries_the_detail_lines_in_both_states() -> None:
    ready = {"value": True}
    waiting = ["waiting for /logs/input.txt to appear"]
    server = TelemetryServer(
        CollectorRegistry(), lambda: ready["value"], "127.0.0.1", 0, detail=lambda: waiting
    )
    await server.start()
    try:
        assert await get(server.port, "/readyz") == (
            200,
            b"ready\nwaiting for /logs/input.txt to appear\n",
        )
        ready["value"] = False
        assert (await get(server.port, "/readyz"))[1].startswith(b"not ready\nwaiting for ")
        waiting.clear()  # asked again on every request
        assert await get(server.port, "/readyz") == (503, b"not ready\n")
    finally:
        await server.stop()
