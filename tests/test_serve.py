"""``cronmetrics serve``: refuses to run open, stops cleanly, flips deadlines on time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from liveserver import LiveServer, free_port, live_server, wait_for

from cronmetrics.testing import serve_command, stop_process

pytestmark = pytest.mark.slow

WAIT = 10.0


def test_serve_without_tokens_or_no_auth_refuses_to_start(jobs_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONMETRICS_")}
    proc = subprocess.run(
        serve_command(jobs_dir, tmp_path / "state", free_port(), args=()),
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--no-auth" in proc.stderr
    assert "cronmetrics token new" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_stops_the_server_cleanly(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    # an idle keep-alive connection must not hold the shutdown up
    with httpx.Client(timeout=5) as keepalive:
        keepalive.get(f"{server.url}/metrics")
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running 10 s after SIGTERM:\n{server.log()}")
    assert code == 0, server.log()
    assert "Traceback" not in server.log()


def _deadline_logged(server: LiveServer, job_id: str) -> bool:
    for line in server.log().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("msg") == "deadline passed" and job_id in record.get("sample", []):
            return True
    return False


def test_scheduler_flips_a_job_to_missed_deadline_on_time(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "quick.yaml").write_text("job_name: quick\nautomatic_failure_threshold: 2\n")
    with live_server(jobs, tmp_path / "state") as server:
        response = httpx.post(f"{server.url}/api/ping/quick/success", timeout=5)
        assert response.status_code == 200
        # Nothing reads the state here: only the scheduler can notice the deadline.
        try:
            wait_for(lambda: _deadline_logged(server, "quick"), "the deadline", timeout=WAIT)
        except AssertionError:
            pytest.fail(f"the scheduler never fired:\n{server.log()}")
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert 'cronjob_status_reason{job_name="quick",host="",reason="missed deadline"} 1' in text
        assert 'cronjob_status{job_name="quick",host="",status="active"} 0' in text


def test_a_second_server_on_the_same_state_dir_refuses_to_start(
    server: LiveServer, tmp_path: Path
) -> None:
    """Two servers would overwrite each other's snapshots and interleave journals."""
    proc = subprocess.run(
        serve_command(server.jobs_dir, server.state_dir, free_port(), args=("--no-auth",)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 5, proc.stderr
    assert f"the state dir {server.state_dir} is in use by cronmetrics serve (pid" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200  # unharmed


def test_offline_purge_refuses_while_a_server_holds_the_state_dir(server: LiveServer) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cronmetrics", "purge", "--before", "all",
         "--state-dir", str(server.state_dir)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 5, proc.stderr
    assert "in use by cronmetrics serve" in proc.stderr
    assert "purge through the running server" in proc.stderr


def test_a_busy_port_is_one_line_naming_bind(jobs_dir: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            serve_command(jobs_dir, tmp_path / "state", port, args=("--no-auth",)),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # not gunicorn's five retries
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in lines[0]
    assert "--bind HOST:PORT" in lines[0]
    assert "Traceback" not in proc.stderr


def _records(server: LiveServer) -> list[dict[str, object]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def test_start_and_shutdown_are_logged_step_by_step(server: LiveServer) -> None:
    start = [r for r in _records(server) if str(r.get("msg", "")).startswith("listening on")]
    assert len(start) == 1
    assert start[0]["url"] == f"http://127.0.0.1:{server.port}"
    assert (start[0]["scheme"], start[0]["bind"]) == ("http", f"127.0.0.1:{server.port}")
    assert start[0]["jobs_dir"] == str(server.jobs_dir.resolve())
    assert start[0]["state_dir"] == str(server.state_dir)
    assert httpx.post(f"{server.url}/api/ping/home_rsync/success", timeout=5).status_code == 200
    assert server.stop() == 0
    steps = [str(r["msg"]) for r in _records(server)]
    order = [
        "shutting down: stopped accepting connections",
        "drained: in-flight requests answered",
        "final state write done",
        "stopped",
    ]
    found = [next(i for i, m in enumerate(steps) if m.startswith(step)) for step in order]
    assert found == sorted(found), steps
    written = next(r for r in _records(server) if r["msg"] == "final state write done")
    assert written["state_dir"] == str(server.state_dir)


def test_two_servers_on_two_jobs_dirs_get_their_own_default_state_dir(tmp_path: Path) -> None:
    """The README's server and the guide's, one after the other or side by side: neither
    sees (nor drops) the other's jobs."""
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg"), "CRONMETRICS_LOG__LEVEL": "info"}
    env.pop("CRONMETRICS_STATE_DIR", None)
    procs, urls, logs = [], [], []
    try:
        for name in ("readme", "guide"):
            jobs = tmp_path / name / "jobs.d"
            jobs.mkdir(parents=True)
            (jobs / f"{name}.yaml").write_text(
                f"job_name: {name}\nautomatic_failure_threshold: 60\n"
            )
            port = free_port()
            log = tmp_path / f"{name}.log"
            cmd = [sys.executable, "-m", "cronmetrics", "serve", "--jobs-dir", str(jobs),
                   "--bind", f"127.0.0.1:{port}", "--no-auth"]  # fmt: skip
            with log.open("wb") as out:
                procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env))
            urls.append(f"http://127.0.0.1:{port}")
            logs.append(log)
        for proc, url, log in zip(procs, urls, logs, strict=True):
            wait_for(lambda u=url: _ok(u), f"{url} to start", process=proc, log=log.read_text)
        dirs = sorted(p.name for p in (tmp_path / "xdg" / "cronmetrics").iterdir())
        assert len(dirs) == 2 and all(d.startswith("jobs.d-") for d in dirs)
        for url, name in zip(urls, ("readme", "guide"), strict=True):
            jobs = httpx.get(f"{url}/api/job", timeout=5).json()
            assert [j["id"] for j in jobs["jobs"]] == [name]
    finally:
        for proc in procs:
            stop_process(proc)
    assert not any("dropped the state" in log.read_text() for log in logs)


def _ok(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
