"""``/health`` (liveness) and ``/health/deep`` (readiness, 503 naming the failing check)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cronmetrics.web.app import services

GOOD = {"a.yaml": "job_name: a\nautomatic_failure_threshold: 60\n"}


def test_health_is_ok(make_client: Any) -> None:
    response = make_client(GOOD).get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_deep_health_is_ok_when_everything_is(make_client: Any) -> None:
    response = make_client(GOOD).get("/health/deep")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["failing"] == body["warnings"] == []
    assert {"jobs_dir", "state_dir", "reload"} <= set(body["checks"])


def test_deep_health_fails_when_the_state_dir_is_not_writable(
    make_client: Any, tmp_path: Path
) -> None:
    # a file where the directory should be: unwritable even for root
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    response = make_client(GOOD, state_dir=blocker).get("/health/deep")
    assert response.status_code == 503
    body = response.get_json()
    assert body["failing"] == ["state_dir", "store"]  # and so results live in memory only
    assert "in memory only" in body["checks"]["store"]["detail"]
    assert str(blocker) in body["checks"]["state_dir"]["detail"]


def test_an_invalid_job_file_keeps_the_server_ready_and_shows_in_the_body(
    make_client: Any,
) -> None:
    """One merged typo must not pull every replica out of the load balancer: the last
    good definitions stay live, so the server can serve; the body and /metrics say why."""
    jobs = {**GOOD, "broken.yaml": "job_name: b\nautomatic_failure_treshold: 60\n"}
    client = make_client(jobs)
    response = client.get("/health/deep")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["failing"], body["warnings"]) == ("degraded", [], ["reload"])
    reload = body["checks"]["reload"]
    assert (reload["ok"], reload["critical"]) == (False, False)
    assert "broken.yaml" in reload["detail"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "cronmetrics_config_invalid_files 1.0" in metrics
    assert "cronmetrics_config_last_reload_successful 0.0" in metrics
    assert client.get("/api/job/a").status_code == 200


def test_the_shipped_alert_fires_on_invalid_job_files() -> None:
    """Readiness no longer carries invalid files, so the alert must."""
    from conftest import REPO_ROOT

    from cronmetrics.jobs.yamlio import load_fast

    rules = load_fast((REPO_ROOT / "docs" / "alerts.yaml").read_text())
    exprs = [r.get("expr", "") for g in rules["groups"] for r in g["rules"]]
    assert any(
        "cronmetrics_config_invalid_files" in e or "cronmetrics_config_last_reload_successful" in e
        for e in exprs
    )


def test_deep_health_fails_when_the_jobs_dir_disappears(make_client: Any, tmp_path: Path) -> None:
    client = make_client(GOOD)
    (tmp_path / "jobs.d" / "a.yaml").unlink()
    (tmp_path / "jobs.d").rmdir()
    response = client.get("/health/deep")
    assert response.status_code == 503
    body = response.get_json()
    assert "jobs_dir" in body["failing"]
    assert "cannot be read" in body["checks"]["jobs_dir"]["detail"]


def test_deep_health_fails_when_the_jobs_dir_is_not_a_directory(
    make_client: Any, tmp_path: Path
) -> None:
    client = make_client(GOOD)
    (tmp_path / "jobs.d" / "a.yaml").unlink()
    (tmp_path / "jobs.d").rmdir()
    (tmp_path / "jobs.d").write_text("")  # a file in its place: unreadable as a dir, even as root
    response = client.get("/health/deep")
    assert response.status_code == 503
    assert response.get_json()["failing"] == ["jobs_dir"]


def test_deep_health_runs_registered_checks(make_client: Any) -> None:
    client = make_client(GOOD)
    svc = services(client.application)
    svc.health_checks["journal"] = lambda: (False, "disk full")
    response = client.get("/health/deep")
    assert response.status_code == 503
    body = response.get_json()
    assert "journal" in body["failing"]
    assert body["checks"]["journal"] == {"ok": False, "detail": "disk full", "critical": True}


def test_deep_health_reports_a_stopped_scheduler(make_client: Any) -> None:
    from cronmetrics.scheduler import Scheduler

    client = make_client(GOOD)
    svc = services(client.application)
    svc.scheduler = Scheduler(svc.monitor, svc.clock)  # created but never started
    response = client.get("/health/deep")
    assert response.status_code == 503
    assert response.get_json()["failing"] == ["scheduler"]


def test_a_first_start_creates_the_state_dir_private_and_is_ready(make_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "fresh" / "cronmetrics"
    client = make_client(
        {"a.yaml": "job_name: a\nautomatic_failure_threshold: 60\n"}, state_dir=state
    )
    assert state.is_dir()
    assert state.stat().st_mode & 0o777 == 0o700
    r = client.get("/health/deep")
    assert r.json["checks"]["state_dir"]["ok"] is True
