"""Proof that tests/support (private RabbitMQ node, TCP proxy) does what fault tests rely on."""

from __future__ import annotations

import re
import socket
import ssl
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aio_pika
import pika
import pika.exceptions
import pytest

from tests.support.fixtures import private_node
from tests.support.rabbit_node import RabbitNode, RabbitNodeError
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    # One node for the whole module: booting one costs ~6 s.
    yield from private_node(tmp_path_factory, tls=True, prometheus=True)


def _params(
    port: int, *, user: str = "guest", password: str = "guest", heartbeat: int | None = None
) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials(user, password),
        connection_attempts=1,
        socket_timeout=3,
        blocked_connection_timeout=None,
        heartbeat=heartbeat,
    )


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _ready_count(node: RabbitNode, queue: str) -> int:
    with pika.BlockingConnection(_params(node.amqp_port)) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)


def test_options_that_were_not_asked_for_raise(tmp_path: Path) -> None:
    plain = RabbitNode(tmp_path)  # never started: construction only writes files
    with pytest.raises(RabbitNodeError):
        _ = plain.tls_port
    with pytest.raises(RabbitNodeError):
        _ = plain.prometheus_port
    assert plain.amqp_url == f"amqp://guest:guest@127.0.0.1:{plain.amqp_port}/"


def test_memory_alarm_blocks_publishers_until_cleared(node: RabbitNode) -> None:
    queue = _unique("alarm")
    events: list[str] = []
    with pika.BlockingConnection(_params(node.amqp_port)) as conn:
        conn.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
        conn.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
        channel = conn.channel()
        channel.queue_declare(queue, durable=True)
        node.set_memory_alarm(True)
        try:
            channel.basic_publish("", queue, b"during the alarm")
            deadline = time.monotonic() + 15
            while "blocked" not in events and time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.2)
            assert events == ["blocked"]
            assert _ready_count(node, queue) == 0  # held back while blocked
        finally:
            node.set_memory_alarm(False)
        deadline = time.monotonic() + 15
        while "unblocked" not in events and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)
        assert events == ["blocked", "unblocked"]
        _wait_for(lambda: _ready_count(node, queue) == 1, 10, "the held-back message")


async def test_tls_verifies_against_the_ca_only(node: RabbitNode) -> None:
    connection = await aio_pika.connect(f"{node.amqps_url}?cafile={node.ca_file}", timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(_unique("tls"), exclusive=True)

    wrong = ssl.create_default_context(cafile=str(node.wrong_ca_file))
    with (
        socket.create_connection(("localhost", node.tls_port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        wrong.wrap_socket(raw, server_hostname="localhost")


def test_publish_only_and_consume_only_users(node: RabbitNode) -> None:
    exchange, queue = _unique("logs"), _unique("logs")
    with pika.BlockingConnection(_params(node.amqp_port)) as admin:
        channel = admin.channel()
        channel.exchange_declare(exchange, "direct", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key="line")
    producer, consumer = _unique("producer"), _unique("consumer")
    node.add_user(producer, "p-secret", "", f"^{exchange}$", "")
    node.add_user(consumer, "c-secret", "", "", f"^{queue}$")

    with pika.BlockingConnection(_params(node.amqp_port, user=producer, password="p-secret")) as c:
        channel = c.channel()
        channel.confirm_delivery()
        channel.basic_publish(exchange, "line", b"allowed", mandatory=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            c.channel().basic_get(queue)
        assert refused.value.reply_code == 403
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            c.channel().queue_declare(_unique("rogue"))
        assert refused.value.reply_code == 403

    with pika.BlockingConnection(_params(node.amqp_port, user=consumer, password="c-secret")) as c:
        channel = c.channel()
        method, _, body = channel.basic_get(queue)
        assert body == b"allowed"
        channel.basic_ack(method.delivery_tag)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            publisher = c.channel()
            publisher.confirm_delivery()
            publisher.basic_publish(exchange, "line", b"not allowed")
        assert refused.value.reply_code == 403


def test_prometheus_serves_per_queue_depth(node: RabbitNode) -> None:
    queue = _unique("depth")
    with pika.BlockingConnection(_params(node.amqp_port)) as conn:
        channel = conn.channel()
        channel.queue_declare(queue, durable=True)
        channel.confirm_delivery()
        for n in range(3):
            channel.basic_publish("", queue, b"%d" % n)
    pattern = re.compile(
        rf'^rabbitmq_queue_messages_ready\{{[^}}]*queue="{queue}"[^}}]*\}} (\S+)$', re.M
    )

    def depth_is_three() -> bool:
        url = f"http://127.0.0.1:{node.prometheus_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            match = pattern.search(response.read().decode())
        return match is not None and float(match.group(1)) == 3

    _wait_for(depth_is_three, 30, f"rabbitmq_queue_messages_ready for {queue} to be 3")


def test_proxy_cut_breaks_connections_and_restore_lets_new_ones_in(node: RabbitNode) -> None:
    with TcpProxy("127.0.0.1", node.amqp_port) as proxy:
        conn = pika.BlockingConnection(_params(proxy.port))
        conn.channel()
        assert proxy.connections == 1

        proxy.cut()
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            conn.process_data_events(time_limit=1)
            conn.channel()
        # reset on accept: pika says AMQPConnectionError, or ValueError when the reset lands
        # before its own getpeername() check of the fresh socket (seen in CI)
        with pytest.raises((pika.exceptions.AMQPConnectionError, ValueError)):
            pika.BlockingConnection(_params(proxy.port))

        proxy.restore()
        with pika.BlockingConnection(_params(proxy.port)) as again:
            again.channel().queue_declare(_unique("proxy"), exclusive=True)


def test_proxy_blackhole_lets_heartbeats_lapse(node: RabbitNode) -> None:
    with TcpProxy("127.0.0.1", node.amqp_port) as proxy:
        conn = pika.BlockingConnection(_params(proxy.port, heartbeat=1))
        conn.channel()
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            while time.monotonic() - started < 20:
                conn.process_data_events(time_limit=0.5)
        assert time.monotonic() - started < 20
        assert proxy.connections == 1  # the proxy itself kept the connection open

        proxy.restore()
        with pika.BlockingConnection(_params(proxy.port)) as again:
            again.channel()


def test_durable_messages_survive_restart_and_kill(node: RabbitNode) -> None:
    queue = _unique("durable")
    with pika.BlockingConnection(_params(node.amqp_port)) as conn:
        channel = conn.channel()
        channel.queue_declare(queue, durable=True)
        channel.confirm_delivery()
        persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        channel.basic_publish("", queue, b"survivor", properties=persistent)
    ports = (node.amqp_port, node.tls_port, node.prometheus_port)

    node.restart()
    assert (node.amqp_port, node.tls_port, node.prometheus_port) == ports
    assert _ready_count(node, queue) == 1

    node.kill()
    assert not node.is_running()
    node.start()
    with pika.BlockingConnection(_params(node.amqp_port)) as conn:
        _, _, body = conn.channel().basic_get(queue, auto_ack=True)
    assert body == b"survivor"


def test_start_retries_on_fresh_ports_after_a_port_clash(tmp_path: Path) -> None:
    node = RabbitNode(tmp_path)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", node.dist_port))  # taken between picking and booting
    squatter.listen()
    clashing = node.amqp_port
    try:
        with node:
            assert node.amqp_port != clashing
            assert node.ctl("list_queues", "name") is not None
    finally:
        squatter.close()
    assert not node.is_running()
