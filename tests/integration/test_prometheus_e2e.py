"""Monitoring end to end: a real Prometheus scrapes the real producer, consumer and broker, sees the
counts the pipeline really shipped, and every dashboard and alert query runs against it."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.fixtures import private_node
from tests.support.pipeline import Pipeline, Program, Topology, free_port, pipeline, wait_until
from tests.support.rabbit_node import RabbitNode

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
PROMQL = runpy.run_path(str(MONITORING / "promql.py"))
SCRAPE_INTERVAL_S = 1
# RabbitMQ refreshes queue statistics on its stats interval: allow several of them.
BROKER_STATS_TIMEOUT_S = 30
# Labelled metrics with no child until their first event: nothing was dead-lettered here.
MAY_BE_EMPTY = ("logship_consumer_messages_dead_lettered_total",)
ALL_TARGETS_UP = 'count(up{job=~"logship-producer|logship-consumer|rabbitmq"} == 1)'


def lines(count: int, tag: str) -> bytes:
    return b"".join(f"{tag} {i:06d} {'x' * (i % 50)}\n".encode() for i in range(count))


class Prometheus:
    """A throwaway Prometheus server (Debian's binary) and its HTTP query API."""

    def __init__(self, workdir: Path, scrape: dict[str, int], rule_file: Path) -> None:
        self.binary = _prometheus_binary()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
            },
            "rule_files": [str(rule_file)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in scrape.items()
            ],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.workdir = workdir
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; return `data`, or raise with Prometheus' error (a PromQL typo)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def value(self, expr: str) -> float | None:
        """The value of an expression that yields at most one series."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} returned {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, expected: float, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.value(expr)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr} = {got} after {timeout} s, expected {expected}")
            time.sleep(SCRAPE_INTERVAL_S / 2)

    def alert_state(self, name: str) -> str | None:
        states = [
            a["state"] for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name
        ]
        return states[0] if states else None


class PromQLError(AssertionError):
    pass


@dataclass
class Stack:
    pipe: Pipeline
    prometheus: Prometheus
    consumer_args: list[str]

    def start_consumer(self) -> Program:
        return self.pipe.consumer(*self.consumer_args)


def _localize(expr: str, topology: Topology) -> str:
    """The shipped queries name queue `logs`; the test's topology has its own names."""
    return (
        expr.replace('queue="logs.dead"', f'queue="{topology.dead_queue}"')
        .replace('queue="logs.archive"', f'queue="{topology.archive}"')
        .replace('queue="logs"', f'queue="{topology.queue}"')
        .replace("$__rate_interval", "1m")
    )


def _prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        message = "prometheus not found (Debian/Ubuntu: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    _prometheus_binary()  # no point booting a node for tests that would skip
    yield from private_node(tmp_path_factory, prometheus=True)


@pytest.fixture
def stack(tmp_path: Path, rabbit: RabbitNode) -> Iterator[Stack]:
    topology = Topology(url=rabbit.amqp_url, queue_type="classic")
    ports = {"logship-producer": free_port(), "logship-consumer": free_port()}
    rule_file = tmp_path / "logship-alerts.yaml"
    rule_file.write_text(
        _localize((MONITORING / "rules" / "logship-alerts.yaml").read_text(), topology)
    )
    scrape = {**ports, "rabbitmq": rabbit.prometheus_port}
    (tmp_path / "prometheus").mkdir()
    with (
        pipeline(tmp_path, topology) as pipe,
        Prometheus(tmp_path / "prometheus", scrape, rule_file) as prometheus,
    ):
        http = ["--http.host", "127.0.0.1", "--http.port"]
        consumer_args = [*http, str(ports["logship-consumer"])]
        stack = Stack(pipe, prometheus, consumer_args)
        stack.start_consumer()
        pipe.producer(*http, str(ports["logship-producer"]))
        yield stack


def test_prometheus_sees_what_the_pipeline_shipped(stack: Stack) -> None:
    pipe, prom = stack.pipe, stack.prometheus
    queue = pipe.topology.queue
    first = lines(500, "first")
    pipe.append(first)
    assert pipe.wait_for_output(first) == first

    prom.wait_for('logship_consumer_lines_written_total{job="logship-consumer"}', 500)
    prom.wait_for('logship_producer_lines_confirmed_total{job="logship-producer"}', 500)
    prom.wait_for(
        f'rabbitmq_queue_messages_ready{{queue="{queue}"}}', 0, timeout=BROKER_STATS_TIMEOUT_S
    )
    confirmed_before = prom.value('logship_producer_confirms_total{job="logship-producer"}')

    # With the consumer stopped, what the producer confirms waits in the queue, one message per
    # batch: the depth the autoscaler reads must count exactly those.
    consumer = next(p for p in pipe.programs if p.module == "consumer")
    assert consumer.terminate() == 0, consumer.log()[-3000:]
    second = b""
    for part in range(3):
        chunk = lines(10, f"second-{part}")
        pipe.append(chunk)
        second += chunk
        time.sleep(0.3)
    prom.wait_for('logship_producer_lines_confirmed_total{job="logship-producer"}', 530)
    confirmed_after = prom.value('logship_producer_confirms_total{job="logship-producer"}')
    assert confirmed_before is not None and confirmed_after is not None
    waiting = confirmed_after - confirmed_before
    assert waiting >= 1
    prom.wait_for(
        f'rabbitmq_queue_messages_ready{{queue="{queue}"}}', waiting, timeout=BROKER_STATS_TIMEOUT_S
    )
    assert wait_until(lambda: prom.alert_state("LogshipConsumerDown") == "pending", 15, 0.2), (
        "LogshipConsumerDown did not become pending with no consumer and messages waiting"
    )

    stack.start_consumer()
    assert pipe.wait_for_output(first + second) == first + second
    prom.wait_for(
        f'rabbitmq_queue_messages_ready{{queue="{queue}"}}', 0, timeout=BROKER_STATS_TIMEOUT_S
    )
    prom.wait_for(ALL_TARGETS_UP, 3)


def test_every_dashboard_and_alert_query_runs_and_finds_its_series(stack: Stack) -> None:
    pipe, prom = stack.pipe, stack.prometheus
    data = lines(200, "probe")
    pipe.append(data)
    assert pipe.wait_for_output(data) == data
    # Rates need two samples of every series in their window, deltas two broker refreshes.
    prom.wait_for(ALL_TARGETS_UP, 3)
    time.sleep(5 * SCRAPE_INTERVAL_S)

    failures = []
    dashboard = PROMQL["dashboard_queries"]()
    rules = PROMQL["rule_queries"]()
    assert len(dashboard) > 10 and len(rules) >= 7
    for query in [*dashboard, *rules]:
        expr = _localize(query.expr, pipe.topology)
        try:
            prom.query(expr)  # the whole query must parse and evaluate
            # An alert condition is normally empty; its operands must each match something.
            # Dashboard targets are their own operand when they hold no comparison.
            for operand in PROMQL["operands"](expr):
                if not any(name in operand for name in MAY_BE_EMPTY) and not prom.query(operand):
                    failures.append(f"{query.where}: no data for {operand}")
        except PromQLError as error:
            failures.append(f"{query.where}: {error}\n  {expr}")
    assert not failures, "\n".join(failures)


def test_rules_load_and_evaluate_without_error(stack: Stack) -> None:
    prom = stack.prometheus
    time.sleep(3 * SCRAPE_INTERVAL_S)
    groups = prom.api("rules")["groups"]
    evaluated = [rule for group in groups for rule in group["rules"]]
    expected = {q.where.removeprefix("rule ") for q in PROMQL["rule_queries"]()}
    assert {rule["name"] for rule in evaluated} == expected
    broken = [f"{r['name']}: {r.get('lastError')}" for r in evaluated if r["health"] != "ok"]
    assert not broken, broken
    firing = [r["name"] for r in evaluated if r["state"] == "firing"]
    assert not firing, f"alerts firing on a healthy pipeline: {firing}"
