"""Written receipts through the real programs and broker: a receipt says exactly which source
bytes are where in the output (checked against the output's bytes); none comes while the
consumer is stopped, and it comes when the consumer returns; bytes_not_written follows; a
consumer whose receipts cannot be published still writes and acknowledges everything."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pika
import pytest

from logship.receipts import WrittenReceipt, decode, receipts_exchange
from tests.support.pipeline import Pipeline, free_port, wait_until
from tests.support.tcp_proxy import TcpProxy


def lines(n: int, tag: str) -> bytes:
    return b"".join(f"receipt {tag} {i:06d} {'r' * (i % 40)}\n".encode() for i in range(n))


def metric(port: int, name: str, labels: str = "") -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


class Observer:
    """A queue of the test's own, bound like the producer's: a copy of every receipt for it."""

    def __init__(self, url: str, exchange: str, producer_id: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange, "direct", durable=True)
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.queue, exchange, routing_key=producer_id)
        self.receipts: list[WrittenReceipt] = []

    def poll(self) -> list[WrittenReceipt]:
        while True:
            method, _, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return self.receipts
            self.receipts.append(decode(body))

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def producer_id() -> str:
    return f"test-producer-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def observer(pipe: Pipeline, producer_id: str) -> Iterator[Observer]:
    seen = Observer(pipe.topology.url, receipts_exchange(pipe.topology.prefix), producer_id)
    yield seen
    seen.close()
    connection = pika.BlockingConnection(pika.URLParameters(pipe.topology.url))
    connection.channel().queue_delete(f"{receipts_exchange(pipe.topology.prefix)}.{producer_id}")
    connection.close()


def covered(receipts: list[WrittenReceipt]) -> set[int]:
    """Every source offset the receipts' written ranges cover (small inputs only)."""
    return {i for r in receipts for w in r.ranges for i in range(w.start, w.end)}


def test_a_receipt_comes_when_the_consumer_has_written_and_says_exactly_where(
    pipe: Pipeline, observer: Observer, producer_id: str
) -> None:
    port = free_port()
    producer = pipe.producer("--id", producer_id, "--http.port", str(port)).ready()
    first = lines(300, "a")
    pipe.append(first)
    # sent and confirmed by the broker, and nobody has written it: no receipt, all of it not
    # written. Waiting on bytes_behind alone raced: it reads 0 already before the producer saw
    # the append (the file was empty when the producer opened it)
    label = f'file="{pipe.input}"'
    assert wait_until(
        lambda: (
            metric(port, "logship_producer_bytes_not_written", label) == len(first)
            and metric(port, "logship_producer_bytes_behind", label) == 0
        ),
        30,
    ), (metric(port, "logship_producer_bytes_not_written", label), producer.log()[-2000:])
    time.sleep(0.5)
    assert metric(port, "logship_producer_bytes_not_written", label) == len(first)
    assert observer.poll() == []

    consumer = pipe.consumer("--id", "consumer-a").ready()
    assert pipe.wait_for_output(first) == first
    second = lines(200, "b")
    pipe.append(second)  # a later batch, after the backlog
    data = first + second
    assert pipe.wait_for_output(data) == data
    assert wait_until(lambda: covered(observer.poll()) == set(range(len(data))), 30)
    output = pipe.output.read_bytes()
    for receipt in observer.receipts:
        assert (receipt.consumer, receipt.output) == ("consumer-a", str(pipe.output))
        assert receipt.duplicates == ()
        for w in receipt.ranges:
            assert output[w.output_start : w.output_end] == data[w.start : w.end]
    assert len({w.source for r in observer.receipts for w in r.ranges}) == 1
    # one receipt per group, not per message: never more receipts than batches written
    assert len(observer.receipts) <= 2 + data.count(b"\n")
    assert wait_until(lambda: metric(port, "logship_producer_bytes_not_written", label) == 0, 30)
    assert (metric(port, "logship_producer_receipts_total", 'outcome="received"') or 0) >= 1
    for program in (consumer, producer):
        assert program.terminate() == 0


def test_without_receipts_no_header_no_receipt_and_no_gauge(
    pipe: Pipeline, observer: Observer, producer_id: str
) -> None:
    port = free_port()
    pipe.consumer().ready()
    pipe.producer("--id", producer_id, "--no-receipts", "--http.port", str(port)).ready()
    data = lines(100, "off")
    pipe.append(data)
    assert pipe.wait_for_output(data) == data
    time.sleep(0.5)
    assert observer.poll() == []
    assert metric(port, "logship_producer_bytes_not_written", f'file="{pipe.input}"') is None


def test_a_consumer_whose_receipts_fail_still_writes_and_acknowledges_everything(
    pipe: Pipeline, producer_id: str
) -> None:
    port = free_port()
    consumer = pipe.consumer("--http.port", str(port)).ready()
    pipe.producer("--id", producer_id).ready()
    first = lines(100, "before")
    pipe.append(first)
    assert pipe.wait_for_output(first) == first
    assert wait_until(
        lambda: (metric(port, "logship_consumer_receipts_total", 'outcome="sent"') or 0) >= 1, 30
    )

    connection = pika.BlockingConnection(pika.URLParameters(pipe.topology.url))
    channel = connection.channel()
    channel.exchange_delete(receipts_exchange(pipe.topology.prefix))  # under the consumer
    data = first
    for n in range(5):
        more = lines(50, f"after-{n}")
        pipe.append(more)
        data += more
        assert pipe.wait_for_output(data) == data
    assert wait_until(
        lambda: (metric(port, "logship_consumer_receipts_total", 'outcome="failed"') or 0) >= 1, 30
    ), consumer.log()[-3000:]
    assert '"event": "receipt_publish_failed"' in consumer.log()
    assert consumer.terminate() == 0
    # everything acknowledged: nothing waits in the queue to be delivered again
    assert channel.queue_declare(pipe.topology.queue, passive=True).method.message_count == 0
    assert pipe.output.read_bytes() == data
    connection.close()


def test_the_producer_keeps_getting_receipts_after_its_connection_was_cut(
    pipe: Pipeline, producer_id: str
) -> None:
    """The producer's receipts queue, binding and consumer come back with its connection (cut
    by a proxy in front of the shared broker; the consumer connects straight)."""
    broker = pipe.topology.url.removeprefix("amqp://").split("@", 1)[1].split("/", 1)[0]
    host, broker_port = broker.rsplit(":", 1)
    port = free_port()
    not_written = f'file="{pipe.input}"'
    with TcpProxy(host, int(broker_port)) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        pipe.consumer().ready()
        producer = pipe.producer(
            "--id",
            producer_id,
            "--http.port",
            str(port),
            "--amqp.heartbeat",
            "2",
            env={"LOGSHIP_AMQP__URL": url},
        ).ready()
        data = lines(100, "before-cut")
        pipe.append(data)
        assert pipe.wait_for_output(data) == data
        assert wait_until(
            lambda: metric(port, "logship_producer_bytes_not_written", not_written) == 0, 30
        )
        proxy.cut()
        time.sleep(1)
        proxy.restore()
        producer.wait_for_event("amqp_reconnected", timeout=30)
        more = lines(100, "after-cut")
        pipe.append(more)
        assert pipe.wait_for_output(data + more) == data + more
        assert wait_until(
            lambda: metric(port, "logship_producer_bytes_not_written", not_written) == 0, 30
        )


def test_bytes_sent_again_after_a_producer_restart_are_reported_as_written_before(
    pipe: Pipeline, observer: Observer, producer_id: str
) -> None:
    """Killed before its checkpoint moved, the producer sends everything again under the same
    id: the consumer writes none of it twice, and its receipts name those bytes as written
    before, so bytes_not_written does not stay up."""
    pipe.consumer().ready()
    first = pipe.producer("--id", producer_id, "--checkpoint-interval", "60").ready()
    data = lines(300, "again")
    pipe.append(data)
    assert pipe.wait_for_output(data) == data
    assert wait_until(lambda: covered(observer.poll()) == set(range(len(data))), 30)
    first.kill()  # the checkpoint still says 0
    port = free_port()
    before = len(first.log())  # the two share a log file
    again = pipe.producer("--id", producer_id, "--http.port", str(port))
    again.wait_for_event("producer_watching", after=before)
    not_written = f'file="{pipe.input}"'
    assert wait_until(
        lambda: metric(port, "logship_producer_bytes_not_written", not_written) == 0, 30
    )
    repeated = {i for r in observer.poll() for d in r.duplicates for i in range(d.start, d.end)}
    assert repeated == set(range(len(data)))
    assert pipe.output.read_bytes() == data
