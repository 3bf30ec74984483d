"""Lists the PromQL that monitoring ships (dashboard targets, alert rules) and cuts a query into the
operands of its comparisons and set operators, so tests can check each one against Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import yaml

HERE = Path(__file__).resolve().parent
PROMETHEUS_RULE = HERE / "prometheusrule-logship.yaml"
DASHBOARD = HERE / "dashboards" / "logship.json"

_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_SET_OPERATORS = ("and", "or", "unless")
# Vector-matching modifiers that may follow a binary operator: `and on() x`, `> bool 0`, ...
_MODIFIER = re.compile(
    r"(?:\s*(?:bool\b|(?:on|ignoring)\s*\([^)]*\)|group_(?:left|right)\b(?:\s*\([^)]*\))?))*\s*"
)
_IDENTIFIER_CHAR = re.compile(r"[A-Za-z0-9_:]")


class Query(NamedTuple):
    where: str  # for messages: the panel or rule it comes from
    expr: str


def dashboard_queries(path: Path = DASHBOARD) -> list[Query]:
    """Every target expression of the dashboard, rows' nested panels included."""
    dashboard = json.loads(path.read_text())
    queries = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r} target {target.get('refId', '?')}"
            queries.append(Query(where, target["expr"]))
    return queries


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))
    return found


def rule_queries(path: Path = PROMETHEUS_RULE) -> list[Query]:
    """Every rule expression of the PrometheusRule (the source of the plain rule file)."""
    spec = yaml.safe_load(path.read_text())["spec"]
    return [
        Query(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in spec["groups"]
        for rule in group["rules"]
    ]


def operands(expr: str) -> list[str]:
    """The innermost operands of `expr`'s comparison and set operators, literals left out.

    An alert condition is usually empty (not firing), which says nothing about whether its
    selectors match anything; its operands are what must return data::

        >>> operands('(sum(up{job="c"}) or vector(0)) == 0 unless on() (sum(q) == 0)')
        ['sum(up{job="c"})', 'vector(0)', 'sum(q)']
        >>> operands('histogram_quantile(0.99, sum by (le) (rate(x[5m]))) > 5')
        ['histogram_quantile(0.99, sum by (le) (rate(x[5m])))']
    """
    pieces = _split_top_level(expr)
    if len(pieces) == 1:
        inner = _unwrap(pieces[0])
        if inner == pieces[0]:
            return [] if _is_literal(inner) else [inner]
        return operands(inner)
    return [leaf for piece in pieces for leaf in operands(piece)]


def _split_top_level(expr: str) -> list[str]:
    """Cut at comparison and set operators outside brackets and strings; drop their modifiers."""
    pieces: list[str] = []
    start = 0
    for i in _top_level_positions(expr):
        if i < start:
            continue  # inside an operator or modifier just cut at
        width = _operator_at(expr, i)
        if width:
            pieces.append(expr[start:i])
            modifier = _MODIFIER.match(expr, i + width)
            start = modifier.end() if modifier else i + width
    pieces.append(expr[start:])
    return [piece.strip() for piece in pieces]


def _top_level_positions(expr: str) -> list[int]:
    """Indexes of the characters outside any bracket and string (an opening bracket included)."""
    positions = []
    depth, quote, escaped = 0, "", False
    for i, char in enumerate(expr):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
            continue
        if depth == 0:
            positions.append(i)
        if char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
    return positions


def _operator_at(expr: str, i: int) -> int:
    """Length of the comparison or set operator starting at `expr[i]`, 0 if there is none."""
    for operator in _COMPARISONS:
        if expr.startswith(operator, i):
            return len(operator)
    for operator in _SET_OPERATORS:
        end = i + len(operator)
        if (
            expr.startswith(operator, i)
            and (i == 0 or not _IDENTIFIER_CHAR.match(expr[i - 1]))
            and (end == len(expr) or not _IDENTIFIER_CHAR.match(expr[end]))
        ):
            return len(operator)
    return 0


def _unwrap(piece: str) -> str:
    """`(x)` → `x` when the outer parentheses enclose the whole piece (not in `(a) or (b)`)."""
    if piece.startswith("(") and piece.endswith(")") and _top_level_positions(piece) == [0]:
        return piece[1:-1].strip()
    return piece


def _is_literal(piece: str) -> bool:
    """A number or arithmetic on numbers, like `64 * 1024 * 1024`."""
    return re.search(r"[A-Za-z_]", piece) is None


def metric_names(expr: str, prefix: str) -> set[str]:
    """Metric names starting with `prefix` that `expr` refers to."""
    return set(re.findall(rf"\b{re.escape(prefix)}[A-Za-z0-9_:]*", expr))
