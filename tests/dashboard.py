"""The Grafana dashboard's queries, and the metric names a PromQL expression reads."""

from __future__ import annotations

import json
import re

from .daemon_util import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "im-prober.json"


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in as Grafana would."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace('"$target"', '".*"')
    )


PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "le",
}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording-rule) names a PromQL expression reads."""
    text = re.sub(r'"[^"]*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        rest = text[match.end() :].lstrip()
        if word in PROMQL_WORDS or rest.startswith("("):
            continue  # a keyword or a function call
        names.add(word)
    return names
