"""TLS with certificate verification, least-privilege users, and no credential in any log line,
metric or error message."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from tests.support.fixtures import private_node
from tests.support.pipeline import REPO, Pipeline, Topology, declare_topology, pipeline
from tests.support.rabbit_node import RabbitNode

PRODUCER_PASSWORD = "pr0ducer-S3cret-x1"
CONSUMER_PASSWORD = "c0nsumer-S3cret-y2"


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    yield from private_node(tmp_path_factory, name="tls", tls=True)


@pytest.fixture
def tls_pipe(tmp_path: Path, tls_node: RabbitNode) -> Iterator[Pipeline]:
    with pipeline(tmp_path, Topology(url=tls_node.amqp_url)) as p:
        yield p


def test_tls_with_verification_ships_lines(tls_pipe: Pipeline, tls_node: RabbitNode) -> None:
    env = {"LOGSHIP_AMQP__URL": tls_node.amqps_url, "LOGSHIP_AMQP__CA_FILE": str(tls_node.ca_file)}
    tls_pipe.consumer(env=env).ready()
    tls_pipe.producer(env=env).ready()
    data = b"over tls\n" * 1000
    tls_pipe.append(data)
    assert tls_pipe.wait_for_output(data, timeout=30) == data


def test_tls_with_wrong_ca_is_refused_clearly(tmp_path: Path, tls_node: RabbitNode) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumer",
            "--output",
            str(tmp_path / "out.txt"),
            "--http.port",
            "0",
            "--amqp.url",
            tls_node.amqps_url,
            "--amqp.ca-file",
            str(tls_node.wrong_ca_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("logship: error: TLS certificate of the broker not trusted")


def test_least_privilege_users_and_no_credential_anywhere(
    tls_pipe: Pipeline, tls_node: RabbitNode
) -> None:
    pipe, topo = tls_pipe, tls_pipe.topology
    # the topology is declared beforehand by an administrator (here: guest, with declare on)
    declare_topology(topo, pipe.workdir, checkpoint="ck0")
    exchange, queue = topo.prefix, topo.queue
    tls_node.add_user("shipper", PRODUCER_PASSWORD, "", f"^{exchange}$", "")
    tls_node.add_user("writer", CONSUMER_PASSWORD, "", "", f"^{queue}$")
    base = f"127.0.0.1:{tls_node.amqp_port}/"
    producer_env = {
        "LOGSHIP_AMQP__URL": f"amqp://shipper:{PRODUCER_PASSWORD}@{base}",
        "LOGSHIP_AMQP__DECLARE": "false",
    }
    consumer_env = {
        "LOGSHIP_AMQP__URL": f"amqp://writer@{base}",
        "LOGSHIP_AMQP__PASSWORD": CONSUMER_PASSWORD,
        "LOGSHIP_AMQP__DECLARE": "false",
        "LOGSHIP_QUEUE_POLL_INTERVAL": "0.5",
    }
    consumer = pipe.consumer("--http.port", "19377", env=consumer_env).ready()
    pipe.producer(env=producer_env).ready()
    data = b"least privilege\n" * 5000
    pipe.append(data)
    assert pipe.wait_for_output(data, timeout=30) == data

    # the consumer's user may not publish, the producer's may not read
    consumer_params = pika.URLParameters(f"amqp://writer:{CONSUMER_PASSWORD}@{base}")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="ACCESS_REFUSED"):
        connection = pika.BlockingConnection(consumer_params)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(exchange, topo.prefix, b"forged")
        finally:
            connection.close()
    producer_params = pika.URLParameters(f"amqp://shipper:{PRODUCER_PASSWORD}@{base}")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="ACCESS_REFUSED"):
        connection = pika.BlockingConnection(producer_params)
        try:
            connection.channel().basic_get(queue)
        finally:
            connection.close()

    # no credential in any log line, metric label or error message
    metrics = urllib.request.urlopen("http://127.0.0.1:19377/metrics", timeout=5).read().decode()
    time.sleep(0.2)
    pipe.stop_all()
    logs = "".join(program.log() for program in pipe.programs) + metrics
    assert consumer.log(), "no logs captured"
    for secret in (PRODUCER_PASSWORD, CONSUMER_PASSWORD):
        assert secret not in logs
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumer",
            "--output",
            str(pipe.workdir / "x.txt"),
            "--http.port",
            "0",
            "--amqp.url",
            f"amqp://writer:{PRODUCER_PASSWORD}@{base}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO)},
    )
    assert bad.returncode == 2 and "refused the credentials" in bad.stderr
    assert PRODUCER_PASSWORD not in bad.stderr + bad.stdout
