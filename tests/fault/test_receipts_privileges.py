"""Written receipts under least privilege on a private node, the topology declared beforehand
and the programs declaring nothing: with the permissions the manifests grant, receipts flow;
a consumer refused the receipts exchange still writes and acknowledges everything."""

from __future__ import annotations

import re
import time
import urllib.request

import pika

from tests.support.pipeline import Pipeline, declare_topology, free_port, wait_until
from tests.support.rabbit_node import RabbitNode

SHIPPER_PASSWORD = "sh1pper-R3ceipts"
WRITER_PASSWORD = "wr1ter-R3ceipts"
MUTE_PASSWORD = "mut3-R3ceipts"


def metric(port: int, name: str, labels: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(rf"^{re.escape(name + '{' + labels + '}')} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def lines(n: int, tag: str) -> bytes:
    return b"".join(f"privileges {tag} {i:06d}\n".encode() for i in range(n))


def test_receipts_with_least_privilege_and_a_consumer_refused_them(
    fault_pipe: Pipeline, node: RabbitNode
) -> None:
    pipe, prefix = fault_pipe, fault_pipe.topology.prefix
    declare_topology(pipe.topology, pipe.workdir, checkpoint="ck0")  # an administrator's job
    p = re.escape(prefix)
    # as k8s/base/rabbitmq/definitions.json grants logship-producer and logship-consumer
    node.add_user(
        "shipper",
        SHIPPER_PASSWORD,
        rf"^{p}\.receipts\..+$",
        rf"^{p}$|^{p}\.receipts\..+$",
        rf"^{p}\.receipts(\..+)?$",
    )
    node.add_user("writer", WRITER_PASSWORD, "", rf"^{p}\.receipts$", rf"^{p}$")
    node.add_user("mute", MUTE_PASSWORD, "", "", rf"^{p}$")  # may not publish receipts
    base = f"127.0.0.1:{node.amqp_port}/"
    locked = {"LOGSHIP_AMQP__DECLARE": "false"}
    producer_port, consumer_port, mute_port = free_port(), free_port(), free_port()
    not_written = f'file="{pipe.input}"'

    consumer = pipe.consumer(
        "--http.port",
        str(consumer_port),
        env={**locked, "LOGSHIP_AMQP__URL": f"amqp://writer:{WRITER_PASSWORD}@{base}"},
    ).ready()
    pipe.producer(
        "--id",
        "shipper-1",
        "--http.port",
        str(producer_port),
        env={**locked, "LOGSHIP_AMQP__URL": f"amqp://shipper:{SHIPPER_PASSWORD}@{base}"},
    ).ready()
    data = lines(2000, "granted")
    pipe.append(data)
    assert pipe.wait_for_output(data, timeout=30) == data
    assert wait_until(
        lambda: metric(producer_port, "logship_producer_bytes_not_written", not_written) == 0, 30
    ), pipe.programs[1].log()[-3000:]
    assert (metric(consumer_port, "logship_consumer_receipts_total", 'outcome="sent"') or 0) >= 1
    assert consumer.terminate() == 0

    mute = pipe.consumer(
        "--http.port",
        str(mute_port),
        env={**locked, "LOGSHIP_AMQP__URL": f"amqp://mute:{MUTE_PASSWORD}@{base}"},
    ).ready()
    for n in range(5):
        more = lines(500, f"refused-{n}")
        pipe.append(more)
        data += more
        assert pipe.wait_for_output(data, timeout=30) == data
    assert wait_until(
        lambda: (
            (metric(mute_port, "logship_consumer_receipts_total", 'outcome="failed"') or 0) >= 1
        ),
        30,
    ), mute.log()[-3000:]
    time.sleep(0.5)
    # written, but nobody said so: the producer counts it as not written
    assert (metric(producer_port, "logship_producer_bytes_not_written", not_written) or 0) > 0
    assert mute.terminate() == 0
    assert pipe.output.read_bytes() == data
    connection = pika.BlockingConnection(pika.URLParameters(pipe.topology.url))
    queue = connection.channel().queue_declare(pipe.topology.queue, passive=True)
    assert queue.method.message_count == 0  # every batch acknowledged
    connection.close()
