"""cronmetrics.testing: the helpers every live-server test and benchmark stands on."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cronmetrics.testing import ServerProcess, running_server, wait_for


def test_wait_for_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert wait_for(lambda: next(counter) >= 3 and "done", interval=0) == "done"


def test_wait_for_names_what_it_waited_for_on_timeout() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0\.1s waiting for the moon"):
        wait_for(lambda: None, "the moon", timeout=0.1, interval=0.01)


def test_wait_for_fails_early_with_the_output_of_a_process_that_exited() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"],
        stderr=subprocess.PIPE,
    )
    with pytest.raises(AssertionError, match=r"process exited \(3\) while waiting for x:\nboom"):
        wait_for(lambda: False, "x", timeout=30, process=process)


def test_running_server_serves_then_stops_cleanly(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "a.yaml").write_text("job_name: a\nautomatic_failure_threshold: 60\n")

    def ready(server: ServerProcess) -> bool:
        try:
            return httpx.get(f"{server.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    with running_server(jobs, tmp_path / "state", ready=ready) as server:
        response = httpx.post(f"{server.url}/api/ping/a/success")
        assert response.json()["jobs"] == ["a"]
    assert server.process.returncode == 0  # SIGTERM: final write, clean exit
    with sqlite3.connect(tmp_path / "state" / "state.db") as db:
        assert db.execute("SELECT runs_total FROM states WHERE job_id = 'a'").fetchone() == (1,)


def test_a_server_that_cannot_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    (tmp_path / "jobs.d").mkdir()
    expected = r"(?s)process exited \(2\) while waiting for the server.*no API tokens"
    with (  # no --no-auth and no tokens: the server refuses to start
        pytest.raises(AssertionError, match=expected),
        running_server(tmp_path / "jobs.d", tmp_path / "state", ready=lambda s: False, args=()),
    ):
        pass
