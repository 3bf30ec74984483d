"""The monitoring manifests are valid custom resources, and every metric they use exists."""

from __future__ import annotations

import copy
import runpy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from consumer.metrics import ConsumerMetrics
from producer.metrics import ProducerMetrics
from tests.support.schemas import require_crds

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
PROMQL = runpy.run_path(str(MONITORING / "promql.py"))
KUBERNETES_VERSION = "1.30.0"


def _manifests() -> list[dict[str, Any]]:
    resources = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())["resources"]
    return [
        document
        for name in resources
        for document in yaml.safe_load_all((MONITORING / name).read_text())
        if document
    ]


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [m for m in _manifests() if m["kind"] == kind]


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields refused: the API server would silently prune a misspelt
    field (`intervall: 15s`) and the scrape would quietly use the default."""
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def _crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    crds = require_crds()
    group, version = api_version.split("/")
    for path in sorted(crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["group"] != group or crd["spec"]["names"]["kind"] != kind:
            continue
        for served in crd["spec"]["versions"]:
            if served["name"] == version and served["served"]:
                return _strict(served["schema"]["openAPIV3Schema"])
        pytest.fail(f"{path.name} serves no version {version} of {kind}")
    pytest.fail(f"no CRD for {kind} in group {group} under {crds}")


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_custom_resources_match_their_crd_schema(kind: str) -> None:
    resources = _of_kind(kind)
    assert resources, f"monitoring/kustomization.yaml lists no {kind}"
    for resource in resources:
        schema = _crd_schema(resource["apiVersion"], kind)
        errors = sorted(
            jsonschema.Draft7Validator(schema).iter_errors(resource), key=lambda e: e.json_path
        )
        assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_schema_check_catches_a_misspelt_field() -> None:
    monitor = copy.deepcopy(_of_kind("ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    schema = _crd_schema(monitor["apiVersion"], "ServiceMonitor")
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        jsonschema.validate(monitor, schema, cls=jsonschema.Draft7Validator)


def test_dashboard_configmap_is_a_valid_configmap() -> None:
    (configmap,) = _of_kind("ConfigMap")
    kubernetes_validate.validate(configmap, KUBERNETES_VERSION, strict=True)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_everything_is_picked_up_by_the_kube_prometheus_stack_release() -> None:
    for resource in _of_kind("ServiceMonitor") + _of_kind("PrometheusRule"):
        labels = resource["metadata"]["labels"]
        assert labels.get("release") == "kube-prometheus-stack", resource["metadata"]["name"]


def test_service_monitors_scrape_the_named_metrics_ports() -> None:
    ports = {
        m["metadata"]["name"]: [(e["port"], e["path"]) for e in m["spec"]["endpoints"]]
        for m in _of_kind("ServiceMonitor")
    }
    assert ports == {
        "logship-consumer": [("http-metrics", "/metrics")],
        "logship-producer": [("http-metrics", "/metrics")],
        "rabbitmq": [("metrics", "/metrics")],
    }


def test_every_alert_has_a_severity_summary_and_description() -> None:
    (rule,) = _of_kind("PrometheusRule")
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]
    assert alerts
    for alert in alerts:
        assert alert["alert"].startswith("Logship"), alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert alert["annotations"].get("summary"), alert["alert"]
        assert alert["annotations"].get("description"), alert["alert"]


def _exported_names() -> set[str]:
    """Every series name the two programs can expose, labelled metrics with no child yet included
    (they expose no sample until first used, so samples alone would miss them)."""
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "summary": ["", "_sum", "_count"],
    }
    names: set[str] = set()
    for metrics in (ProducerMetrics(), ConsumerMetrics()):
        for family in metrics.registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, [""]))
            names.update(sample.name for sample in family.samples)
    return names


@pytest.mark.parametrize("prefix", ["logship_", "process_"])
def test_every_metric_used_by_rules_and_dashboard_exists(prefix: str) -> None:
    queries = PROMQL["rule_queries"]() + PROMQL["dashboard_queries"]()
    used = {
        (name, query.where)
        for query in queries
        for name in PROMQL["metric_names"](query.expr, prefix)
    }
    assert used, f"no {prefix}* metric used at all: is the extraction broken?"
    exported = _exported_names()
    unknown = sorted(f"{name} ({where})" for name, where in used if name not in exported)
    assert not unknown, "not exported by producer/metrics.py or consumer/metrics.py:\n" + "\n".join(
        unknown
    )
