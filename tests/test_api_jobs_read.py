"""``GET /api/job`` (filters) and ``GET /api/job/<id>``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock
from flask.testing import FlaskClient

RICH = Path(__file__).resolve().parent / "data" / "jobs_rich"


@pytest.fixture
def client(make_client: Any, fake_clock: FakeClock) -> FlaskClient:
    c: FlaskClient = make_client(RICH, unknown_jobs="accept")
    c.post("/api/job-result", json={"job_name": "failed_job", "host": "db1", "status": "failure"})
    c.post("/api/job-result", json={"job_name": "ok_job", "status": "success"})
    c.post("/api/job-result", json={"job_name": "adhoc", "host": "h9", "status": "success"})
    fake_clock.advance(120)  # missed_job / never_job (60 s thresholds) are failing now
    return c


def ids(client: FlaskClient, query: str = "") -> list[str]:
    response = client.get(f"/api/job{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["count"] == len(body["jobs"])
    return [job["id"] for job in body["jobs"]]


def test_list_returns_every_job_sorted_with_state(client: FlaskClient) -> None:
    got = ids(client)
    assert got == sorted(got)
    assert len(got) == 14  # 13 files (retired included) + the unmanaged one
    assert "retired_job" in got


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("paused", ["paused_job"]),
        ("maintenance", ["maint_job@db2", "maint_until_job"]),
        ("retired", ["retired_job"]),
        ("failing", ["failed_job@db1", "missed_job", "never_job"]),
    ],
)
def test_filter_by_status(client: FlaskClient, status: str, expected: list[str]) -> None:
    assert ids(client, f"?status={status}") == expected


def test_filter_ok_and_active(client: FlaskClient) -> None:
    ok = ids(client, "?status=ok")
    assert "ok_job" in ok
    assert "failed_job@db1" not in ok
    active = ids(client, "?status=active")
    assert "paused_job" not in active
    assert "failed_job@db1" in active


def test_unknown_status_filter_is_400(client: FlaskClient) -> None:
    response = client.get("/api/job?status=broken")
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "status"


def test_filter_by_host(client: FlaskClient) -> None:
    assert ids(client, "?host=db1") == ["failed_job@db1", "weird.labels-job@db1"]


def test_filter_by_labels_all_must_match(client: FlaskClient) -> None:
    assert ids(client, "?label=team=dba&label=env=dev") == ["pending_job"]
    assert len(ids(client, "?label=team=dba")) == 4
    assert ids(client, "?label=team=nobody") == []


def test_label_filter_value_may_contain_equals_and_unicode(client: FlaskClient) -> None:
    assert ids(
        client, "?label=unicode=Z%C3%BCrich%20%E2%98%83%20%E6%97%A5%E6%9C%AC%20%F0%9F%9A%80"
    ) == ["weird.labels-job@db1"]


def test_malformed_label_filter_is_400(client: FlaskClient) -> None:
    response = client.get("/api/job?label=team")
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "label"


def test_q_searches_id_and_description_case_insensitively(client: FlaskClient) -> None:
    assert ids(client, "?q=BERLIN") == ["scheduled_job"]
    assert ids(client, "?q=maint") == ["maint_job@db2", "maint_until_job"]


def test_filters_combine(client: FlaskClient) -> None:
    assert ids(client, "?status=failing&label=team=dba&host=db1") == ["failed_job@db1"]


def test_get_job_shows_definition_file_and_state(client: FlaskClient) -> None:
    response = client.get("/api/job/failed_job@db1")
    assert response.status_code == 200
    job = response.get_json()
    assert job["id"] == "failed_job@db1"
    assert job["host"] == "db1"
    assert job["labels"] == {"env": "prod", "team": "dba"}
    assert job["file"] == "failed_job.yaml"
    assert job["unmanaged"] is False
    assert job["state"]["reason"] == "failed"
    assert job["state"]["value"] == 0
    assert job["state"]["runs_total"] == 1


def test_get_unmanaged_job(client: FlaskClient) -> None:
    job = client.get("/api/job/adhoc@h9").get_json()
    assert job["unmanaged"] is True
    assert job["file"] is None


def test_get_unknown_job_is_404(client: FlaskClient) -> None:
    response = client.get("/api/job/nothing")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"


def test_get_job_state_follows_the_clock_without_a_scrape(
    client: FlaskClient, fake_clock: FakeClock
) -> None:
    assert client.get("/api/job/ok_job").get_json()["state"]["reason"] == "ok"
    fake_clock.advance(3600)
    assert client.get("/api/job/ok_job").get_json()["state"]["reason"] == "missed deadline"
