"""``cronmetrics maintenance ...`` and ``job maintenance --for``: against a real server
(gunicorn, real scheduler) whose jobs.d is read-only, as under git-sync."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clirun import cm
from liveserver import LiveServer, live_server, wait_for

from cronmetrics.jobs.repository import load_directory

JOBS = {
    "db1/backup.yaml": "job_name: backup\nhost: db1\nautomatic_failure_threshold: 3600\n",
    "db1/vacuum.yaml": "job_name: vacuum\nhost: db1\nschedule: '0 * * * *'\n",
    "web1/logrotate.yaml": "job_name: logrotate\nhost: web1\nautomatic_failure_threshold: 3600\n",
}


def write_jobs(root: Path) -> Path:
    for name, text in JOBS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    jobs = write_jobs(tmp_path / "jobs.d")
    env = {"CRONMETRICS_JOB_WRITES": "disabled"}  # API writes to jobs.d answer 409
    with live_server(jobs, tmp_path / "state", env=env) as live:
        yield live


def cronmetrics(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """The installed command line, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cronmetrics", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"CRONMETRICS_URL": url, "PATH": "/usr/bin:/bin", "COLUMNS": "120"},
        check=False,
    )


def statuses(url: str) -> dict[str, str]:
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("cronjob_status{"):
            name = line.split('job_name="')[1].split('"')[0]
            out[name] = line.rsplit(" ", 1)[1]
    return out


def test_one_command_silences_every_job_of_db1_and_they_come_back_by_themselves(
    server: LiveServer,
) -> None:
    assert httpx.post(f"{server.url}/api/job", json={}, timeout=5).status_code in (400, 409)
    started = time.monotonic()
    run = cronmetrics("maintenance", "add", "--match", "host=db1", "--for", "15s",
                      "--comment", "disk swap", url=server.url)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "covers 2 jobs now" in run.stdout, run.stdout
    assert statuses(server.url) == {"backup": "-1", "vacuum": "-1", "logrotate": "1"}
    wid = run.stdout.split()[1]
    listed = cronmetrics("maintenance", "list", url=server.url)
    assert wid in listed.stdout and "disk swap" in listed.stdout
    assert 'host="db1"' in listed.stdout
    # the scheduler brings them back at the window's end, with no request in between
    wait_for(lambda: statuses(server.url)["backup"] == "1", timeout=60)
    assert time.monotonic() - started >= 14.5
    assert statuses(server.url) == {"backup": "1", "vacuum": "1", "logrotate": "1"}
    gone = cronmetrics("maintenance", "list", url=server.url)
    assert "no maintenance windows" in gone.stderr
    expired = cronmetrics("maintenance", "list", "--state", "expired", "-o", "json", url=server.url)
    assert wid in expired.stdout


def test_ending_a_window_from_the_cli(server: LiveServer) -> None:
    run = cronmetrics("maintenance", "add", "--match", "job_name=~back.*", "--for", "1d",
                      url=server.url)  # fmt: skip
    assert run.returncode == 0, run.stderr
    wid = run.stdout.split()[1]
    assert statuses(server.url)["backup"] == "-1"
    ended = cronmetrics("maintenance", "end", wid, url=server.url)
    assert ended.returncode == 0, ended.stderr
    assert statuses(server.url)["backup"] == "1"
    again = cronmetrics("maintenance", "end", wid, url=server.url)
    assert again.returncode == 5
    assert "already ended" in again.stderr
    missing = cronmetrics("maintenance", "end", "nope", url=server.url)
    assert missing.returncode == 4


@pytest.mark.parametrize(
    ("args", "flag", "message"),
    [
        (["--match", "host=~db(", "--for", "1h"], "'--match'", "invalid regular expression"),
        (["--match", "host=db1", "--for", "40d"], "'--for'", "at most 30 days"),
        (["--match", "host=db1", "--for", "soon"], "'--for'", "is not a duration"),
        (["--match", "host=db1", "--until", "2020-01-01T00:00:00Z"], "'--until'", "in the past"),
        (["--match", "host=db1", "--until", "tonight"], "'--until'", "is not a timestamp"),
    ],
)
def test_bad_windows_name_the_flag_and_change_nothing(
    bundled_url: str, args: list[str], flag: str, message: str
) -> None:
    run = cronmetrics("maintenance", "add", *args, url=bundled_url)
    assert run.returncode == 2, run.stderr
    assert flag in run.stderr and message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    listed = httpx.get(f"{bundled_url}/api/maintenance?state=all", timeout=5).json()
    assert listed["count"] == 0


def test_for_and_until_are_one_or_the_other(bundled_url: str) -> None:
    run = cronmetrics("maintenance", "add", "--match", "host=db1", url=bundled_url)
    assert run.returncode == 2
    assert "give --for DURATION or --until TIME" in run.stderr


# -- cronmetrics job maintenance ID --for / --until ----------------------------------------


def test_job_maintenance_for_a_duration_writes_an_end(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.d")
    before = time.time()
    run = cm(["job", "maintenance", "backup@db1", "--for", "2h", "--jobs-dir", str(jobs)])
    assert run.code == 0, run.err
    definition = load_directory(jobs).jobs["backup@db1"].definition
    assert definition.status == "maintenance"
    assert definition.maintenance_until is not None
    assert before + 7200 - 1 <= definition.maintenance_until.timestamp() <= time.time() + 7200 + 1
    assert "is now maintenance until" in run.out


def test_job_maintenance_refuses_a_time_in_the_past(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.d")
    before = (jobs / "db1/backup.yaml").read_text()
    run = cm(["job", "maintenance", "backup@db1", "--until", "2020-01-01T00:00:00Z",
              "--jobs-dir", str(jobs)])  # fmt: skip
    assert run.code == 2
    assert "is in the past" in run.err
    assert (jobs / "db1/backup.yaml").read_text() == before
    run = cm(["job", "maintenance", "backup@db1", "--for", "1h", "--until", "2099-01-01",
              "--jobs-dir", str(jobs)])  # fmt: skip
    assert run.code == 2 and "not both" in run.err


def test_a_restart_sees_the_same_window(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.d")
    env = {"CRONMETRICS_JOB_WRITES": "disabled"}
    with live_server(jobs, tmp_path / "state", env=env) as first:
        run = cronmetrics("maintenance", "add", "--match", "host=db1", "--for", "2h",
                          "--comment", "disk swap", url=first.url)  # fmt: skip
        assert run.returncode == 0, run.stderr
        wid = run.stdout.split()[1]
        assert statuses(first.url)["backup"] == "-1"
    with live_server(jobs, tmp_path / "state", env=env) as second:
        assert statuses(second.url) == {"backup": "-1", "vacuum": "-1", "logrotate": "1"}
        listed = httpx.get(f"{second.url}/api/maintenance", timeout=5).json()["windows"]
        assert [(w["id"], w["comment"], w["covers"]) for w in listed] == [(wid, "disk swap", 2)]


def test_offline_windows_are_seen_by_the_next_start_and_refused_while_it_runs(
    tmp_path: Path,
) -> None:
    jobs = write_jobs(tmp_path / "jobs.d")
    state = tmp_path / "state"
    state.mkdir()
    env = {"CRONMETRICS_JOBS_DIR": str(jobs)}
    added = subprocess.run(
        [sys.executable, "-m", "cronmetrics", "maintenance", "add", "--state-dir", str(state),
         "--match", "host=db1", "--for", "2h", "--comment", "planned"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "covers 2 jobs now" in added.stdout
    wid = added.stdout.split()[1]
    with live_server(jobs, state) as live:
        assert statuses(live.url) == {"backup": "-1", "vacuum": "-1", "logrotate": "1"}
        refused = subprocess.run(
            [sys.executable, "-m", "cronmetrics", "maintenance", "end", wid,
             "--state-dir", str(state)],
            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
            check=False,
        )  # fmt: skip
        assert refused.returncode == 5, refused.stderr
        assert "through the running server" in refused.stderr
        assert statuses(live.url)["backup"] == "-1"
