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
    assert body["failing"] == []
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


def test_deep_health_fails_on_an_invalid_job_file(make_client: Any) -> None:
    jobs = {**GOOD, "broken.yaml": "job_name: b\nautomatic_failure_treshold: 60\n"}
    client = make_client(jobs)
    response = client.get("/health/deep")
    assert response.status_code == 503
    body = response.get_json()
    assert body["failing"] == ["reload"]
    assert "broken.yaml" in body["checks"]["reload"]["detail"]
    # liveness is unaffected, and the valid job is still served
    assert client.get("/health").status_code == 200
    assert client.get("/api/job/a").status_code == 200


def test_deep_health_fails_when_the_jobs_dir_disappears(make_client: Any, tmp_path: Path) -> None:
    client = make_client(GOOD)
    (tmp_path / "jobs.d" / "a.yaml").unlink()
    (tmp_path / "jobs.d").rmdir()
    response = client.get("/health/deep")
    assert response.status_code == 503
    assert "jobs_dir" in response.get_json()["failing"]


def test_deep_health_runs_registered_checks(make_client: Any) -> None:
    client = make_client(GOOD)
    svc = services(client.application)
    svc.health_checks["journal"] = lambda: (False, "disk full")
    response = client.get("/health/deep")
    assert response.status_code == 503
    body = response.get_json()
    assert "journal" in body["failing"]
    assert body["checks"]["journal"] == {"ok": False, "detail": "disk full"}


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
