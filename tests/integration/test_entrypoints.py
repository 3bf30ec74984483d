"""The image's exact entrypoints, run with the exact environment the manifests give them, ship lines
end to end. The rendered k3d overlay is the source: each container's command, args and env (its
ConfigMaps, Secrets and downward-API fields resolved) are run as local processes, with only what
cannot be the same on one machine changed: /data moves into a temporary folder, the broker address
becomes the local one and the metrics port a free one.

Two brokers:
- the shared one on 127.0.0.1:5672, as guest, with the topology of definitions.json declared
  beforehand under per-test names (the programs keep LOGSHIP_AMQP__DECLARE=false);
- a private node that imported definitions.json itself: users, passwords, permissions and queue
  names exactly as in the cluster, so least privilege is what the programs run with. The drain
  Job's command runs there too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.fixtures import private_node
from tests.support.pipeline import Topology, free_port, wait_until
from tests.support.rabbit_node import RabbitNode
from tests.unit.test_k8s_consistency import (
    DEFINITIONS,
    container_env,
    deployed,
    logship_containers,
)
from tests.unit.test_k8s_manifests import REPO, missing

OVERLAY = "overlays/k3d"
DRAIN = "overlays/k3d-drain"
NAME_KEYS = (
    "LOGSHIP_AMQP__EXCHANGE",
    "LOGSHIP_AMQP__QUEUE",
    "LOGSHIP_AMQP__ROUTING_KEY",
    "LOGSHIP_AMQP__DEAD_LETTER_EXCHANGE",
    "LOGSHIP_AMQP__DEAD_LETTER_QUEUE",
)


@dataclass
class Entrypoint:
    """One container of the rendered manifests, as the kubelet would start it."""

    workload: str
    argv: list[str]
    env: dict[str, str]
    grace_s: float
    probes: dict[str, str]  # probe -> HTTP path

    @property
    def program(self) -> str:
        return self.argv[0]


def entrypoints(directory: str) -> dict[str, Entrypoint]:
    objects = deployed(directory)
    found = {}
    for workload, spec, container in logship_containers(objects):
        if directory == DRAIN and workload["kind"] != "Job":
            continue
        found[workload["metadata"]["name"]] = Entrypoint(
            workload=workload["metadata"]["name"],
            argv=[*container["command"], *container.get("args", [])],
            env=container_env(objects, container),
            grace_s=float(spec["terminationGracePeriodSeconds"]),
            probes={p: container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")
                    if p in container},
        )  # fmt: skip
    return found


def console_script(name: str) -> str:
    """The console script the image's PATH would find (pyproject's [project.scripts])."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.is_file() else shutil.which(name)
    if path is None:
        missing(f"{name} is not installed: pip install -e . provides it")
    assert path is not None
    return path


def localise(
    env: dict[str, str],
    root: Path,
    *,
    broker: str,
    credentials: tuple[str, str] | None = None,
    names: dict[str, str] | None = None,
) -> dict[str, str]:
    """The manifests' environment with only the machine-specific parts changed."""
    result = {}
    for key, value in env.items():
        if value.startswith("/data/"):
            value = f"{root}{value}"
            Path(value).parent.mkdir(parents=True, exist_ok=True)
        result[key] = value
    url = urlsplit(result["LOGSHIP_AMQP__URL"])
    result["LOGSHIP_AMQP__URL"] = urlunsplit(url._replace(netloc=broker))
    if credentials is not None:
        result["LOGSHIP_AMQP__USERNAME"], result["LOGSHIP_AMQP__PASSWORD"] = credentials
    for key in NAME_KEYS:
        if names is not None and key in result:
            result[key] = names[result[key]]
    result["LOGSHIP_HTTP__PORT"] = str(free_port())
    return result


class Process:
    """A program started as the kubelet starts it: argv as given, environment as given."""

    def __init__(self, entry: Entrypoint, env: dict[str, str], log: Path) -> None:
        self.entry = entry
        self.env = env
        self.log = log
        argv = [console_script(entry.program), *entry.argv[1:]]
        base = {"PATH": os.environ.get("PATH", ""), "HOME": str(log.parent), "LANG": "C.UTF-8"}
        # The working tree, not a stale installed copy.
        base["PYTHONPATH"] = str(REPO)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, env=base | env, stdout=out, stderr=out, cwd=log.parent
            )

    @property
    def port(self) -> int:
        return int(self.env["LOGSHIP_HTTP__PORT"])

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return 0

    def wait_ready(self, timeout: float = 60) -> None:
        """Ready as Kubernetes would judge it: the manifest's readiness probe answers 200."""
        path = self.entry.probes["readinessProbe"]
        if not wait_until(lambda: self.get(path) == 200 or self.proc.poll() is not None, timeout):
            raise AssertionError(f"{self.entry.workload} never ready:\n{self.tail()}")
        assert self.proc.poll() is None, f"{self.entry.workload} exited:\n{self.tail()}"
        assert self.get(self.entry.probes["livenessProbe"]) == 200

    def stop(self) -> int:
        """SIGTERM, then what the kubelet allows: terminationGracePeriodSeconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(self.entry.grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.entry.workload} outlived its grace period") from None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def sample_lines(start: int, count: int) -> bytes:
    return b"".join(
        f"{i:07d} entrypoint test \u00e9\u00e8 {'x' * (i % 97)}\n".encode()
        for i in range(start, start + count)
    )


def wait_for_bytes(
    path: Path, expected: bytes, processes: list[Process], timeout: float = 60
) -> None:
    def done() -> bool:
        for process in processes:
            assert process.proc.poll() is None, f"{process.entry.workload} died:\n{process.tail()}"
        return path.exists() and path.stat().st_size >= len(expected)

    wait_until(done, timeout)
    assert path.exists(), f"{path} never appeared"
    assert path.read_bytes() == expected


def declare_definitions_topology(url: str, names: dict[str, str]) -> None:
    """What the broker does with definitions.json at boot, under this test's names."""
    import pika

    defs = json.loads(DEFINITIONS.read_text())
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for exchange in defs["exchanges"]:
            channel.exchange_declare(
                names[exchange["name"]], exchange["type"], durable=exchange["durable"]
            )
        for queue in defs["queues"]:
            arguments = dict(queue["arguments"])
            if "x-dead-letter-exchange" in arguments:
                arguments["x-dead-letter-exchange"] = names[arguments["x-dead-letter-exchange"]]
            channel.queue_declare(
                names[queue["name"]], durable=queue["durable"], arguments=arguments
            )
        for binding in defs["bindings"]:
            routing_key = names.get(binding["routing_key"], binding["routing_key"])
            channel.queue_bind(names[binding["destination"]], names[binding["source"]], routing_key)
    finally:
        connection.close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)


def test_manifest_entrypoints_ship_lines_through_the_shared_broker(
    tmp_path: Path, topology: Topology, processes: list[Process]
) -> None:
    pytest.importorskip("pika")
    names = {
        "logs": topology.prefix,
        "logs.dead": f"{topology.prefix}.dead",
        "logs.archive": topology.archive,
        "logs.receipts": f"{topology.prefix}.receipts",
    }
    declare_definitions_topology(topology.url, names)
    entries = entrypoints(OVERLAY)
    producer, consumer = entries["logship-producer"], entries["logship-consumer"]
    broker = urlsplit(topology.url)
    credentials = (broker.username or "guest", broker.password or "guest")
    netloc = f"{broker.hostname}:{broker.port or 5672}"

    def local(entry: Entrypoint) -> dict[str, str]:
        return localise(entry.env, tmp_path, broker=netloc, credentials=credentials, names=names)

    consumer_env, producer_env = local(consumer), local(producer)
    assert consumer_env["LOGSHIP_AMQP__DECLARE"] == producer_env["LOGSHIP_AMQP__DECLARE"] == "false"
    source = Path(producer_env["LOGSHIP_INPUT"])
    output = Path(consumer_env["LOGSHIP_OUTPUT"])
    written = sample_lines(0, 3000)
    source.write_bytes(written)

    processes.append(Process(consumer, consumer_env, tmp_path / "consumer.log"))
    processes.append(Process(producer, producer_env, tmp_path / "producer.log"))
    for process in processes:
        process.wait_ready()
    more = sample_lines(3000, 2000)
    with source.open("ab") as handle:
        handle.write(more)
    wait_for_bytes(output, written + more, processes)

    for process in reversed(processes):
        assert process.stop() == 0, f"{process.entry.workload}:\n{process.tail()}"
    assert Path(producer_env["LOGSHIP_CHECKPOINT"]).exists()
    assert Path(f"{output}.state").exists(), "the consumer's state file sits beside its output"


@pytest.fixture(scope="module")
def cluster_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A private node holding exactly what the cluster's broker holds: definitions.json."""
    for node in private_node(tmp_path_factory, name="entrypoints", prometheus=True):
        node.ctl("import_definitions", str(DEFINITIONS))
        yield node


def _passive_depth(node: RabbitNode, user: str, password: str, queue: str) -> int:
    """What KEDA's RabbitMQ scaler does (protocol amqp): a passive declare."""
    import pika

    params = pika.ConnectionParameters(
        "127.0.0.1", node.amqp_port, "/", pika.PlainCredentials(user, password)
    )
    connection = pika.BlockingConnection(params)
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def test_least_privilege_users_ship_lines_and_the_drain_job_empties_the_backlog(
    tmp_path: Path, cluster_broker: RabbitNode, processes: list[Process]
) -> None:
    pika = pytest.importorskip("pika")
    node = cluster_broker
    netloc = f"127.0.0.1:{node.amqp_port}"
    entries = entrypoints(OVERLAY)
    producer, consumer = entries["logship-producer"], entries["logship-consumer"]
    (drain,) = entrypoints(DRAIN).values()
    producer_env = localise(producer.env, tmp_path, broker=netloc)
    consumer_env = localise(consumer.env, tmp_path, broker=netloc)
    source, output = Path(producer_env["LOGSHIP_INPUT"]), Path(consumer_env["LOGSHIP_OUTPUT"])

    first = sample_lines(0, 2000)
    source.write_bytes(first)
    consumer_process = Process(consumer, consumer_env, tmp_path / "consumer.log")
    processes.append(consumer_process)
    processes.append(Process(producer, producer_env, tmp_path / "producer.log"))
    for process in processes:
        process.wait_ready()
    wait_for_bytes(output, first, processes)

    # The consumer goes away; a backlog builds up in the queue.
    assert consumer_process.stop() == 0
    processes.remove(consumer_process)
    backlog = sample_lines(2000, 4000)
    with source.open("ab") as handle:
        handle.write(backlog)
    user, password = consumer_env["LOGSHIP_AMQP__USERNAME"], consumer_env["LOGSHIP_AMQP__PASSWORD"]
    queue = consumer_env["LOGSHIP_AMQP__QUEUE"]
    assert wait_until(lambda: _passive_depth(node, user, password, queue) > 0, 30)

    # The queue-depth series the HPA's adapter rule reads, labelled with the configured queue
    # (refreshed on the broker's stats interval).
    def depth_series() -> list[str]:
        url = f"http://127.0.0.1:{node.prometheus_port}/metrics/per-object"
        with urllib.request.urlopen(url, timeout=10) as response:
            lines = response.read().decode().splitlines()
        return [s for s in lines if s.startswith("rabbitmq_queue_messages_ready{")]

    found = wait_until(lambda: any(f'queue="{queue}"' in s for s in depth_series()), 30, 1)
    assert found, depth_series()

    # The producer's user may publish and nothing else.
    refused = pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1",
            node.amqp_port,
            "/",
            pika.PlainCredentials(
                producer_env["LOGSHIP_AMQP__USERNAME"], producer_env["LOGSHIP_AMQP__PASSWORD"]
            ),
        )
    )
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            refused.channel().basic_get(queue)
        assert closed.value.reply_code == 403
    finally:
        refused.close()

    # The drain Job: its command (--exit-when-idle) empties the backlog and ends by itself. Its
    # idle time shortened from the manifest's 30 s to 2 s: waiting 30 s proves nothing more.
    drain_env = localise(drain.env, tmp_path, broker=netloc)
    drained = Path(drain_env["LOGSHIP_OUTPUT"])
    assert drain.argv[1:2] == ["--exit-when-idle"] and float(drain.argv[2]) > 0
    idle_s = 2.0
    job = Process(
        replace(drain, argv=[*drain.argv[:2], str(idle_s), *drain.argv[3:]]),
        drain_env,
        tmp_path / "drain.log",
    )
    processes.append(job)
    code = job.proc.wait(idle_s + 90)
    assert code == 0, job.tail()
    assert drained.read_bytes() == backlog
    assert output.read_bytes() + drained.read_bytes() == source.read_bytes()
    assert _passive_depth(node, user, password, queue) == 0
