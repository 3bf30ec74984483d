"""The HTTP ingest reference: the least an HTTP front to RabbitMQ can do with the same guarantees
at the broker (a quorum queue, persistent messages, a publisher confirm before the answer): an
aiohttp handler that publishes each request body as one message through aio-pika and answers 200
once confirmed. No batching, ids, receipts, limits or metrics. Prints "ready" once listening.

`--null` answers once the body is read, with no broker at all: the floor the load generator, the
HTTP stack and the machine's scheduling leave (the benchmark's control row).

    python -m bench.http_reference --url amqp://... --name QUEUE --port 8080
    python -m bench.http_reference --null --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aio_pika
from aiohttp import web


async def serve_null(port: int) -> None:
    async def post(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok\n")

    await _listen(post, port)


async def _listen(post: Callable[[web.Request], Awaitable[web.Response]], port: int) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/lines", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def serve(url: str, name: str, port: int) -> None:
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    exchange = channel.default_exchange

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await exchange.publish(message, routing_key=name, timeout=30)  # returns on the confirm
        return web.Response(text="ok\n")

    try:
        await _listen(post, port)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.http_reference", description=__doc__)
    parser.add_argument("--url")
    parser.add_argument("--name")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--null", action="store_true", help="no broker: answer once read")
    args = parser.parse_args()
    if not args.null and not (args.url and args.name):
        parser.error("--url and --name are needed (or --null)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_null(args.port) if args.null else serve(args.url, args.name, args.port))


if __name__ == "__main__":
    main()
