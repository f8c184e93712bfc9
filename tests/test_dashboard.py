"""docs/grafana-dashboard.json: valid, importable, and only uses metrics the server exports."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = REPO_ROOT / "docs" / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\b(?:cronjob[s_]\w*|cronmetrics_\w*)")
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_RANGES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1d"}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows nest their panels


def _panel_exprs() -> list[tuple[str, str]]:
    """(panel title + refId, expr) for every query of every panel."""
    return [
        (f"{panel.get('title')}/{target.get('refId')}", target["expr"])
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def _variable_queries() -> list[str]:
    out = []
    for var in _dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            out.append(query["query"] if isinstance(query, dict) else query)
    return out


def _as_promql(expr: str) -> str:
    for variable, value in GRAFANA_RANGES.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def test_dashboard_is_valid_json_with_a_stable_uid() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "cronmetrics"
    assert isinstance(dashboard["schemaVersion"], int)
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None  # importable into any Grafana


def test_dashboard_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in _panels(_dashboard()["panels"])]
    assert len(ids) == len(set(ids))


def test_dashboard_references_only_metrics_from_the_design(
    design_metric_names: frozenset[str],
) -> None:
    referenced = {
        name: where
        for where, expr in _panel_exprs() + [(f"variable {q}", q) for q in _variable_queries()]
        for name in METRIC_NAME.findall(expr)
    }
    unknown = {name: where for name, where in referenced.items() if name not in design_metric_names}
    assert unknown == {}


def test_dashboard_shows_job_state_durations_deadlines_runs_and_exporter_health() -> None:
    used = {name for _, expr in _panel_exprs() for name in METRIC_NAME.findall(expr)}
    expected = {
        "cronjobs",
        "cronjobs_failing",
        "cronjob_status_reason",
        "cronjob_last_duration_seconds",
        "cronjob_last_success_timestamp_seconds",
        "cronjob_deadline_timestamp_seconds",
        "cronjob_runs_total",
        "cronjob_failures_total",
        "cronmetrics_config_last_reload_successful",
        "cronmetrics_snapshot_last_success_timestamp_seconds",
        "cronmetrics_build_info",
    }
    assert expected - used == set()


def test_dashboard_queries_use_the_datasource_variable() -> None:
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{n}", "expr": _as_promql(expr)}
        for n, (_, expr) in enumerate(_panel_exprs())
    ]
    assert rules, "no queries found in the dashboard"
    rule_file = tmp_path / "dashboard-queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("query", _variable_queries())
def test_dashboard_variables_are_label_values_queries(query: str) -> None:
    assert re.fullmatch(r"label_values\((?:\w+(?:\{[^}]*\})?, )?\w+\)", query), query
