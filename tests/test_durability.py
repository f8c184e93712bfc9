"""Crash durability with real processes: kill -9 the worker, restart on the same state dir.

``kill -9`` means the gunicorn *worker* (where the state lives) dies without running a
single line of cleanup; the master is frozen first so it cannot spawn a replacement, then
killed too. Killing only the master would let the worker notice and shut down gracefully,
which is the SIGTERM path, tested separately.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from liveserver import kill_9, live_server, wait_for

from cronmetrics.cli.main import cli

pytestmark = pytest.mark.slow

JOBS = [f"job{i}" for i in range(4)]


@pytest.fixture
def jobs(threshold_jobs: Callable[..., Path]) -> Path:
    return threshold_jobs(*JOBS)


def stored_run_ids(url: str, job: str) -> list[str]:
    response = httpx.get(f"{url}/api/job/{job}/results?limit=200", timeout=10)
    assert response.status_code == 200, response.text
    return [r["run_id"] for r in response.json()["results"]]


def db_run_ids(state: Path, job: str | None = None) -> list[str]:
    """Run ids in state.db as another process sees it (read-only), in arrival order."""
    with sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True) as db:
        sql = (
            "SELECT run_id FROM results_view"
            + (" WHERE job_id = ?" if job else "")
            + " ORDER BY id"
        )
        return [row[0] for row in db.execute(sql, (job,) if job else ())]


def submit(http: httpx.Client, body: Any) -> None:
    response = http.post("/api/job-result", json=body)
    assert response.status_code == 200, response.text


def test_kill_9_without_journal_loses_at_most_one_snapshot_interval(
    jobs: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = {"CRONMETRICS_SNAPSHOT__INTERVAL": "0.5"}
    sent: dict[str, list[str]] = {job: [] for job in JOBS}
    with live_server(jobs, state, env=env) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for i in range(40):
                job = JOBS[i % len(JOBS)]
                submit(http, {"job_name": job, "status": "success", "run_id": f"r{i}"})
                sent[job].append(f"r{i}")
        everything = {i for ids in sent.values() for i in ids}

        def written() -> bool:  # by the 0.5 s timer, not on exit
            return set(db_run_ids(state)) == everything

        wait_for(written, "a write with every acknowledged result", interval=0.02)
        with httpx.Client(base_url=server.url, timeout=10) as http:  # the unlucky last interval
            submit(http, {"job_name": "job0", "status": "success", "run_id": "maybe-lost"})
        kill_9(server)
    with live_server(jobs, state, env=env) as again:
        for job in JOBS:
            stored = stored_run_ids(again.url, job)
            assert sorted(i for i in stored if i != "maybe-lost") == sorted(sent[job])
        assert "unusable" not in again.log()


def test_kill_9_with_journal_loses_nothing_acknowledged(jobs: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {
        "CRONMETRICS_SNAPSHOT__JOURNAL": "true",
        "CRONMETRICS_SNAPSHOT__INTERVAL": "0.5",
        "CRONMETRICS_RETENTION__MAX_RESULTS_PER_JOB": "1000",
    }
    acked: dict[str, list[str]] = {job: [] for job in JOBS}
    stop = threading.Event()
    enough = threading.Event()
    total = [0]
    guard = threading.Lock()

    def reporter(job: str, url: str, batch: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for n in range(0, 180, batch):
                if stop.is_set():
                    return
                ids = [f"{job}-{n + k}" for k in range(batch)]
                body = [{"job_name": job, "status": "success", "run_id": i} for i in ids]
                try:
                    response = http.post("/api/job-result", json=body if batch > 1 else body[0])
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if response.status_code == 200:
                    with guard:
                        acked[job].extend(ids)
                        total[0] += batch
                        if total[0] >= 300:
                            enough.set()
        enough.set()

    with live_server(jobs, state, env=env) as server:
        threads = [
            threading.Thread(target=reporter, args=(job, server.url, 1 + 4 * (i % 2)))
            for i, job in enumerate(JOBS)
        ]
        for thread in threads:
            thread.start()
        assert enough.wait(60)
        kill_9(server)  # while the reporters are still sending
        stop.set()
        for thread in threads:
            thread.join(30)
    assert sum(len(ids) for ids in acked.values()) >= 300
    with live_server(jobs, state, env=env) as again:
        for job in JOBS:
            stored = set(stored_run_ids(again.url, job))
            missing = [i for i in acked[job] if i not in stored]
            assert not missing, f"{job}: {len(missing)} acknowledged results lost"


def test_kill_9_after_a_purge_does_not_bring_the_purged_output_back(
    jobs: Path, tmp_path: Path
) -> None:
    """A purge answered 200 is off the disk (state.db and its WAL), so the secret someone
    purged from job0's output is not back after a crash, nor anywhere in the state dir."""
    state = tmp_path / "state"
    env = {"CRONMETRICS_SNAPSHOT__JOURNAL": "true", "CRONMETRICS_SNAPSHOT__INTERVAL": "3600"}
    with (
        live_server(jobs, state, env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        submit(http, {"job_name": "job0", "status": "failure", "output": "pw=hunter2"})
        submit(http, {"job_name": "job1", "status": "success", "run_id": "kept"})
        assert server.stop(signal.SIGTERM) == 0  # the secret is now in state.db
    assert any(b"hunter2" in p.read_bytes() for p in state.iterdir())
    with live_server(jobs, state, env=env) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            response = http.delete("/api/job/job0/results")
            assert response.status_code == 200, response.text
            assert response.json()["removed"] == 1
            submit(http, {"job_name": "job0", "status": "success", "run_id": "after"})
        leftovers = [p.name for p in state.iterdir() if b"hunter2" in p.read_bytes()]
        assert leftovers == []
        kill_9(server)
    with live_server(jobs, state, env=env) as again:
        assert stored_run_ids(again.url, "job0") == ["after"]
        assert stored_run_ids(again.url, "job1") == ["kept"]


def test_sigterm_writes_what_is_left(jobs: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {"CRONMETRICS_SNAPSHOT__INTERVAL": "3600"}  # only the final write can save it
    with live_server(jobs, state, env=env) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            submit(http, {"job_name": "job0", "status": "failure", "run_id": "last-words"})
        assert server.stop(signal.SIGTERM) == 0
    assert db_run_ids(state, "job0") == ["last-words"]
    with live_server(jobs, state, env=env) as again:
        assert stored_run_ids(again.url, "job0") == ["last-words"]


def test_cli_purge_online(jobs: Path, tmp_path: Path) -> None:
    with live_server(jobs, tmp_path / "state") as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for job in ("job0", "job1"):
                submit(http, {"job_name": job, "status": "success", "run_id": job})
        runner = CliRunner()
        out = runner.invoke(cli, ["purge", "--url", server.url, "--before", "all", "--job", "job0"])
        assert out.exit_code == 0, out.output
        assert "removed 1 results of job0" in out.output
        assert stored_run_ids(server.url, "job0") == []
        assert stored_run_ids(server.url, "job1") == ["job1"]
        out = runner.invoke(cli, ["purge", "--url", server.url, "--before", "1d"])
        assert out.exit_code == 0, out.output
        assert "removed 0 results" in out.output


def test_cli_purge_online_of_a_job_whose_file_is_gone_drops_its_state_too(
    jobs: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = {"CRONMETRICS_WATCH__DEBOUNCE": "0.05", "CRONMETRICS_SNAPSHOT__JOURNAL": "true"}
    with (
        live_server(jobs, state, env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        for i in range(2):
            submit(http, {"job_name": "job0", "status": "failure", "run_id": f"r{i}"})
        text = (jobs / "job0.yaml").read_text()
        (jobs / "job0.yaml").unlink()
        wait_for(lambda: http.get("/api/job/job0").status_code == 404, "job0 to detach")
        out = CliRunner().invoke(
            cli, ["purge", "--url", server.url, "--before", "all", "--job", "job0"]
        )
        assert out.exit_code == 0, out.output
        assert "removed 2 results of job0" in out.output
        assert "dropped job0" in out.output
        with sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT count(*) FROM states WHERE job_id = 'job0'").fetchone()
        assert rows == (0,)
        # the file coming back is a new job: no counters, no history
        (jobs / "job0.yaml").write_text(text)
        wait_for(lambda: http.get("/api/job/job0").status_code == 200, "job0 to return")
        again = http.get("/api/job/job0").json()["state"]
        assert (again["runs_total"], again["failures_total"]) == (0, 0)
        assert stored_run_ids(server.url, "job0") == []
        # a defined job keeps its state: a purge by id is only history there
        submit(http, {"job_name": "job1", "status": "success", "run_id": "k"})
        answer = http.delete("/api/job/job1/results")
        assert answer.json()["dropped"] is False
        assert http.get("/api/job/job1").json()["state"]["runs_total"] == 1
