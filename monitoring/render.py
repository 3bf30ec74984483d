"""Regenerates monitoring's derived files from their sources, so no copy is maintained by hand.

- ``rules/logship-alerts.yaml``: the groups of ``prometheusrule-logship.yaml`` as a plain Prometheus
  rule file (for promtool and for a Prometheus without the operator);
- ``grafana-dashboard-configmap.yaml``: ``dashboards/logship.json`` wrapped in a ConfigMap that
  Grafana's dashboard sidecar picks up (label ``grafana_dashboard: "1"``).

Usage::

    python monitoring/render.py          # rewrite both files
    python monitoring/render.py --check  # exit 1, naming the stale files, if either is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PROMETHEUS_RULE = HERE / "prometheusrule-logship.yaml"
RULE_FILE = HERE / "rules" / "logship-alerts.yaml"
DASHBOARD = HERE / "dashboards" / "logship.json"
DASHBOARD_CONFIGMAP = HERE / "grafana-dashboard-configmap.yaml"

CONFIGMAP_NAME = "logship-grafana-dashboard"
NAMESPACE = "logship"


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, dashboard JSON) as literal blocks, readable in a diff."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _dump(source: Path, document: dict[str, Any]) -> str:
    body = yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, width=100)
    where = source.relative_to(HERE.parent)
    return f"# Generated from {where} by monitoring/render.py: edit that file instead.\n{body}"


def render_rules() -> str:
    """The plain rule file: ``spec`` of the PrometheusRule (its ``groups:``), nothing else."""
    spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
    return _dump(PROMETHEUS_RULE, spec)


def render_configmap() -> str:
    """The dashboard ConfigMap, embedding the JSON file's text unchanged."""
    text = DASHBOARD.read_text()
    json.loads(text)  # refuse to ship a dashboard Grafana cannot parse
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP_NAME,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": "logship", "grafana_dashboard": "1"},
        },
        "data": {DASHBOARD.name: text},
    }
    return _dump(DASHBOARD, configmap)


def outputs() -> dict[Path, str]:
    """Every derived file and the text it should have."""
    return {RULE_FILE: render_rules(), DASHBOARD_CONFIGMAP: render_configmap()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        verb = "stale" if args.check else "rewrote"
        print(f"{verb}: {path.relative_to(HERE.parent)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
