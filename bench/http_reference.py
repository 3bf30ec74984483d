"""The HTTP ingest reference: the least an HTTP front to RabbitMQ can do with the same guarantees
at the broker (a quorum queue, persistent messages, a publisher confirm before the answer): an
aiohttp handler that publishes each request body as one message through aio-pika and answers 200
once confirmed. No batching, ids, receipts, limits or metrics. Prints "ready" once listening.

    python -m bench.http_reference --url amqp://... --name QUEUE --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import aio_pika
from aiohttp import web


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
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.http_reference", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.url, args.name, args.port))


if __name__ == "__main__":
    main()
