"""Losing the state dir or its lock under a real running server (``cronmetrics serve``).

Deleted (``rm -rf`` of the dir, or only ``state.lock``): the server re-creates the dir,
locks it again and writes its whole state there anew, so a second server refuses to
start. Taken by another process meanwhile: the first server stops writing there, fails
readiness naming the dir and the holder, and says so in the log and ``/metrics``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from liveserver import LiveServer, free_port, live_server, wait_for

from cronmetrics.testing import serve_command

pytestmark = pytest.mark.slow

JOBS = ("backup", "other")


@pytest.fixture
def jobs(threshold_jobs: Callable[..., Path]) -> Path:
    return threshold_jobs(*JOBS)


def submit(http: httpx.Client, body: Any) -> httpx.Response:
    return http.post("/api/job-result", json=body)


def db_rows(state: Path, sql: str) -> list[tuple[Any, ...]] | None:
    """Rows of ``sql`` in state.db as another process reads it; None while there is none."""
    if not (state / "state.db").is_file():
        return None
    with sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True) as db:
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError:  # created, its tables not committed yet
            return None


def run_ids_on_disk(state: Path) -> list[str] | None:
    rows = db_rows(state, "SELECT run_id FROM results_view ORDER BY id")
    return None if rows is None else sorted(r[0] for r in rows)


def second_server(server: LiveServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_command(server.jobs_dir, server.state_dir, free_port(), args=("--no-auth",)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lock_is_held(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def metric(http: httpx.Client, name: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name}")


@pytest.mark.parametrize("journal", [False, True])
def test_a_state_dir_deleted_while_serving_is_recreated_relocked_and_written_again(
    jobs: Path, tmp_path: Path, journal: bool
) -> None:
    state = tmp_path / "state"
    env = {"CRONMETRICS_SNAPSHOT__INTERVAL": "0.5", "CRONMETRICS_SNAPSHOT__JOURNAL": str(journal)}
    with (
        live_server(jobs, state, env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        for i in range(3):
            assert submit(http, {"job_name": "backup", "status": "success", "run_id": f"a{i}"})
        assert submit(http, {"job_name": "other", "status": "failure", "run_id": "o"}).is_success
        wait_for(lambda: run_ids_on_disk(state) == ["a0", "a1", "a2", "o"], "the first write")
        shutil.rmtree(state)  # rm -rf under the running server
        # everything the server held is on disk again (written after the new lock was
        # taken, so probing the lock now cannot race the server for it)
        wait_for(lambda: run_ids_on_disk(state) == ["a0", "a1", "a2", "o"], "the state anew")
        assert lock_is_held(state / "state.lock")
        states = db_rows(state, "SELECT job_id, runs_total, failures_total FROM states")
        assert sorted(states or []) == [("backup", 3, 0), ("other", 1, 1)]
        assert submit(http, {"job_name": "backup", "status": "success", "run_id": "b"}).is_success
        wait_for(lambda: "b" in (run_ids_on_disk(state) or []), "a new result on disk")
        # a second server is refused: the dir is this one's again
        proc = second_server(server)
        assert proc.returncode == 5, proc.stderr
        assert f"the state dir {state} is in use by cronmetrics serve (pid" in proc.stderr
        deep = http.get("/health/deep")
        assert deep.status_code == 200, deep.text
        assert metric(http, "cronmetrics_snapshot_last_write_successful") == 1
        log = server.log()
        assert "state dir lock lost while serving; re-created and locked again" in log
        assert "state.db was deleted while serving; created again from the state in memory" in log
    # and a restart finds all of it
    with live_server(jobs, state, env=env) as again:
        results = httpx.get(f"{again.url}/api/job/backup/results", timeout=10).json()["results"]
        assert [r["run_id"] for r in results] == ["b", "a2", "a1", "a0"]


def test_a_deleted_lock_file_is_taken_again_and_a_second_server_refused(
    jobs: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with (
        live_server(jobs, state) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        assert submit(http, {"job_name": "backup", "status": "success"}).is_success
        first = (state / "state.lock").stat().st_ino
        (state / "state.lock").unlink()
        wait_for(lambda: "re-created and locked again" in server.log(), "a new state.lock")
        assert (state / "state.lock").stat().st_ino != first
        assert lock_is_held(state / "state.lock")
        proc = second_server(server)
        assert proc.returncode == 5, proc.stderr
        assert "is in use by cronmetrics serve (pid" in proc.stderr
        assert http.get("/health/deep").status_code == 200
        assert "state dir lock lost while serving" in server.log()


def test_a_state_dir_taken_by_another_process_is_given_up_and_readiness_fails(
    jobs: Path, tmp_path: Path
) -> None:
    """The lock goes and another process claims the dir before this server looks again:
    it must not write there any more (the two would share the files)."""
    state = tmp_path / "state"
    env = {"CRONMETRICS_SNAPSHOT__INTERVAL": "0.5"}
    with (
        live_server(jobs, state, env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        assert submit(http, {"job_name": "backup", "status": "success", "run_id": "x"}).is_success
        wait_for(lambda: run_ids_on_disk(state) == ["x"], "the first write")
        (state / "state.lock").unlink()
        fd = os.open(state / "state.lock", os.O_RDWR | os.O_CREAT, 0o600)  # the intruder
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, b"another cronmetrics (pid 4242)\n")

            def refused() -> httpx.Response | None:
                deep = http.get("/health/deep")
                given_up = "no longer writes" in deep.json()["checks"]["store"]["detail"]
                return deep if deep.status_code == 503 and given_up else None

            deep = wait_for(refused, "readiness to fail").json()
            assert deep["failing"] == ["store"]
            detail = deep["checks"]["store"]["detail"]
            assert str(state) in detail and "another cronmetrics (pid 4242)" in detail
            assert "no longer writes" in detail
            assert submit(http, {"job_name": "backup", "status": "success", "run_id": "y"})
            wait_for(
                lambda: metric(http, "cronmetrics_snapshot_last_write_successful") == 0,
                "the failed write in /metrics",
            )
            assert run_ids_on_disk(state) == ["x"]  # nothing written into the other's dir
            results = http.get("/api/job/backup/results").json()["results"]
            assert [r["run_id"] for r in results] == ["y", "x"]  # still serving from memory
            assert "state dir lost to another process" in server.log()
        finally:
            os.close(fd)
        # the other went away: this server still does not take the dir back by itself
        assert http.get("/health/deep").status_code == 503
