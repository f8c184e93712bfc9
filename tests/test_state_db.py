"""state.db in the corner cases: damaged files, read-only and full disks, retries, files
that blink, backups while results stream in. The app tests use ``make_client``; the ones
marked slow run a real ``cronmetrics serve``."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import FakeClock
from flask.testing import FlaskClient
from liveserver import live_server, wait_for

from cronmetrics.cli.main import cli
from cronmetrics.errors import StorageError
from cronmetrics.storage import database as database_mod
from cronmetrics.storage import schema as schema_mod
from cronmetrics.web.app import services

JOBS = {
    "backup.yaml": "job_name: backup\nautomatic_failure_threshold: 3600\n",
    "other.yaml": "job_name: other\nautomatic_failure_threshold: 3600\n",
}


class _Answer:
    def __init__(self, response: Any) -> None:
        self.status_code, self.ok = response.status_code, response.status_code == 200
        self._json = response.get_json()

    def get_json(self) -> Any:
        return self._json


def submit(client: FlaskClient, body: Any) -> _Answer:
    return _Answer(client.post("/api/job-result", json=body))


def run_ids(client: FlaskClient, job: str) -> list[str]:
    response = client.get(f"/api/job/{job}/results?limit=200")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [r["run_id"] for r in response.get_json()["results"]]


def fallback_metric(client: FlaskClient) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith("cronmetrics_snapshot_restore_fallback "):
            return float(line.split()[1])
    raise AssertionError("no cronmetrics_snapshot_restore_fallback")


def written(make_client: Any) -> Path:
    """A state dir whose state.db holds two results of backup."""
    client = make_client(JOBS)
    for i in range(2):
        assert submit(client, {"job_name": "backup", "status": "success", "run_id": f"r{i}"}).ok
    services(client.application).store.close()
    return Path(services(client.application).config.state_dir)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_database_is_set_aside_and_the_server_starts_empty_saying_so(
    make_client: Any, damage: str, capfd: pytest.CaptureFixture[str]
) -> None:
    state = written(make_client)
    db = state / "state.db"
    data = db.read_bytes()
    assert len(data) > 8192
    db.write_bytes(b"\x00garbage" * 512 if damage == "garbage" else data[: len(data) // 3])
    again = make_client(JOBS)
    assert run_ids(again, "backup") == []
    assert fallback_metric(again) == 1
    body = again.get("/health/deep").get_json()
    assert body["checks"]["store"]["ok"] is False
    assert "EMPTY" in body["checks"]["store"]["detail"]
    logged = capfd.readouterr().err
    assert "set aside" in logged and "EMPTY" in logged
    aside = [p.name for p in state.iterdir() if ".corrupt-" in p.name]
    assert aside and all(p.startswith("state.db.corrupt-") for p in aside)
    # the new database works: results are kept again
    assert submit(again, {"job_name": "backup", "status": "success", "run_id": "new"}).ok
    services(again.application).store.close()
    assert run_ids(make_client(JOBS), "backup") == ["new"]


def test_a_missing_database_is_a_fresh_start_not_a_fallback(make_client: Any) -> None:
    client = make_client(JOBS)
    assert fallback_metric(client) == 0
    assert client.get("/health/deep").get_json()["checks"]["store"]["ok"] is True


def test_a_read_only_state_dir_serves_from_memory_and_fails_readiness(
    make_client: Any, tmp_path: Path
) -> None:
    state = tmp_path / "ro-state"
    state.mkdir()
    state.chmod(0o500)
    try:
        if os.access(state, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions")
        client = make_client(JOBS, state_dir=state)
        assert submit(client, {"job_name": "backup", "status": "success", "run_id": "m"}).ok
        assert run_ids(client, "backup") == ["m"]
        response = client.get("/health/deep")
        assert response.status_code == 503
        assert "in memory only" in response.get_json()["checks"]["store"]["detail"]
    finally:
        state.chmod(0o700)


def test_a_full_disk_refuses_a_journaled_batch_whole_and_keeps_serving(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(JOBS, snapshot={"journal": True})
    assert submit(client, {"job_name": "backup", "status": "success", "run_id": "before"}).ok
    real = database_mod.Database.write

    def disk_full(self: Any, writes: Any) -> None:
        raise StorageError(f"cannot write {self.path}: database or disk is full")

    monkeypatch.setattr(database_mod.Database, "write", disk_full)
    batch = [{"job_name": "backup", "status": "success", "run_id": f"b{i}"} for i in range(50)]
    response = submit(client, batch)
    assert response.status_code == 503
    assert "disk is full" in response.get_json()["error"]["message"]
    assert run_ids(client, "backup") == ["before"]  # nothing of the batch, in memory either
    assert client.get("/api/job/backup").get_json()["state"]["runs_total"] == 1
    assert client.get("/health/deep").get_json()["checks"]["store"]["ok"] is False
    monkeypatch.setattr(database_mod.Database, "write", real)
    assert submit(client, batch).ok  # the client's retry: all of it, once
    assert len(run_ids(client, "backup")) == 51
    assert client.get("/health/deep").get_json()["checks"]["store"]["ok"] is True


def test_a_failed_periodic_write_keeps_everything_for_the_next_one(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(JOBS)
    svc = services(client.application)
    assert svc.persistence is not None
    assert submit(client, {"job_name": "backup", "status": "success", "run_id": "a"}).ok
    real = database_mod.Database.write

    def eio(self: Any, writes: Any) -> None:
        raise StorageError(f"cannot write {self.path}: disk I/O error")

    monkeypatch.setattr(database_mod.Database, "write", eio)
    assert svc.persistence.write() is False
    assert client.get("/health/deep").get_json()["checks"]["store"]["ok"] is False
    assert submit(client, {"job_name": "backup", "status": "success", "run_id": "b"}).ok
    monkeypatch.setattr(database_mod.Database, "write", real)
    assert svc.persistence.write() is True
    with sqlite3.connect(svc.config.state_dir / "state.db") as other:
        rows = other.execute("SELECT run_id FROM results_view ORDER BY id").fetchall()
    assert rows == [("a",), ("b",)]
    assert client.get("/health/deep").get_json()["checks"]["store"]["ok"] is True


def test_the_same_run_id_twice_is_acknowledged_and_counted_once(make_client: Any) -> None:
    client = make_client(JOBS)
    body = {"job_name": "backup", "status": "success", "run_id": "retry-1"}
    first, second = submit(client, body), submit(client, body)
    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json()
    assert run_ids(client, "backup") == ["retry-1"]
    assert client.get("/api/job/backup").get_json()["state"]["runs_total"] == 1


def test_a_restart_with_an_invalid_file_keeps_serving_its_last_good_definition(
    make_client: Any, tmp_path: Path
) -> None:
    client = make_client(JOBS)
    assert submit(client, {"job_name": "backup", "status": "success", "run_id": "x"}).ok
    services(client.application).store.close()
    (tmp_path / "jobs.d" / "backup.yaml").write_text(
        "job_name: backup\nautomatic_failure_threshold: [\n"
    )
    again = make_client(tmp_path / "jobs.d")
    job = again.get("/api/job/backup")
    assert job.status_code == 200, job.get_data(as_text=True)
    assert job.get_json()["automatic_failure_threshold"] == 3600
    assert run_ids(again, "backup") == ["x"]


def test_the_api_delete_drops_a_job_at_once(make_client: Any, fake_clock: FakeClock) -> None:
    client = make_client(JOBS)
    assert submit(client, {"job_name": "other", "status": "success"}).ok
    assert client.delete("/api/job/other").status_code == 204
    store = services(client.application).store
    assert store.state("other") is None


# -- a real server ---------------------------------------------------------------------------


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    root = tmp_path / "jobs.d"
    root.mkdir()
    for name, text in JOBS.items():
        (root / name).write_text(text)
    return root


@pytest.mark.slow
def test_a_file_removed_and_put_back_keeps_its_history_and_counters(
    jobs: Path, tmp_path: Path
) -> None:
    env = {"CRONMETRICS_WATCH__DEBOUNCE": "0.05"}
    with (
        live_server(jobs, tmp_path / "state", env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        for i in range(3):
            body = {"job_name": "backup", "status": "success", "run_id": f"r{i}"}
            assert http.post("/api/job-result", json=body).status_code == 200
        text = (jobs / "backup.yaml").read_text()
        (jobs / "backup.yaml").unlink()  # a git checkout, a ConfigMap swap
        wait_for(lambda: http.get("/api/job/backup").status_code == 404, "the job to go")
        assert 'cronjob_runs_total{job_name="backup"' not in http.get("/metrics").text
        (jobs / "backup.yaml").write_text(text)
        wait_for(lambda: http.get("/api/job/backup").status_code == 200, "the job to return")
        assert http.get("/api/job/backup").json()["state"]["runs_total"] == 3
        results = http.get("/api/job/backup/results").json()["results"]
        assert [r["run_id"] for r in results] == ["r2", "r1", "r0"]


@pytest.mark.slow
def test_a_retried_report_counts_once_on_a_real_server(jobs: Path, tmp_path: Path) -> None:
    env = {"CRONMETRICS_SNAPSHOT__JOURNAL": "true"}
    with (
        live_server(jobs, tmp_path / "state", env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        body = {"job_name": "backup", "status": "failure", "exit_code": 2, "run_id": "cron-42"}
        answers = [http.post("/api/job-result", json=body) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert len({a.text for a in answers}) == 1
        state = http.get("/api/job/backup").json()["state"]
        assert (state["runs_total"], state["failures_total"]) == (1, 1)


@pytest.mark.slow
def test_a_backup_while_results_stream_in_is_a_valid_database(jobs: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {"CRONMETRICS_SNAPSHOT__INTERVAL": "0.5"}
    stop = threading.Event()
    sent = [0]

    def stream(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for i in range(5000):
                if stop.is_set():
                    return
                body = {"job_name": "backup", "status": "success", "run_id": f"s{i}"}
                if http.post("/api/job-result", json=body).status_code == 200:
                    sent[0] += 1

    with live_server(jobs, state, env=env) as server:
        thread = threading.Thread(target=stream, args=(server.url,))
        thread.start()
        try:
            wait_for(lambda: sent[0] >= 200, "results streaming in")

            def on_disk() -> bool:
                with sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True) as db:
                    return bool(db.execute("SELECT count(*) FROM results").fetchone()[0])

            wait_for(on_disk, "a periodic write")
            copies = []
            for n in range(3):
                target = tmp_path / f"backup-{n}.db"
                out = CliRunner().invoke(cli, ["backup", str(target), "--state-dir", str(state)])
                assert out.exit_code == 0, out.output
                copies.append(target)
        finally:
            stop.set()
            thread.join(30)
    for target in copies:
        with sqlite3.connect(target) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            (count,) = db.execute("SELECT count(*) FROM results").fetchone()
            assert count > 0
            assert db.execute("PRAGMA user_version").fetchone() == (schema_mod.SCHEMA_VERSION,)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_database_on_a_real_start_is_set_aside_and_said_everywhere(
    jobs: Path, tmp_path: Path, damage: str
) -> None:
    state = tmp_path / "state"
    with (
        live_server(jobs, state) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        for i in range(300):  # enough pages that a third of the file is a torn one
            body = {
                "job_name": "backup",
                "status": "success",
                "run_id": f"r{i}",
                "output": "x" * 200,
            }
            assert http.post("/api/job-result", json=body).status_code == 200
        assert server.stop() == 0  # the final write; the WAL checkpointed into state.db
    db = state / "state.db"
    data = db.read_bytes()
    assert len(data) > 8192
    damaged = b"\x00garbage" * 4096 if damage == "garbage" else data[: len(data) // 3]
    db.write_bytes(damaged)
    with (
        live_server(jobs, state) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        assert http.get("/api/job/backup/results").json()["results"] == []
        assert "cronmetrics_snapshot_restore_fallback 1.0" in http.get("/metrics").text
        deep = http.get("/health/deep")
        assert deep.status_code == 200  # serving, from what it has: a warning
        body = deep.json()
        assert body["status"] == "degraded" and body["warnings"] == ["store"]
        assert "EMPTY" in body["checks"]["store"]["detail"]
        assert "state.db.corrupt-" in body["checks"]["store"]["detail"]
        log = server.log()
        assert "state database unusable; set aside, starting with EMPTY state" in log
        aside = sorted(p.name for p in state.iterdir() if ".corrupt-" in p.name)
        assert aside and aside[0].startswith("state.db.corrupt-")
        assert (state / aside[0]).read_bytes() == damaged  # kept for a post-mortem
        body = {"job_name": "backup", "status": "success", "run_id": "fresh"}
        assert http.post("/api/job-result", json=body).status_code == 200
    with live_server(jobs, state) as server:  # the new database is a good one
        results = httpx.get(f"{server.url}/api/job/backup/results", timeout=10).json()["results"]
        assert [r["run_id"] for r in results] == ["fresh"]
