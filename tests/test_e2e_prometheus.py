"""End to end: ``cronmetrics serve`` scraped by a real Prometheus, asserted through its API."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from liveserver import LiveServer, free_port
from liveserver import wait_for as _wait_for

from cronmetrics.testing import stop_process

pytestmark = pytest.mark.slow

WAIT = 45.0  # seconds; Prometheus scrapes every second, so this is only a safety net


@contextlib.contextmanager
def prometheus(binary: str, target_port: int, workdir: Path) -> Iterator[str]:
    """A Prometheus scraping ``127.0.0.1:target_port`` every second; yields its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: cronmetrics\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: _ready(url, process, log_path),
            f"prometheus ready ({log_path})",
        )
        yield url
    finally:
        stop_process(process, timeout=15)


def _ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"prometheus exited ({process.returncode}):\n{log_path.read_text()}")
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    return False


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    return _wait_for(check, what, timeout=timeout, interval=0.2)


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def value_of(prom: str, expr: str) -> float | None:
    result = query(prom, expr)
    if len(result) != 1:
        return None
    return float(result[0]["value"][1])


def eventually_equals(prom: str, expr: str, expected: float) -> None:
    wait_for(lambda: value_of(prom, expr) == expected, f"{expr} == {expected}")


def submit(server: LiveServer, body: Any) -> None:
    response = httpx.post(f"{server.url}/api/job-result", json=body, timeout=10)
    assert response.status_code == 200, response.text


def test_prometheus_scrapes_the_right_values(
    server: LiveServer, prometheus_bin: str, tmp_path: Path
) -> None:
    submit(
        server,
        [
            {"job_name": "home_rsync", "host": "web5", "status": "success", "duration": 27},
            {
                "job_name": "logrotate",
                "host": "web1",
                "status": "failure",
                "exit_code": 1,
                "duration": 3.5,
            },
            {"job_name": "cert_renew", "status": "start"},
        ],
    )
    with prometheus(prometheus_bin, server.port, tmp_path / "prom") as prom:
        eventually_equals(prom, 'up{job="cronmetrics"}', 1)
        eventually_equals(prom, 'cronjob_status{job_name="home_rsync"}', 1)
        eventually_equals(prom, 'cronjob_status_reason{job_name="home_rsync",reason="ok"}', 1)
        eventually_equals(prom, 'cronjob_last_duration_seconds{job_name="home_rsync"}', 27)
        eventually_equals(prom, 'cronjob_status{job_name="logrotate",host="web1"}', 0)
        eventually_equals(prom, 'cronjob_status_reason{job_name="logrotate",reason="failed"}', 1)
        eventually_equals(prom, 'cronjob_last_exit_code{job_name="logrotate"}', 1)
        eventually_equals(prom, 'cronjob_last_duration_seconds{job_name="logrotate"}', 3.5)
        eventually_equals(prom, 'cronjob_status_reason{job_name="cert_renew",reason="running"}', 1)
        eventually_equals(prom, 'cronjob_running{job_name="cert_renew"}', 1)
        eventually_equals(prom, 'cronjob_status{job_name="legacy_report",status="paused"}', -1)
        eventually_equals(prom, 'cronjobs{status="paused"}', 1)
        eventually_equals(prom, "count(cronjob_status)", 8)
        eventually_equals(prom, 'cronjobs_failing{job="cronmetrics"}', 1)
        eventually_equals(prom, 'cronjob_runs_total{job_name="logrotate"}', 1)

        # exported labels arrive as they are (no exported_ prefixes, no clash with job)
        series = query(prom, 'cronjob_status{job_name="logrotate"}')[0]["metric"]
        assert series["host"] == "web1"
        assert series["env"] == "prod"
        assert series["team"] == "platform"
        assert series["job"] == "cronmetrics"
        assert series["instance"] == f"127.0.0.1:{server.port}"
        assert not any(name.startswith("exported_") for name in series)
        agnostic = query(prom, 'cronjob_status{job_name="home_rsync"}')[0]["metric"]
        assert "host" not in agnostic  # an empty label is no label in Prometheus

        # a new submission shows up on the next scrapes
        submit(server, {"job_name": "logrotate", "host": "web1", "status": "success"})
        eventually_equals(prom, 'cronjob_status{job_name="logrotate",host="web1"}', 1)
        eventually_equals(prom, 'cronjob_consecutive_failures{job_name="logrotate"}', 0)
        eventually_equals(prom, 'cronjob_runs_total{job_name="logrotate"}', 2)


def test_live_metrics_pass_promtool(server: LiveServer, promtool: str) -> None:
    submit(server, {"job_name": "home_rsync", "status": "failure", "exit_code": 2})
    for headers in ({}, {"Accept-Encoding": "gzip"}):
        response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)
        assert response.status_code == 200
        proc = subprocess.run(
            [promtool, "check", "metrics"],
            input=response.content,  # httpx has already undone the gzip
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
        assert b'reason="failed"' in response.content
