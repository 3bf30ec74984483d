"""Several broker addresses through the real programs: given a list whose first nodes are dead,
producer and consumer find the live one and the output is byte for byte the input."""

from __future__ import annotations

import asyncio
import urllib.request

from logship.amqp import ClusterConnection, connect
from logship.config import AmqpSettings
from tests.support.pipeline import BROKER_URL, Pipeline, free_port
from tests.support.tcp_proxy import TcpProxy


def lines(n: int) -> bytes:
    return b"".join(f"node list {i:07d} {'y' * (i % 50)}\n".encode() for i in range(n))


def test_dead_nodes_in_the_list_are_skipped_and_nothing_is_lost(pipe: Pipeline) -> None:
    live = pipe.topology.url.removeprefix("amqp://").split("@", 1)[1].split("/", 1)[0]
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    url = f"amqp://guest:guest@{','.join([*dead, live])}/"
    env = {"LOGSHIP_AMQP__URL": url}
    data = lines(20_000)
    pipe.append(data)
    consumer = pipe.consumer(env=env)
    producer = pipe.producer(env=env)
    assert pipe.wait_for_output(data) == data
    for program in (consumer, producer):
        # the started line names the node connected to; every dead one tried was named refused
        program.ready()
        started = next(
            line
            for line in program.log().splitlines()
            if '"node"' in line and ("producer_started" in line or "consumer_consuming" in line)
        )
        assert f'"node": "{live}"' in started
        for line in program.log().splitlines():
            if "amqp_connect_failed" in line:
                assert any(f'"node": "{d}"' in line for d in dead)


def test_the_node_info_metric_names_the_node_connected_to(pipe: Pipeline) -> None:
    live = pipe.topology.url.removeprefix("amqp://").split("@", 1)[1].split("/", 1)[0]
    dead = f"127.0.0.1:{free_port()}"
    port = free_port()
    consumer = pipe.consumer(
        "--http.port", str(port), env={"LOGSHIP_AMQP__URL": f"amqp://guest:guest@{dead},{live}/"}
    )
    consumer.ready()

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f'logship_consumer_broker_node_info{{node="{live}"}} 1.0' in text
    assert f'logship_consumer_broker_node_info{{node="{dead}"}} 0.0' in text


async def test_a_lost_node_is_left_for_the_next_one_in_the_list() -> None:
    """In process, through two proxies to the one broker: the robust connection's own reconnect
    (not only the first connect) goes to the next node, and says so; a node that dropped us is
    skipped while the other answers. Fails if aio-pika stops reading `url` per attempt."""

    broker = BROKER_URL.removeprefix("amqp://").split("@", 1)[1].split("/", 1)[0]
    host, port = broker.rsplit(":", 1)
    with TcpProxy(host, int(port)) as first, TcpProxy(host, int(port)) as second:
        proxies = {f"127.0.0.1:{p.port}": p for p in (first, second)}
        settings = AmqpSettings(url=f"amqp://guest:guest@{','.join(proxies)}/", heartbeat=2)  # type: ignore[arg-type]
        connection = await connect(settings, "test-nodes")
        try:
            assert isinstance(connection, ClusterConnection)
            reconnected = asyncio.Event()
            connection.reconnect_callbacks.add(lambda *_: reconnected.set())
            before = str(connection.node)
            proxies[before].cut()  # reset, and refuse every new connection
            await asyncio.wait_for(reconnected.wait(), 20)
            assert str(connection.node) != before
            proxies[before].restore()
            channel = await connection.channel()  # the connection works through the other one
            await channel.close()
        finally:
            await connection.close()
