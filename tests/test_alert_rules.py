"""docs/alerts.yaml: valid for Prometheus, unit tested with promtool, true to the metric names."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
RULES = REPO_ROOT / "docs" / "alerts.yaml"
RULE_TESTS = REPO_ROOT / "tests" / "data" / "alerts_test.yaml"
GUIDE = REPO_ROOT / "docs" / "prometheus.md"
METRIC_NAME = re.compile(r"\b(?:cronjob[s_]\w*|cronmetrics_\w*)")


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _alert_names() -> list[str]:
    return [rule["alert"] for rule in _rules() if "alert" in rule]


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )


def test_alert_rules_pass_promtool_check_rules(promtool: str) -> None:
    proc = _promtool(promtool, "check", "rules", str(RULES.relative_to(REPO_ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_rules_pass_their_promtool_unit_tests(promtool: str) -> None:
    proc = _promtool(promtool, "test", "rules", str(RULE_TESTS.relative_to(REPO_ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_show_every_alert_firing_and_not_firing() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = set(_alert_names())
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown not firing"
    assert (firing | quiet) - alerts == set(), "tests for alerts that do not exist"


def test_alert_rules_reference_only_metrics_from_the_design(
    design_metric_names: frozenset[str],
) -> None:
    referenced: set[str] = set()
    for rule in _rules():
        texts = [str(rule["expr"]), *map(str, rule.get("annotations", {}).values())]
        for text in texts:
            referenced.update(METRIC_NAME.findall(text))
    assert referenced, "no cronmetrics metric found in the rules"
    assert referenced - design_metric_names == set()


@pytest.mark.parametrize("alert", _alert_names())
def test_every_alert_has_a_severity_a_summary_and_a_description(alert: str) -> None:
    rule = next(r for r in _rules() if r.get("alert") == alert)
    assert rule["labels"]["severity"]
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]


def test_job_alerts_never_select_by_the_prometheus_job_label() -> None:
    # The exporter's per-job label is job_name; `job` is Prometheus' scrape job.
    for rule in _rules():
        if str(rule["expr"]).lstrip().startswith("cronjob"):
            assert not re.search(r"\bjob\s*=", str(rule["expr"])), rule["alert"]


def test_prometheus_guide_config_passes_promtool_and_loads_these_rules(
    promtool: str, tmp_path: Path
) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    config = next(b for b in blocks if "scrape_configs:" in b)
    parsed = yaml.safe_load(config)
    (scrape,) = [s for s in parsed["scrape_configs"] if s["job_name"] == "cronmetrics"]
    assert not scrape.get("honor_labels", False)
    # The files it names must exist for promtool: the rules become this repo's alerts.yaml.
    for path in sorted(set(re.findall(r"/etc/prometheus/\S+", config))):
        local = tmp_path / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        is_rules = path in parsed["rule_files"]
        local.write_text(RULES.read_text() if is_rules else "token\n")
        config = config.replace(path, str(local))
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(config)
    proc = _promtool(promtool, "check", "config", str(config_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(_rules())} rules found" in proc.stdout + proc.stderr
