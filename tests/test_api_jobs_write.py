"""``POST /api/job`` and ``PUT/PATCH/DELETE /api/job/<id>``: files, errors, live effect."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronmetrics import fileio
from cronmetrics.web.app import services
from cronmetrics.web.auth import hash_token

HAND_WRITTEN = """\
# Weekly base backup. Ask #dba before changing.
job_name: postgres_basebackup
host: db1
schedule: "0 3 * * SUN"      # weekly, Sunday 03:00 UTC
grace: 1800
labels:
  env: prod   # paged
  team: dba
"""
JOB = "postgres_basebackup@db1"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry below ``root`` with its bytes; the writers' lock file is not content."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.name != fileio.LOCK_NAME
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs.d"
    (jobs / "dba").mkdir(parents=True)
    (jobs / "dba" / "basebackup.yaml").write_text(HAND_WRITTEN)
    return jobs


@pytest.fixture
def client(make_client: Any, root: Path) -> FlaskClient:
    c: FlaskClient = make_client(root)
    return c


def metrics(client: FlaskClient) -> str:
    return client.get("/metrics").get_data(as_text=True)


def test_post_creates_file_answers_201_with_location_and_is_live(
    client: FlaskClient, root: Path
) -> None:
    body = {"job_name": "backup", "host": "db2", "automatic_failure_threshold": 600}
    response = client.post("/api/job", json={**body, "labels": {"env": "prod"}})
    assert response.status_code == 201, response.get_json()
    assert response.headers["Location"] == "/api/job/backup@db2"
    assert response.get_json()["id"] == "backup@db2"
    assert response.get_json()["file"] == "backup@db2.yaml"
    assert (root / "backup@db2.yaml").read_text() == (
        "job_name: backup\nhost: db2\nautomatic_failure_threshold: 600\nlabels:\n  env: prod\n"
    )
    assert client.get("/api/job/backup@db2").status_code == 200
    assert 'cronjob_status{job_name="backup",host="db2"' in metrics(client)


def test_post_of_existing_id_is_409_and_changes_nothing(client: FlaskClient, root: Path) -> None:
    before = snapshot(root)
    body = {"job_name": "postgres_basebackup", "host": "db1", "automatic_failure_threshold": 9}
    response = client.post("/api/job", json=body)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "CONFLICT"
    assert "dba/basebackup.yaml" in response.get_json()["error"]["message"]
    assert snapshot(root) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"job_name": "x", "automatic_failure_treshold": 60}, "automatic_failure_treshold"),
        ({"job_name": "x", "automatic_failure_threshold": "60"}, "automatic_failure_threshold"),
        ({"job_name": "x"}, None),  # neither threshold nor schedule
        ({"job_name": "x y", "automatic_failure_threshold": 60}, "job_name"),
        ({"job_name": "x", "schedule": "61 * * * *"}, "schedule"),
        ({"job_name": "x", "schedule": "@daily", "labels": {"__x": "1"}}, "labels.__x"),
        ({"job_name": "x", "schedule": "@daily", "labels": {"env": 1}}, "labels.env"),
        ({"automatic_failure_threshold": 60}, "job_name"),
    ],
)
def test_post_invalid_body_is_400_naming_the_field_and_writes_nothing(
    client: FlaskClient, root: Path, body: dict[str, Any], field: str | None
) -> None:
    before = snapshot(root)
    response = client.post("/api/job", json=body)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["field"] == field
    assert snapshot(root) == before


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        ("{not json", "application/json", 400),
        ("[1, 2]", "application/json", 400),
        ("job_name: x", "application/yaml", 415),
        ("", "application/json", 400),
    ],
)
def test_post_malformed_body_is_refused_and_writes_nothing(
    client: FlaskClient, root: Path, data: str, content_type: str, status: int
) -> None:
    before = snapshot(root)
    response = client.post("/api/job", data=data, content_type=content_type)
    assert response.status_code == status
    assert "error" in response.get_json()
    assert snapshot(root) == before


def test_put_replaces_keeping_comments_of_the_hand_written_file(
    client: FlaskClient, root: Path
) -> None:
    doc = {
        "job_name": "postgres_basebackup",
        "host": "db1",
        "schedule": "0 3 * * SUN",
        "grace": 3600,
        "labels": {"env": "prod", "team": "dba"},
    }
    response = client.put(f"/api/job/{JOB}", json=doc)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["grace"] == 3600
    text = (root / "dba" / "basebackup.yaml").read_text()
    assert text == HAND_WRITTEN.replace("grace: 1800", "grace: 3600")


def test_put_accepts_what_get_returned(client: FlaskClient, root: Path) -> None:
    """A GET -> edit -> PUT round trip works: read-only fields and nulls are not content."""
    job = client.get(f"/api/job/{JOB}").get_json()
    job["description"] = "weekly"
    response = client.put(f"/api/job/{JOB}", json=job)
    assert response.status_code == 200, response.get_json()
    text = (root / "dba" / "basebackup.yaml").read_text()
    assert text.startswith("# Weekly base backup. Ask #dba before changing.\n")
    assert "  env: prod   # paged\n" in text
    assert text.endswith("description: weekly\n")
    assert "state" not in text and "null" not in text


def test_patch_merges_and_keeps_comments(client: FlaskClient, root: Path) -> None:
    response = client.patch(
        f"/api/job/{JOB}", json={"status": "maintenance", "labels": {"team": None, "tier": "1"}}
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["state"]["status"] == "maintenance"
    assert (root / "dba" / "basebackup.yaml").read_text() == (
        "# Weekly base backup. Ask #dba before changing.\n"
        "job_name: postgres_basebackup\n"
        "host: db1\n"
        'schedule: "0 3 * * SUN"      # weekly, Sunday 03:00 UTC\n'
        "grace: 1800\n"
        "labels:\n"
        "  env: prod   # paged\n"
        "  tier: '1'\n"
        "status: maintenance\n"
    )
    assert 'status="maintenance"' in metrics(client)


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("patch", {"host": "db9"}, "host"),
        ("patch", {"job_name": "other"}, "job_name"),
        ("patch", {"grace": -1}, "grace"),
        ("patch", {"shedule": "@daily"}, "shedule"),
        ("put", {"job_name": "postgres_basebackup", "host": "db1"}, None),
        ("put", {"job_name": "postgres_basebackup", "schedule": "@daily"}, "host"),
    ],
)
def test_invalid_edit_is_400_and_leaves_the_file_alone(
    client: FlaskClient, root: Path, method: str, body: dict[str, Any], field: str | None
) -> None:
    before = snapshot(root)
    response = getattr(client, method)(f"/api/job/{JOB}", json=body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["field"] == field
    assert snapshot(root) == before


def test_results_survive_an_edit_of_the_definition(client: FlaskClient) -> None:
    client.post(
        "/api/job-result",
        json={"job_name": "postgres_basebackup", "host": "db1", "status": "success", "duration": 5},
    )
    client.patch(f"/api/job/{JOB}", json={"grace": 60})
    state = client.get(f"/api/job/{JOB}").get_json()["state"]
    assert state["runs_total"] == 1
    assert state["last_duration"] == 5


def test_delete_removes_file_job_and_series(client: FlaskClient, root: Path) -> None:
    assert client.delete(f"/api/job/{JOB}").status_code == 204
    assert not (root / "dba" / "basebackup.yaml").exists()
    assert client.get(f"/api/job/{JOB}").status_code == 404
    assert "postgres_basebackup" not in metrics(client)
    assert client.delete(f"/api/job/{JOB}").status_code == 404


@pytest.mark.parametrize("job_id", ["a..b", "a%00b", "a@b@c", "bad%20id"])
def test_malformed_ids_in_urls_are_400(client: FlaskClient, job_id: str) -> None:
    response = client.delete(f"/api/job/{job_id}")
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "id"


def test_read_only_jobs_dir_is_409_saying_so_and_reads_still_work(
    client: FlaskClient, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a ConfigMap mount answers: the write fails with EROFS (simulated: we run as root)."""

    def erofs(path: Path, data: bytes, *, mode: int | None = None) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(fileio, "atomic_write", erofs)
    before = snapshot(root)
    response = client.patch(f"/api/job/{JOB}", json={"grace": 60})
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "READ_ONLY"
    assert "read-only" in error["message"] and "git" in error["message"]
    created = client.post("/api/job", json={"job_name": "n", "automatic_failure_threshold": 6})
    assert created.get_json()["error"]["code"] == "READ_ONLY"
    assert snapshot(root) == before
    assert client.get(f"/api/job/{JOB}").status_code == 200
    submitted = client.post(
        "/api/job-result",
        json={"job_name": "postgres_basebackup", "host": "db1", "status": "success"},
    )
    assert submitted.status_code < 300


def test_writes_need_the_admin_scope_for_that_job(make_client: Any, root: Path) -> None:
    tokens = [
        {"name": "reader", "sha256": hash_token("r" * 32), "scopes": ["read", "submit"]},
        {
            "name": "backups",
            "sha256": hash_token("b" * 32),
            "scopes": ["admin"],
            "jobs": ["backup*"],
        },
    ]
    client = make_client(root, no_auth=False, auth={"tokens": tokens})
    reader = {"Authorization": "Bearer " + "r" * 32}
    backups = {"Authorization": "Bearer " + "b" * 32}
    body = {"job_name": "backup_x", "automatic_failure_threshold": 60}
    assert client.post("/api/job", json=body).status_code == 401
    assert client.post("/api/job", json=body, headers=reader).status_code == 403
    assert client.patch(f"/api/job/{JOB}", json={"grace": 1}, headers=backups).status_code == 403
    other = {"job_name": "cleanup", "automatic_failure_threshold": 60}
    assert client.post("/api/job", json=other, headers=backups).status_code == 403
    assert client.post("/api/job", json=body, headers=backups).status_code == 201
    assert not (root / "cleanup.yaml").exists()


def test_api_write_reloads_once_and_leaves_nothing_for_the_watcher(
    client: FlaskClient, root: Path
) -> None:
    svc = services(client.application)
    reloads = svc.jobs_dir.reloads
    client.patch(f"/api/job/{JOB}", json={"grace": 60})
    assert svc.jobs_dir.reloads == reloads + 1
    assert svc.jobs_dir.is_current(root / "dba" / "basebackup.yaml")


def test_job_writes_disabled_is_409_and_writes_nothing(make_client: Any, root: Path) -> None:
    client = make_client(root, job_writes="disabled")
    before = snapshot(root)
    response = client.patch(f"/api/job/{JOB}", json={"grace": 60})
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "READ_ONLY"
    assert "job_writes: disabled" in error["message"]
    assert client.delete(f"/api/job/{JOB}").status_code == 409
    assert snapshot(root) == before
    assert client.get(f"/api/job/{JOB}").status_code == 200
