"""The raw chunk pipeline, the ceiling for Python through this broker: read up to 4 MiB, cut at the
last newline, publish the chunk as one persistent message with confirms (window 16); the consumer
(prefetch 32) appends every delivered body, fsyncs once per group, records how many bytes that
made durable in a side file when asked (--synced-file: what the latency benchmark follows, as it
follows logship's state record) and acks the group with one multiple-ack. No checkpoint, no state
file, no exactly-once bookkeeping, no metrics.

    python -m bench.raw produce --input F --url U --name N [--queue-type quorum]
    python -m bench.raw consume --output F --url U --name N [--expect-bytes B] [--synced-file S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

import aio_pika
import uvloop

CHUNK = 4 << 20
WINDOW = 16
PREFETCH = 32
EOF_POLL_S = 0.01


async def declare(
    channel: aio_pika.abc.AbstractChannel, args: argparse.Namespace
) -> tuple[aio_pika.abc.AbstractExchange, aio_pika.abc.AbstractQueue]:
    exchange = await channel.declare_exchange(args.name, aio_pika.ExchangeType.DIRECT, durable=True)
    queue = await channel.declare_queue(
        args.name, durable=True, arguments={"x-queue-type": args.queue_type}
    )
    await queue.bind(exchange, routing_key=args.name)
    return exchange, queue


def stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def produce(args: argparse.Namespace) -> None:
    stop = stop_event()
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel(publisher_confirms=True)
    exchange, _ = await declare(channel, args)
    assert isinstance(exchange, aio_pika.abc.AbstractExchange)
    print("ready", flush=True)
    fd = os.open(args.input, os.O_RDONLY)  # the benchmark creates it before starting us
    window = asyncio.Semaphore(WINDOW)
    tasks: set[asyncio.Task[object]] = set()
    offset = 0
    while not stop.is_set():
        await window.acquire()
        data = os.pread(fd, CHUNK, offset)
        cut = data.rfind(b"\n") + 1
        if not cut:
            window.release()
            await asyncio.sleep(EOF_POLL_S)
            continue
        offset += cut
        message = aio_pika.Message(
            data if cut == len(data) else data[:cut], delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        task = asyncio.create_task(exchange.publish(message, args.name))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(lambda _: window.release())
    await asyncio.gather(*tasks)
    await connection.close()


async def consume(args: argparse.Namespace) -> None:
    stop = stop_event()
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    _, queue = await declare(channel, args)
    assert isinstance(queue, aio_pika.abc.AbstractQueue)
    inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

    async def deliver(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        inbox.put_nowait(message)

    await queue.consume(deliver)
    print("ready", flush=True)
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    synced = os.open(args.synced_file, os.O_WRONLY | os.O_CREAT, 0o644) if args.synced_file else -1
    written = 0
    stopping = asyncio.ensure_future(stop.wait())
    while not stop.is_set():
        getter = asyncio.ensure_future(inbox.get())
        await asyncio.wait({getter, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            break
        group = [getter.result()]
        while not inbox.empty():
            group.append(inbox.get_nowait())
        bodies = [m.body for m in group]
        for body in bodies:  # one writev would do; a plain loop keeps partial writes simple
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
        written += sum(len(b) for b in bodies)
        if synced >= 0:  # where the benchmark sees what is durable, as logship's state record
            os.pwrite(synced, b"%020d" % written, 0)
        await group[-1].ack(multiple=True)
        if args.expect_bytes and written >= args.expect_bytes:
            print(f"done {time.time_ns()}", flush=True)
            break
    os.close(fd)
    if synced >= 0:
        os.close(synced)
    await connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.raw")
    parser.add_argument("role", choices=["produce", "consume"])
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--queue-type", default="quorum")
    parser.add_argument("--expect-bytes", type=int, default=0)
    parser.add_argument("--synced-file", default="",
                        help="after each fsync, the output bytes it made durable are written "
                        "here (20 digits, not fsynced)")  # fmt: skip
    args = parser.parse_args(argv)
    uvloop.run(produce(args) if args.role == "produce" else consume(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
