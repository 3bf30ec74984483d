"""The naive per-line pair, what a first shipper in Python looks like: the producer reads line by
line and publishes each line as one persistent message (pika's blocking channel, no publisher
confirms: waiting for a confirm per line measured ~900 lines/s on a quorum queue); the consumer
writes each message and acks it on its own. It never fsyncs before an ack. Both shortcuts flatter
it. `consume --newline` is also the small consumer behind syslog-ng,
whose messages are lines without their newline.

    python -m bench.naive produce --input F --url U --name N
    python -m bench.naive consume --output F --url U --name N [--expect-bytes B] [--newline]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

import pika

EOF_POLL_S = 0.01
PREFETCH = 100


class Stop(Exception):
    pass


def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise Stop


def channel_for(args: argparse.Namespace) -> tuple[pika.BlockingConnection, Any]:
    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.exchange_declare(args.name, "direct", durable=True)
    channel.queue_declare(args.name, durable=True, arguments={"x-queue-type": args.queue_type})
    channel.queue_bind(args.name, args.name, routing_key=args.name)
    return connection, channel


def produce(args: argparse.Namespace) -> None:
    connection, channel = channel_for(args)
    properties = pika.BasicProperties(delivery_mode=2)
    print("ready", flush=True)
    while not os.path.exists(args.input):
        time.sleep(EOF_POLL_S)
    partial = b""
    with open(args.input, "rb") as handle:
        try:
            while True:
                text = handle.readline()
                if not text.endswith(b"\n"):
                    partial += text
                    connection.sleep(EOF_POLL_S)
                    continue
                channel.basic_publish(args.name, args.name, partial + text, properties)
                partial = b""
        except Stop:
            pass
    connection.close()


def consume(args: argparse.Namespace) -> None:
    connection, channel = channel_for(args)
    channel.basic_qos(prefetch_count=PREFETCH)
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    suffix = b"\n" if args.newline else b""
    written = 0

    def on_message(ch: Any, method: Any, _properties: Any, body: bytes) -> None:
        nonlocal written
        data = body + suffix
        os.write(fd, data)
        ch.basic_ack(method.delivery_tag)
        written += len(data)
        if args.expect_bytes and written >= args.expect_bytes:
            os.fsync(fd)
            print(f"done {time.time_ns()}", flush=True)
            raise Stop

    channel.basic_consume(args.name, on_message)
    print("ready", flush=True)
    with contextlib.suppress(Stop):
        channel.start_consuming()
    os.fsync(fd)
    os.close(fd)
    connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.naive")
    parser.add_argument("role", choices=["produce", "consume"])
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--queue-type", default="quorum")
    parser.add_argument("--expect-bytes", type=int, default=0)
    parser.add_argument("--newline", action="store_true", help="append a newline to each body")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    (produce if args.role == "produce" else consume)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
