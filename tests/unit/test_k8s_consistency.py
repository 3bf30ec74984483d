"""What the manifests, chart values, broker definitions and docker-compose.yaml refer to exists in
the code and in each other: every LOGSHIP_* variable is a setting and loads as the program would
load it, ports and probe paths are the programs' own, Services, ServiceMonitors, PDBs and
NetworkPolicies select real pods and ports, the autoscalers watch the configured queue, and the
broker's users and topology are the ones the code expects."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from consumer.metrics import ConsumerMetrics
from consumer.settings import ConsumerSettings
from logship.amqp import queue_arguments
from logship.config import ArchiveSettings, load_settings
from logship.receipts import receipts_exchange
from logship.telemetry import TelemetryServer
from producer.metrics import ProducerMetrics
from producer.settings import ProducerSettings
from tests.unit.test_k8s_manifests import (
    K8S,
    NAMESPACE,
    REPO,
    Manifest,
    find,
    missing,
    pod_specs,
    render,
)

PROGRAMS: dict[str, type[BaseSettings]] = {
    "logship-producer": ProducerSettings,
    "logship-consumer": ConsumerSettings,
}
# The overlays that together hold every kind of logship pod and every optional object.
DEPLOYABLE = ("overlays/k3d", "overlays/k3d-keda", "overlays/k3d-hpa", "overlays/k3d-drain")
# Values of the downward API fields the manifests use, for one sample pod.
FIELD_VALUES = {
    "metadata.name": "logship-consumer-0",
    "metadata.namespace": NAMESPACE,
    "metadata.annotations['batch.kubernetes.io/job-completion-index']": "0",
}
COMPOSE = REPO / "docker-compose.yaml"
DEFINITIONS = K8S / "base" / "rabbitmq" / "definitions.json"
SHUTDOWN_MARGIN_S = 10


# ---- resolving what a container sees ---------------------------------------------------------


def deployed(directory: str) -> list[Manifest]:
    """What is in the cluster once DIRECTORY is applied: the drain Job runs beside a deployment
    (it uses its ConfigMaps, Secrets and broker)."""
    if "drain" in directory:
        return render("overlays/k3d") + render(directory)
    return render(directory)


def _data(objects: list[Manifest], kind: str, name: str) -> dict[str, str]:
    obj = find(objects, kind, name)
    if kind == "Secret":
        values = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        return values | dict(obj.get("stringData", {}))
    return dict(obj.get("data", {}))


def _expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: earlier variables only, unknown references left as they are."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: defined.get(m[1], m[0]), value)


def _value_from(objects: list[Manifest], source: Manifest) -> str:
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        return _data(objects, "ConfigMap", ref["name"])[ref["key"]]
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        return _data(objects, "Secret", ref["name"])[ref["key"]]
    if "fieldRef" in source:
        return FIELD_VALUES[source["fieldRef"]["fieldPath"]]
    raise AssertionError(f"unsupported valueFrom {source}")


def container_env(objects: list[Manifest], container: Manifest) -> dict[str, str]:
    """The environment a container starts with: envFrom, then env in order, references resolved."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= _data(objects, "ConfigMap", source["configMapRef"]["name"])
        else:
            env |= _data(objects, "Secret", source["secretRef"]["name"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(item["value"], env)
        else:
            env[item["name"]] = _value_from(objects, item["valueFrom"])
    return env


def logship_containers(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest, Manifest]]:
    """(workload, pod spec, container) for every container that runs one of logship's programs."""
    for workload, spec in pod_specs(objects):
        for container in spec["containers"]:
            if container.get("command", [""])[0] in PROGRAMS:
                yield workload, spec, container


def all_logship_containers() -> Iterator[tuple[str, Manifest, Manifest, Manifest]]:
    for directory in DEPLOYABLE:
        for workload, spec, container in logship_containers(deployed(directory)):
            yield directory, workload, spec, container


def setting_names(model: type[BaseModel], prefix: str = "LOGSHIP_") -> set[str]:
    """Every environment variable a settings class reads (nested models with '__')."""
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def under(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def load_program_settings(
    program: str,
    env: dict[str, str],
    args: list[str],
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """Load settings exactly as the program does (environment + flags), with /data moved under
    root and the directories the manifests' volumes provide created."""
    for key in list(os.environ):
        if key.upper().startswith("LOGSHIP_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if value.startswith("/data/"):
            value = str(root) + value
            Path(value).parent.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(key, value)
    return load_settings(PROGRAMS[program], args)


# ---- settings --------------------------------------------------------------------------------


def test_every_logship_variable_is_a_setting_of_its_program() -> None:
    for directory, workload, _, container in all_logship_containers():
        names = setting_names(PROGRAMS[container["command"][0]])
        env = container_env(deployed(directory), container)
        unknown = {k for k in env if k.startswith("LOGSHIP_")} - names
        assert not unknown, f"{directory} {workload['metadata']['name']}: {unknown} are ignored"


def test_manifest_settings_load_as_the_program_loads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index, (directory, workload, spec, container) in enumerate(all_logship_containers()):
        program = container["command"][0]
        env = container_env(deployed(directory), container)
        args = container.get("args", [])
        settings = load_program_settings(program, env, args, tmp_path / str(index), monkeypatch)
        where = f"{directory} {workload['metadata']['name']}"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert settings.http.port == ports["http-metrics"], where
        assert settings.amqp.queue == "logs" and settings.amqp.exchange == "logs", where
        assert settings.amqp.declare is False, f"{where}: least privilege means no declaring"
        assert settings.amqp.username == f"{program}", where
        assert "@" not in urlsplit(settings.amqp.url.get_secret_value()).netloc, where
        grace = spec["terminationGracePeriodSeconds"]
        assert grace >= settings.shutdown_timeout + SHUTDOWN_MARGIN_S, where
        if workload["kind"] == "Job":
            assert settings.exit_when_idle is not None, f"{where}: a drain Job must end"


def test_paths_lie_on_volumes_that_allow_what_the_program_does() -> None:
    for directory, workload, _, container in all_logship_containers():
        env = container_env(deployed(directory), container)
        mounts = {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]}
        where = f"{directory} {workload['metadata']['name']}"

        def mount_of(
            path: str, where: str = where, mounts: dict[str, bool] = mounts
        ) -> tuple[str, bool]:
            found = [(m, ro) for m, ro in mounts.items() if under(path, m)]
            assert found, f"{where}: {path} is on no volume (the root filesystem is read-only)"
            return max(found, key=lambda item: len(item[0]))

        if container["command"][0] == "logship-producer":
            mount_of(env["LOGSHIP_INPUT"])
            assert not mount_of(env["LOGSHIP_CHECKPOINT"])[1], f"{where}: checkpoint read-only"
        else:
            output = env["LOGSHIP_OUTPUT"]
            assert "$(" not in output, f"{where}: unresolved reference in {output}"
            assert not mount_of(output)[1], f"{where}: output read-only"
            assert mount_of(output + ".state") == mount_of(output), "the state file sits beside"


def test_each_consumer_pod_has_a_file_of_its_own() -> None:
    """The consumer's guarantee holds per output file: several pods must never share one."""
    for directory in ("base", "overlays/k3d-keda", "overlays/k3d-hpa", "overlays/k3d-drain"):
        for _, _, container in logship_containers(render(directory)):
            if container["command"][0] != "logship-consumer":
                continue
            output = next(e["value"] for e in container["env"] if e["name"] == "LOGSHIP_OUTPUT")
            assert "$(POD_NAME)" in output or "$(DRAIN_INDEX)" in output, (directory, output)
    statefulset = find(render("overlays/k3d"), "StatefulSet", "logship-consumer")
    assert statefulset["spec"]["replicas"] == 1, "the demo's single output.txt has one writer"
    assert not [
        o
        for o in render("overlays/k3d")
        if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
    ]


# ---- ports, probes, selectors -----------------------------------------------------------------


def test_probes_use_the_health_endpoints_on_a_declared_port() -> None:
    for directory, workload, _, container in all_logship_containers():
        where = f"{directory} {workload['metadata']['name']}"
        port_names = {p["name"] for p in container["ports"]}
        expected = {
            "livenessProbe": "/livez",
            "readinessProbe": "/readyz",
            "startupProbe": "/livez",
        }
        assert "livenessProbe" in container, where
        for probe, path in expected.items():
            if probe in container:
                assert container[probe]["httpGet"]["path"] == path, f"{where} {probe}"
                assert container[probe]["httpGet"]["port"] in port_names, f"{where} {probe}"


async def _get(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


def test_probe_and_scrape_paths_answer_on_the_real_server() -> None:
    """The paths the manifests use are served by logship.telemetry (not a 404)."""
    paths = {"/metrics"}
    for _, _, _, container in all_logship_containers():
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in container:
                paths.add(container[probe]["httpGet"]["path"])

    async def check() -> dict[str, int]:
        server = TelemetryServer(ProducerMetrics().registry, lambda: True, "127.0.0.1", 0)
        await server.start()
        try:
            return {path: await _get(server.port, path) for path in sorted(paths)}
        finally:
            await server.stop()

    assert set(asyncio.run(check()).values()) == {200}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pod_templates(objects: list[Manifest]) -> list[tuple[Manifest, Manifest]]:
    return [
        (w, w["spec"]["template"])
        for w in objects
        if w["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


def test_services_select_pods_and_their_named_ports() -> None:
    for directory in DEPLOYABLE[:3]:
        objects = deployed(directory)
        for service in (o for o in objects if o["kind"] == "Service"):
            name = service["metadata"]["name"]
            pods = [
                t
                for _, t in _pod_templates(objects)
                if _matches(service["spec"]["selector"], t["metadata"]["labels"])
            ]
            assert len(pods) == 1, f"{directory} Service {name} selects {len(pods)} workloads"
            ports = {
                p["name"]: p["containerPort"]
                for c in pods[0]["spec"]["containers"]
                for p in c["ports"]
            }
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in ports, (
                    f"{name}: no container port {port['targetPort']}"
                )
        for component in ("producer", "consumer"):
            service = find(objects, "Service", f"logship-{component}")
            assert "http-metrics" in {p["name"] for p in service["spec"]["ports"]}


def test_service_monitors_find_one_service_with_their_port() -> None:
    objects = render("overlays/k3d")
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} >= {
        "logship-producer",
        "logship-consumer",
        "rabbitmq",
    }
    services = [o for o in objects if o["kind"] == "Service"]
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        for endpoint in monitor["spec"]["endpoints"]:
            targets = [
                s
                for s in services
                if _matches(selector, s["metadata"].get("labels", {}))
                and endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}
            ]
            names = [s["metadata"]["name"] for s in targets]
            assert len(targets) == 1, f"{monitor['metadata']['name']} scrapes {names}"


def test_disruption_budget_and_network_policies_select_real_pods() -> None:
    objects = deployed("overlays/k3d-keda") + render("overlays/k3d-drain")
    templates = _pod_templates(objects)
    for policy in (o for o in objects if o["kind"] in ("NetworkPolicy", "PodDisruptionBudget")):
        selector = policy["spec"].get("podSelector", policy["spec"].get("selector"))["matchLabels"]
        selected = [w for w, t in templates if _matches(selector, t["metadata"]["labels"])]
        assert selected, f"{policy['kind']} {policy['metadata']['name']} selects no pod"
    pdb = find(objects, "PodDisruptionBudget", "logship-consumer")
    selected = [
        w
        for w, t in templates
        if _matches(pdb["spec"]["selector"]["matchLabels"], t["metadata"]["labels"])
    ]
    assert [w["kind"] for w in selected] == ["StatefulSet"], "a PDB must cover one controller"


def test_network_policies_let_every_client_reach_the_broker() -> None:
    objects = deployed("overlays/k3d-keda") + render("overlays/k3d-drain")
    broker = find(objects, "NetworkPolicy", "rabbitmq")
    container = find(objects, "StatefulSet", "rabbitmq")["spec"]["template"]["spec"]["containers"][
        0
    ]
    broker_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    amqp_rule = next(r for r in broker["spec"]["ingress"] if r["ports"][0]["port"] == "amqp")
    allowed = [f["podSelector"]["matchLabels"] for f in amqp_rule["from"] if "podSelector" in f]
    url_port = urlsplit(_data(objects, "ConfigMap", "logship-amqp")["LOGSHIP_AMQP__URL"]).port
    assert broker_ports["amqp"] == url_port
    for workload, template in _pod_templates(objects):
        labels = template["metadata"]["labels"]
        if labels.get("app.kubernetes.io/name") != "logship":
            continue
        assert any(_matches(a, labels) for a in allowed), f"{workload['metadata']['name']} refused"
        own = [
            p
            for p in objects
            if p["kind"] == "NetworkPolicy"
            and _matches(p["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert own, f"{workload['metadata']['name']} has no NetworkPolicy of its own"
        egress_ports = {
            port["port"] for p in own for rule in p["spec"]["egress"] for port in rule["ports"]
        }
        assert url_port in egress_ports, f"{workload['metadata']['name']} cannot reach AMQP"


def test_every_configmap_and_secret_reference_resolves() -> None:
    for directory in DEPLOYABLE:
        objects = deployed(directory)
        for _, spec in pod_specs(objects):
            for container in spec["containers"]:
                container_env(objects, container)  # raises on a missing object or key
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    find(objects, "ConfigMap", volume["configMap"]["name"])
                if "secret" in volume:
                    find(objects, "Secret", volume["secret"]["secretName"])
                if "persistentVolumeClaim" in volume:
                    find(
                        objects,
                        "PersistentVolumeClaim",
                        volume["persistentVolumeClaim"]["claimName"],
                    )


def test_k3d_claims_bind_to_the_laptop_folder() -> None:
    for directory in DEPLOYABLE:
        objects = deployed(directory)
        for claim in (o for o in objects if o["kind"] == "PersistentVolumeClaim"):
            if "volumeName" not in claim["spec"]:
                continue
            volume = find(objects, "PersistentVolume", claim["spec"]["volumeName"])
            assert volume["spec"]["claimRef"]["name"] == claim["metadata"]["name"]
            assert volume["spec"]["storageClassName"] == claim["spec"]["storageClassName"] == ""
            assert set(claim["spec"]["accessModes"]) <= set(volume["spec"]["accessModes"])
            assert under(volume["spec"]["hostPath"]["path"], "/var/lib/logship")


# ---- broker: users, topology, autoscaling -----------------------------------------------------


def definitions() -> dict[str, Any]:
    return dict(json.loads(DEFINITIONS.read_text()))


def _consumer_amqp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    objects = render("base")
    _, _, container = next(
        c for c in logship_containers(objects) if c[2]["command"][0] == "logship-consumer"
    )
    env = container_env(objects, container)
    return load_program_settings("logship-consumer", env, [], tmp_path, monkeypatch).amqp


def test_definitions_declare_the_topology_the_code_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With declaring switched on, the programs would declare exactly this: no argument may
    differ, or the broker refuses the declaration (PRECONDITION_FAILED)."""
    amqp = _consumer_amqp(tmp_path, monkeypatch)
    defs = definitions()
    queues = {q["name"]: q for q in defs["queues"]}
    exchanges = {e["name"]: e for e in defs["exchanges"]}
    assert queues[amqp.queue]["arguments"] == queue_arguments(amqp)
    assert queues[amqp.dead_letter_queue]["arguments"] == {"x-queue-type": amqp.queue_type.value}
    assert exchanges[amqp.exchange]["type"] == "direct"
    assert exchanges[amqp.dead_letter_exchange]["type"] == "fanout"
    assert exchanges[receipts_exchange(amqp.exchange)]["type"] == "direct"
    assert all(q["durable"] and not q["auto_delete"] for q in queues.values())
    assert all(e["durable"] and not e["auto_delete"] for e in exchanges.values())
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]}
    assert (amqp.exchange, amqp.queue, amqp.routing_key) in bindings
    assert (amqp.dead_letter_exchange, amqp.dead_letter_queue, "#") in bindings
    archive = ArchiveSettings()  # the programs' defaults: the manifests do not change them
    assert queues[archive.queue]["arguments"] == archive.arguments()
    assert (amqp.exchange, archive.queue, amqp.routing_key) in bindings


def test_each_program_has_only_the_permissions_it_needs() -> None:
    objects = render("base")
    defs = definitions()
    users = {u["name"]: u for u in defs["users"]}
    permissions = {p["user"]: p for p in defs["permissions"]}
    expected = {
        # and its own receipts queue, logs.receipts.<id>: declared, bound, consumed
        "logship-producer": {
            "configure": "^logs\\.receipts\\..+$",
            "write": "^logs$|^logs\\.receipts\\..+$",
            "read": "^logs\\.receipts(\\..+)?$",
        },
        # the archive too: the consumer watches its oldest entry's age (alerts), reads no more;
        # it publishes written receipts
        "logship-consumer": {
            "configure": "",
            "write": "^logs\\.receipts$",
            "read": "^logs(\\.archive)?$",
        },
    }
    for program, wanted in expected.items():
        secret = _data(objects, "Secret", f"{program}-amqp")
        assert secret["username"] == program
        assert users[program]["password"] == secret["password"], f"{program}: passwords differ"
        assert users[program]["tags"] == [], f"{program} must not be a management user"
        granted = {k: permissions[program][k] for k in ("configure", "write", "read")}
        assert granted == wanted
    # The regular expressions name exactly one object: not the dead-letter ones too.
    assert re.search("^logs$", "logs") and not re.search("^logs$", "logs.dead")
    reads = "^logs(\\.archive)?$"
    assert re.search(reads, "logs.archive") and not re.search(reads, "logs.dead")
    own = "^logs\\.receipts\\..+$"
    assert re.search(own, "logs.receipts.host-1:1") and not re.search(own, "logs.receipts")
    assert not re.search(own, "logs") and not re.search("^logs\\.receipts$", "logs.receiptsX")


def test_keda_connects_as_the_consumer_to_the_configured_broker() -> None:
    objects = render("overlays/k3d-keda")
    secret = _data(objects, "Secret", "logship-consumer-amqp")
    url = urlsplit(secret["amqp-url"])
    configured = urlsplit(_data(objects, "ConfigMap", "logship-amqp")["LOGSHIP_AMQP__URL"])
    assert (url.username, url.password) == (secret["username"], secret["password"])
    assert (url.hostname, url.port, url.path) == (
        configured.hostname,
        configured.port,
        configured.path,
    )
    scaled = find(objects, "ScaledObject", "logship-consumer")
    auth_name = scaled["spec"]["triggers"][0]["authenticationRef"]["name"]
    auth = find(objects, "TriggerAuthentication", auth_name)
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host" and ref["key"] in secret
    assert ref["name"] == "logship-consumer-amqp"


def test_the_broker_url_is_the_broker_service() -> None:
    objects = render("base")
    url = urlsplit(_data(objects, "ConfigMap", "logship-amqp")["LOGSHIP_AMQP__URL"])
    service, namespace, *_ = (url.hostname or "").split(".")
    assert namespace == NAMESPACE
    ports = {p["name"]: p["port"] for p in find(objects, "Service", service)["spec"]["ports"]}
    assert ports["amqp"] == url.port


def test_both_autoscalers_watch_the_configured_queue_with_one_policy() -> None:
    queue = _data(render("base"), "ConfigMap", "logship-amqp")["LOGSHIP_AMQP__QUEUE"]
    scaled = find(render("overlays/k3d-keda"), "ScaledObject", "logship-consumer")["spec"]
    hpa = find(render("overlays/k3d-hpa"), "HorizontalPodAutoscaler", "logship-consumer")["spec"]
    (trigger,) = scaled["triggers"]
    (metric,) = hpa["metrics"]
    assert trigger["type"] == "rabbitmq" and trigger["metadata"]["mode"] == "QueueLength"
    assert trigger["metadata"]["queueName"] == queue
    assert metric["external"]["metric"]["selector"]["matchLabels"]["queue"] == queue
    # The same documented target per replica, range and scale-down stabilisation.
    assert float(trigger["metadata"]["value"]) == float(
        metric["external"]["target"]["averageValue"]
    )
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (
        hpa["minReplicas"],
        hpa["maxReplicas"],
    )
    keda_behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert keda_behavior == hpa["behavior"]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    for target in (scaled["scaleTargetRef"], hpa["scaleTargetRef"]):
        assert (target["kind"], target["name"]) == ("StatefulSet", "logship-consumer")


def test_prometheus_adapter_serves_the_metric_the_hpa_reads() -> None:
    values = yaml.safe_load((K8S / "helm" / "prometheus-adapter.yaml").read_text())
    hpa = find(render("overlays/k3d-hpa"), "HorizontalPodAutoscaler", "logship-consumer")
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]
    (rule,) = values["rules"]["external"]
    assert rule["name"]["as"] == metric["name"]
    assert re.fullmatch(rule["name"]["matches"], metric["name"])
    assert rule["seriesQuery"].startswith(metric["name"] + "{")
    assert rule["resources"]["overrides"]["namespace"]["resource"] == "namespace"
    for label in metric["selector"]["matchLabels"]:
        assert f"by ({label})" in rule["metricsQuery"], "the selector's label survives the query"
    # Per-queue series exist only with per-object metrics on.
    conf = (K8S / "base" / "rabbitmq" / "rabbitmq.conf").read_text()
    assert re.search(r"^prometheus\.return_per_object_metrics\s*=\s*true$", conf, re.M)
    # The adapter reaches the Prometheus of release kube-prometheus-stack in `monitoring`.
    assert (
        urlsplit(values["prometheus"]["url"]).hostname
        == "kube-prometheus-stack-prometheus.monitoring.svc"
    )
    assert values["prometheus"]["port"] == 9090


def test_service_monitors_carry_the_release_label_the_chart_selects() -> None:
    for monitor in (
        o for o in render("overlays/k3d") if o["kind"] in ("ServiceMonitor", "PrometheusRule")
    ):
        assert monitor["metadata"]["labels"].get("release") == "kube-prometheus-stack"


# ---- metric names -----------------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Every series name logship exports, with the suffixes Prometheus adds per metric type."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
        "summary": ("_sum", "_count", "_created", ""),
    }
    names = set()
    for registry in (ProducerMetrics().registry, ConsumerMetrics().registry):
        for family in registry.collect():
            names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def test_metric_names_in_manifests_exist_in_the_code() -> None:
    exported = exported_metric_names()
    files = [COMPOSE, *K8S.rglob("*.yaml"), *(REPO / "monitoring").rglob("*.yaml")]
    files += list((REPO / "monitoring").rglob("*.json"))
    referenced = {
        name for f in files for name in re.findall(r"\blogship_[a-z0-9_]+", f.read_text())
    }
    unknown = {n for n in referenced if n not in exported and not n.startswith("logship_test")}
    assert not unknown, f"not exported by producer/ or consumer/metrics.py: {sorted(unknown)}"


# ---- docker-compose.yaml ----------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_compose_file_follows_the_compose_specification() -> None:
    try:
        from importlib.resources import files

        import jsonschema

        schema_file = files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
        schema = json.loads(schema_file.read_text())
    except (ImportError, FileNotFoundError):
        missing("check-jsonschema (which ships the compose-spec schema) is not installed")
    jsonschema.validators.validator_for(schema)(schema).validate(compose())


def test_compose_runs_the_programs_as_the_manifests_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose()["services"]
    k8s_secrets = {p: _data(render("base"), "Secret", f"{p}-amqp") for p in PROGRAMS}
    for name in ("producer", "consumer"):
        service = services[name]
        program = service["entrypoint"][0]
        assert program == f"logship-{name}"
        env = {k: str(v) for k, v in service["environment"].items()}
        assert set(env) <= setting_names(PROGRAMS[program]), f"compose {name}: unknown settings"
        assert env["LOGSHIP_AMQP__USERNAME"] == k8s_secrets[program]["username"]
        assert env["LOGSHIP_AMQP__PASSWORD"] == k8s_secrets[program]["password"]
        settings = load_program_settings(program, env, [], tmp_path / name, monkeypatch)
        assert settings.amqp.declare is False
        published = {int(p.rsplit(":", 1)[1]) for p in service["ports"]}
        assert published == {settings.http.port}
        assert urlsplit(settings.amqp.url.get_secret_value()).hostname in services
        assert (
            int(service["stop_grace_period"].rstrip("s"))
            >= settings.shutdown_timeout + SHUTDOWN_MARGIN_S
        )
    broker_files = [v.split(":")[0] for v in services["rabbitmq"]["volumes"] if v.startswith("./")]
    for path in broker_files:
        assert (REPO / path).is_file(), path
    assert "./k8s/base/rabbitmq/definitions.json" in broker_files
