"""The producer's receipts feed against the real broker, in process: it receives the receipts
routed to its id and only those, and keeps receiving across a cut connection, including the
receipts published while it was cut off (they wait in its queue)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from logship.amqp import connect
from logship.config import AmqpSettings
from logship.receipts import WrittenRange, WrittenReceipt, encode, receipts_exchange
from producer.written import WrittenFeed
from tests.support.pipeline import BROKER_URL
from tests.support.tcp_proxy import TcpProxy


def receipt(n: int) -> WrittenReceipt:
    return WrittenReceipt("consumer-1", "out.txt", (WrittenRange("src", n, n + 1, n, n + 1),))


@pytest.fixture
async def publisher() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain connection straight to the broker, standing in for the consumer."""
    connection = await aio_pika.connect(BROKER_URL)
    channel = await connection.channel()
    yield channel
    await connection.close()


async def publish(channel: aio_pika.abc.AbstractChannel, exchange: str, to: str, n: int) -> None:
    target = await channel.get_exchange(receipts_exchange(exchange))
    await target.publish(aio_pika.Message(encode(receipt(n))), routing_key=to)


class Seen(list[WrittenReceipt]):
    """Receipts a listener got, with an event for each new one."""

    def __init__(self) -> None:
        super().__init__()
        self.grew = asyncio.Event()

    def add(self, receipt: WrittenReceipt) -> None:
        self.append(receipt)
        self.grew.set()


async def wait_for(seen: Seen, count: int) -> None:
    async with asyncio.timeout(20):
        while len(seen) < count:
            seen.grew.clear()
            await seen.grew.wait()


async def test_the_feed_gets_its_own_receipts_and_survives_a_cut_connection(
    publisher: aio_pika.abc.AbstractChannel,
) -> None:
    exchange = f"t-{uuid.uuid4().hex[:10]}"
    me, other = f"host:{uuid.uuid4().hex[:6]}", "someone-else"
    broker = BROKER_URL.removeprefix("amqp://").split("@", 1)[1].split("/", 1)[0]
    host, port = broker.rsplit(":", 1)
    seen = Seen()
    also: list[WrittenReceipt] = []
    with TcpProxy(host, int(port)) as proxy:
        settings = AmqpSettings(url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/", heartbeat=2)  # type: ignore[arg-type]
        connection = await connect(settings, "test-written-feed")
        feed = WrittenFeed(exchange=exchange, producer_id=me, on_written=seen.add)
        feed.add_listener(also.append)
        try:
            await feed.start(connection)
            await publish(publisher, exchange, me, 0)
            await publish(publisher, exchange, other, 1)  # not ours: unroutable here
            await publish(publisher, exchange, me, 2)
            await wait_for(seen, 2)

            reconnected = asyncio.Event()
            connection.reconnect_callbacks.add(lambda *_: reconnected.set())
            proxy.cut()
            # while the producer is cut off (and perhaps before the broker noticed: then it is
            # sent into the dead connection, and comes again unacknowledged on the new one)
            await publish(publisher, exchange, me, 3)
            await asyncio.sleep(0.5)
            proxy.restore()
            await asyncio.wait_for(reconnected.wait(), 30)
            await publish(publisher, exchange, me, 4)  # after: the consumer was restored too
            await wait_for(seen, 4)
            await asyncio.sleep(0.3)  # nothing else comes
            # a receipt whose ack the cut lost may come twice; none is lost, none is another's
            assert sorted({r.ranges[0].start for r in seen}) == [0, 2, 3, 4]
            assert also == seen
        finally:
            await feed.stop()
            await connection.close()
            await publisher.queue_delete(feed.queue)
            await publisher.exchange_delete(receipts_exchange(exchange))


async def test_a_malformed_receipt_is_counted_and_the_next_one_still_arrives(
    publisher: aio_pika.abc.AbstractChannel,
) -> None:
    exchange = f"t-{uuid.uuid4().hex[:10]}"
    me = f"host:{uuid.uuid4().hex[:6]}"
    seen = Seen()
    malformed: list[None] = []

    def failing(_: WrittenReceipt) -> None:
        raise RuntimeError("a listener's bug")

    connection = await connect(AmqpSettings(url=BROKER_URL), "test-written-feed")  # type: ignore[arg-type]
    feed = WrittenFeed(
        exchange=exchange,
        producer_id=me,
        on_written=failing,
        on_malformed=lambda: malformed.append(None),
    )
    feed.add_listener(seen.add)
    try:
        await feed.start(connection)
        target = await publisher.get_exchange(receipts_exchange(exchange))
        await target.publish(aio_pika.Message(b"not a receipt"), routing_key=me)
        await publish(publisher, exchange, me, 7)
        await wait_for(seen, 1)
        assert malformed == [None]
        assert seen == [receipt(7)]
    finally:
        await feed.stop()
        await connection.close()
        await publisher.queue_delete(feed.queue)
        await publisher.exchange_delete(receipts_exchange(exchange))
