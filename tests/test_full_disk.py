"""A real full disk under a real server: the state dir on a small tmpfs, filled up.

Mounting needs root with CAP_SYS_ADMIN; without it these tests skip (saying why) and the
simulated full-disk tests of tests/test_state_db.py still cover the same rules: a
failing write keeps the server serving, is reported (``/health/deep``, ``/metrics``, the
log) and retried, and a batch is on disk whole or not at all.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from liveserver import kill_9, live_server, wait_for

pytestmark = pytest.mark.slow

BATCH = 1000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted for the test (the state dir itself), unmounted after."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        denied = os.geteuid() != 0 or any(
            word in proc.stderr.lower() for word in ("permission denied", "not permitted")
        )
        if denied:
            pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {proc.stderr.strip()}")
        raise AssertionError(f"mount failed: {proc.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the filler file, to delete to make room again."""
    filler = disk / "filler"
    chunk = os.urandom(1 << 16)
    with filler.open("wb", buffering=0) as f:
        for _ in range(1 << 12):  # bounded: 256 MiB, far beyond the disk
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        else:
            raise AssertionError("the small disk never filled up")
    for size in (4096, 512, 1):  # the partial last chunk's room, to the byte
        try:
            with filler.open("ab", buffering=0) as f:
                while True:
                    f.write(b"\0" * size)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def batch(prefix: str) -> list[dict[str, Any]]:
    return [
        {"job_name": "backup", "status": "success", "run_id": f"{prefix}{i}", "output": "o" * 500}
        for i in range(BATCH)
    ]


def on_disk(state: Path, prefix: str) -> int:
    """How many results with run ids starting ``prefix`` state.db holds (read-only)."""
    with sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM results_view WHERE run_id LIKE ?", (f"{prefix}%",)
        ).fetchone()
    return int(count)


def metric(http: httpx.Client, name: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name}")


@pytest.fixture
def jobs(threshold_jobs: Callable[..., Path]) -> Path:
    return threshold_jobs("backup")


ENV = {"CRONMETRICS_RETENTION__MAX_RESULTS_PER_JOB": str(2 * BATCH)}


def test_a_journaled_batch_on_a_full_disk_is_refused_whole_across_a_restart(
    jobs: Path, small_disk: Path
) -> None:
    env = {**ENV, "CRONMETRICS_SNAPSHOT__JOURNAL": "true"}
    with (
        live_server(jobs, small_disk, env=env) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        first = {"job_name": "backup", "status": "success", "run_id": "before"}
        assert http.post("/api/job-result", json=first).status_code == 200
        filler = fill(small_disk)
        answer = http.post("/api/job-result", json=batch("batch-"))
        assert answer.status_code == 503, answer.text
        assert "full" in answer.json()["error"]["message"]
        # serving, and saying so everywhere
        assert http.get("/health").status_code == 200
        deep = http.get("/health/deep")
        assert deep.status_code == 503
        assert "full" in deep.json()["checks"]["store"]["detail"]
        assert metric(http, "cronmetrics_snapshot_last_write_successful") == 0
        assert "disk is full" in server.log()
        state = http.get("/api/job/backup").json()["state"]
        assert state["runs_total"] == 1  # nothing of the batch, in memory either
        kill_9(server)
    filler.unlink()  # room again
    assert on_disk(small_disk, "batch-") == 0
    with (
        live_server(jobs, small_disk, env=env) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert http.get("/api/job/backup").json()["state"]["runs_total"] == 1
        assert http.post("/api/job-result", json=batch("batch-")).status_code == 200  # the retry
        assert http.get("/health/deep").status_code == 200
        assert metric(http, "cronmetrics_snapshot_last_write_successful") == 1
        kill_9(server)
    assert on_disk(small_disk, "batch-") == BATCH
    with live_server(jobs, small_disk, env=env) as server:
        state = httpx.get(f"{server.url}/api/job/backup", timeout=10).json()["state"]
        assert state["runs_total"] == BATCH + 1


def test_a_periodic_write_on_a_full_disk_keeps_the_batch_and_writes_it_whole_later(
    jobs: Path, small_disk: Path
) -> None:
    env = {**ENV, "CRONMETRICS_SNAPSHOT__INTERVAL": "0.5"}
    with (
        live_server(jobs, small_disk, env=env) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        filler = fill(small_disk)
        assert http.post("/api/job-result", json=batch("p")).status_code == 200  # memory
        wait_for(
            lambda: metric(http, "cronmetrics_snapshot_last_write_successful") == 0,
            "the failed write in /metrics",
        )
        deep = http.get("/health/deep")
        assert deep.status_code == 503
        assert "full" in deep.json()["checks"]["store"]["detail"]
        assert "state write failed; everything stays in memory for the next try" in server.log()
        assert on_disk(small_disk, "p") == 0
        assert len(http.get("/api/job/backup/results?limit=200").json()["results"]) == 200
        filler.unlink()
        wait_for(lambda: on_disk(small_disk, "p") == BATCH, "the retried write, all of it")
        wait_for(lambda: http.get("/health/deep").status_code == 200, "readiness back")
        assert metric(http, "cronmetrics_snapshot_last_write_successful") == 1
