"""The HA overlay (k8s/overlays/k3d-ha): three RabbitMQ nodes run by the Cluster Operator, and the
Messaging Topology Operator's resources declaring exactly what the code and definitions.json
declare; the programs get every node's address; a disruption budget keeps a majority."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from logship.amqp import queue_arguments
from logship.nodes import parse_broker_url
from logship.receipts import receipts_exchange
from tests.unit.test_k8s_consistency import (
    _data,
    container_env,
    definitions,
    load_program_settings,
    logship_containers,
)
from tests.unit.test_k8s_manifests import Manifest, find, render, validate

HA = "overlays/k3d-ha"


def of_kind(objects: list[Manifest], kind: str) -> dict[str, dict[str, Any]]:
    """spec by spec.name (or metadata.name) of every object of one kind."""
    return {
        o["spec"].get("name", o["metadata"]["name"]): o["spec"]
        for o in objects
        if o["kind"] == kind
    }


def test_the_broker_is_three_operator_run_nodes_and_the_one_node_broker_is_gone() -> None:
    objects = render(HA)
    cluster = find(objects, "RabbitmqCluster", "rabbitmq")["spec"]
    assert cluster["replicas"] == 3
    assert "rabbitmq_prometheus" in cluster["rabbitmq"]["additionalPlugins"]
    assert "cluster_partition_handling = pause_minority" in cluster["rabbitmq"]["additionalConfig"]
    anti = cluster["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    gone = {("StatefulSet", "rabbitmq"), ("Service", "rabbitmq"), ("Service", "rabbitmq-headless")}
    assert not gone & names, "the operator creates these itself"
    assert not any(n.startswith(("rabbitmq-config", "rabbitmq-definitions")) for _, n in names)
    budget = find(objects, "PodDisruptionBudget", "rabbitmq")["spec"]
    assert budget["maxUnavailable"] == 1 < cluster["replicas"] // 2 + 1
    assert budget["selector"]["matchLabels"] == {"app.kubernetes.io/name": "rabbitmq"}


def test_the_programs_get_every_node_of_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(HA)
    replicas = find(objects, "RabbitmqCluster", "rabbitmq")["spec"]["replicas"]
    wanted = {f"rabbitmq-server-{i}.rabbitmq-nodes.logship.svc" for i in range(replicas)}
    for _, _, container in logship_containers(objects):
        env = container_env(objects, container)
        program = container["command"][0]
        settings = load_program_settings(program, env, [], tmp_path, monkeypatch)
        amqp = settings.amqp
        assert {n.host for n in amqp.nodes} == wanted and not amqp.declare
        if program == "logship-producer":
            assert settings.compression.value == "zstd"
    url = _data(objects, "ConfigMap", "logship-amqp")["LOGSHIP_AMQP__URL"]
    assert {n.port for n in parse_broker_url(url).nodes} == {5672}


def test_topology_resources_declare_what_the_code_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(HA)
    consumer = next(c for _, _, c in logship_containers(objects) if "consumer" in c["command"][0])
    settings = load_program_settings(
        "logship-consumer", container_env(objects, consumer), [], tmp_path, monkeypatch
    )
    amqp, archive = settings.amqp, settings.archive
    queues, exchanges = of_kind(objects, "Queue"), of_kind(objects, "Exchange")
    main = queues[amqp.queue]
    code = queue_arguments(amqp)
    assert main["type"] == code.pop("x-queue-type")
    assert main["arguments"] == code
    assert queues[amqp.dead_letter_queue]["type"] == amqp.queue_type.value
    assert "arguments" not in queues[amqp.dead_letter_queue]
    stream = dict(archive.arguments())
    assert queues[archive.queue]["type"] == stream.pop("x-queue-type")
    assert queues[archive.queue]["arguments"] == stream
    assert exchanges[amqp.exchange]["type"] == "direct"
    assert exchanges[amqp.dead_letter_exchange]["type"] == "fanout"
    assert exchanges[receipts_exchange(amqp.exchange)]["type"] == "direct"
    everything = [*queues.values(), *exchanges.values()]
    assert all(o["durable"] and not o["autoDelete"] for o in everything)
    bindings = {
        (b["source"], b["destination"], b["routingKey"])
        for b in (o["spec"] for o in objects if o["kind"] == "Binding")
    }
    assert bindings == {
        (amqp.exchange, amqp.queue, amqp.routing_key),
        (amqp.exchange, archive.queue, amqp.routing_key),
        (amqp.dead_letter_exchange, amqp.dead_letter_queue, "#"),
    }
    for kind in ("Queue", "Exchange", "Binding", "User", "Permission", "Vhost", "Policy"):
        for obj in (o for o in objects if o["kind"] == kind):
            assert obj["spec"]["rabbitmqClusterReference"] == {"name": "rabbitmq"}
            if kind != "User":  # users are cluster-wide; their Permission names the vhost
                assert obj["spec"].get("vhost", obj["spec"].get("name")) == "/"


def test_users_and_permissions_are_those_of_the_definitions_file() -> None:
    objects = render(HA)
    defs = definitions()
    granted = {p["user"]: p for p in defs["permissions"]}
    users = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "User"}
    permissions = {
        o["spec"]["userReference"]["name"]: o["spec"]["permissions"]
        for o in objects
        if o["kind"] == "Permission"
    }
    assert set(users) == set(permissions) == {"logship-producer", "logship-consumer"}
    for name, spec in users.items():
        secret = _data(objects, "Secret", spec["importCredentialsSecret"]["name"])
        assert secret["username"] == name and secret["password"]
        assert spec["tags"] == []
        assert permissions[name] == {k: granted[name][k] for k in ("configure", "write", "read")}


def test_a_misspelt_field_of_an_operator_resource_is_refused() -> None:
    objects = render(HA)
    for kind, name, field in (
        ("RabbitmqCluster", "rabbitmq", "replica"),
        ("Queue", "logs", "argument"),
    ):
        broken = yaml.safe_load(yaml.safe_dump(find(objects, kind, name)))
        broken["spec"][field] = 3
        with pytest.raises(Exception, match=field):
            validate(broken)
