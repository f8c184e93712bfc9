"""History, statistics and retention: the API, the pure stats function, manual purges."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import T0, FakeClock
from flask.testing import FlaskClient

from cronmetrics.cli.main import cli
from cronmetrics.logs import rfc3339
from cronmetrics.stats import job_stats, percentile
from cronmetrics.storage.interface import Result
from cronmetrics.storage.retention import parse_before, purge_expired
from cronmetrics.web.app import services
from cronmetrics.web.auth import hash_token

JOBS = {
    "backup.yaml": "job_name: backup\nautomatic_failure_threshold: 3600\n",
    "sync.yaml": "job_name: sync\nhost: db1\nautomatic_failure_threshold: 600\n",
    "other.yaml": "job_name: other\nautomatic_failure_threshold: 600\n",
}
DAY = 86_400.0


def iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


def submit(client: FlaskClient, body: Any, **kw: Any) -> None:
    response = client.post("/api/job-result", json=body, **kw)
    assert response.status_code == 200, response.get_data(as_text=True)


def results(client: FlaskClient, url: str, **kw: Any) -> list[dict[str, Any]]:
    response = client.get(url, **kw)
    assert response.status_code == 200, response.get_data(as_text=True)
    found: list[dict[str, Any]] = response.get_json()["results"]
    return found


def run_ids(client: FlaskClient, url: str) -> list[str]:
    return [r["run_id"] for r in results(client, url)]


@pytest.fixture
def client(make_client: Any) -> FlaskClient:
    c: FlaskClient = make_client(JOBS, retention={"max_results_per_job": 300})
    return c


# -- GET /api/job/<id>/results -----------------------------------------------------------


def test_results_are_newest_first_by_their_own_timestamp(client: FlaskClient) -> None:
    for run_id, offset in (("b", -120), ("c", -60), ("a", -180)):  # "a" arrives late
        submit(
            client,
            {
                "job_name": "backup",
                "status": "success",
                "run_id": run_id,
                "timestamp": iso(T0 + offset),
            },
        )
    found = results(client, "/api/job/backup/results")
    assert [r["run_id"] for r in found] == ["c", "b", "a"]
    assert found[0]["timestamp"] == "2026-01-04T23:59:00.000Z"
    assert found[0]["received"] == rfc3339(T0)
    assert set(found[0]) == {
        "job_id",
        "status",
        "timestamp",
        "received",
        "host",
        "duration",
        "exit_code",
        "run_id",
        "output",
        "labels",
    }


def test_results_limit_defaults_to_50_and_goes_up_to_200(client: FlaskClient) -> None:
    batch = [
        {
            "job_name": "backup",
            "status": "success",
            "run_id": str(i),
            "timestamp": iso(T0 - 1000 + i),
        }
        for i in range(250)
    ]
    submit(client, batch)
    assert run_ids(client, "/api/job/backup/results") == [str(i) for i in range(249, 199, -1)]
    assert len(run_ids(client, "/api/job/backup/results?limit=200")) == 200
    assert run_ids(client, "/api/job/backup/results?limit=1") == ["249"]


@pytest.mark.parametrize("limit", ["0", "201", "abc", "-1", "1.5", "", "\u0661"])
def test_invalid_limit_is_a_400_naming_the_field(client: FlaskClient, limit: str) -> None:
    for url in ("/api/job/backup/results", "/api/job-result"):
        response = client.get(url, query_string={"limit": limit})
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert (error["code"], error["field"]) == ("INVALID_REQUEST", "limit")


def test_results_of_an_unknown_job_are_404(client: FlaskClient) -> None:
    response = client.get("/api/job/nope/results")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"


# -- GET /api/job-result -----------------------------------------------------------------


def test_recent_results_across_jobs_newest_first(client: FlaskClient) -> None:
    submit(
        client,
        {"job_name": "backup", "status": "success", "run_id": "b1", "timestamp": iso(T0 - 30)},
    )
    submit(
        client,
        {
            "job_name": "sync",
            "host": "db1",
            "status": "failure",
            "run_id": "s1",
            "timestamp": iso(T0 - 20),
        },
    )
    submit(
        client,
        {"job_name": "backup", "status": "success", "run_id": "b2", "timestamp": iso(T0 - 10)},
    )
    assert run_ids(client, "/api/job-result") == ["b2", "s1", "b1"]
    assert run_ids(client, "/api/job-result?limit=2") == ["b2", "s1"]
    assert run_ids(client, "/api/job-result?job_id=sync@db1") == ["s1"]
    assert client.get("/api/job-result?job_id=nope").status_code == 404


def test_recent_results_only_show_jobs_the_token_may_read(make_client: Any) -> None:
    tokens = [
        {"name": "ops", "sha256": hash_token("ops-token"), "scopes": ["admin", "read", "submit"]},
        {
            "name": "narrow",
            "sha256": hash_token("narrow-token"),
            "scopes": ["read"],
            "jobs": ["sync*"],
        },
    ]
    client = make_client(JOBS, no_auth=False, auth={"tokens": tokens})
    ops = {"Authorization": "Bearer ops-token"}
    narrow = {"Authorization": "Bearer narrow-token"}
    submit(client, {"job_name": "backup", "status": "success", "run_id": "b"}, headers=ops)
    submit(
        client, {"job_name": "sync", "host": "db1", "status": "success", "run_id": "s"}, headers=ops
    )
    assert [r["run_id"] for r in results(client, "/api/job-result", headers=narrow)] == ["s"]
    assert client.get("/api/job/backup/results", headers=narrow).status_code == 403
    assert client.get("/api/job/backup/stats", headers=narrow).status_code == 403
    assert client.get("/api/job-result?job_id=backup", headers=narrow).status_code == 403
    assert client.delete("/api/job/sync@db1/results", headers=narrow).status_code == 403
    assert client.get("/api/job-result").status_code == 401


# -- stats -------------------------------------------------------------------------------


def _r(status: str, at: float, **kw: Any) -> Result:
    return Result("backup", status, at, at, **kw)


def test_stats_numbers_with_a_fixed_now() -> None:
    now = T0
    history = [
        _r("success", now - 8 * DAY, duration=100),  # outside both windows
        _r("failure", now - 3 * DAY, duration=50, exit_code=2, output="old failure"),
        _r("start", now - 2 * DAY, run_id="x"),
        _r("success", now - 2 * DAY + 30, run_id="x"),  # duration from its start: 30
        _r("success", now - 12 * 3600, duration=10),
        _r("failure", now - 3600, duration=20, exit_code=1, output="x" * 2000 + "disk full"),
        _r("success", now - 60, duration=40),
    ]
    stats = job_stats("backup", history, now)
    assert stats["now"] == rfc3339(now)
    assert stats["windows"]["24h"] == {
        "runs": 3,
        "successes": 2,
        "failures": 1,
        "success_rate": 0.6667,
    }
    assert stats["windows"]["7d"] == {
        "runs": 5,
        "successes": 3,
        "failures": 2,
        "success_rate": 0.6,
    }
    assert stats["history"]["results"] == 7
    assert stats["history"]["runs"] == 6
    assert stats["history"]["oldest"] == rfc3339(now - 8 * DAY)
    assert stats["duration"] == {"samples": 6, "avg": 41.667, "p95": 100.0, "max": 100.0}
    assert stats["interval"] == {"samples": 5, "avg": round((8 * DAY - 60) / 5, 3)}
    last = stats["last_failure"]
    assert last["timestamp"] == rfc3339(now - 3600)
    assert last["exit_code"] == 1
    assert last["message"].endswith("disk full")
    assert len(last["message"]) == 1000
    assert stats["totals"] == {"runs": 6, "failures": 2}


def test_stats_of_a_job_without_runs_have_nulls_not_zeros() -> None:
    stats = job_stats("backup", [], T0)
    assert stats["windows"]["24h"] == {
        "runs": 0,
        "successes": 0,
        "failures": 0,
        "success_rate": None,
    }
    assert stats["duration"] == {"samples": 0, "avg": None, "p95": None, "max": None}
    assert stats["interval"] == {"samples": 0, "avg": None}
    assert stats["last_failure"] is None


def test_percentile_is_nearest_rank() -> None:
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([5.0], 95) == 5.0
    assert percentile([1, 2], 95) == 2
    assert percentile([], 95) is None


def test_stats_endpoint_uses_the_server_clock_and_lifetime_counters(
    client: FlaskClient, fake_clock: FakeClock
) -> None:
    submit(client, {"job_name": "backup", "status": "failure", "duration": 4, "output": "boom"})
    fake_clock.advance(2 * DAY)
    submit(client, {"job_name": "backup", "status": "success", "duration": 6})
    body = client.get("/api/job/backup/stats").get_json()
    assert body["now"] == rfc3339(T0 + 2 * DAY)
    assert body["windows"]["24h"]["runs"] == 1
    assert body["windows"]["7d"]["success_rate"] == 0.5
    assert body["duration"]["avg"] == 5.0
    assert body["interval"]["avg"] == 2 * DAY
    assert body["last_failure"] == {"timestamp": rfc3339(T0), "exit_code": None, "message": "boom"}
    services(client.application).monitor.purge_history(T0 + 1)
    body = client.get("/api/job/backup/stats").get_json()
    assert body["totals"] == {"runs": 2, "failures": 1}  # counters outlive the history
    assert body["last_failure"] == {"timestamp": rfc3339(T0), "exit_code": None, "message": None}


# -- retention ---------------------------------------------------------------------------


def test_history_keeps_only_the_last_max_results_per_job(make_client: Any) -> None:
    client = make_client(JOBS, retention={"max_results_per_job": 3})
    for i in range(5):
        submit(client, {"job_name": "backup", "status": "success", "run_id": str(i)})
    assert run_ids(client, "/api/job/backup/results") == ["4", "3", "2"]
    assert client.get("/api/job/backup").get_json()["state"]["runs_total"] == 5


def test_purge_by_age_uses_the_time_it_is_given(client: FlaskClient, fake_clock: FakeClock) -> None:
    store = services(client.application).store
    submit(client, {"job_name": "backup", "status": "success", "run_id": "old"})
    fake_clock.advance(20 * DAY)
    submit(client, {"job_name": "backup", "status": "success", "run_id": "new"})
    assert purge_expired(store, 30, T0 + 30 * DAY) == 0
    assert purge_expired(store, 30, T0 + 30 * DAY + 1) == 1
    assert run_ids(client, "/api/job/backup/results") == ["new"]
    assert purge_expired(store, 30, T0 + 60 * DAY) == 1
    assert run_ids(client, "/api/job/backup/results") == []


def test_restart_applies_the_age_limit(make_client: Any, fake_clock: FakeClock) -> None:
    client = make_client(JOBS)
    submit(client, {"job_name": "backup", "status": "success", "run_id": "old"})
    services(client.application).store.flush()
    fake_clock.advance(31 * DAY)
    again = make_client(JOBS)
    assert run_ids(again, "/api/job/backup/results") == []
    assert again.get("/api/job/backup").get_json()["state"]["runs_total"] == 1


def test_delete_job_results_before_a_date(client: FlaskClient) -> None:
    for i, offset in enumerate((-3 * DAY, -2 * DAY, -DAY)):
        submit(
            client,
            {
                "job_name": "backup",
                "status": "success",
                "run_id": str(i),
                "timestamp": iso(T0 + offset),
            },
        )
    response = client.delete("/api/job/backup/results", query_string={"before": iso(T0 - 2 * DAY)})
    assert response.status_code == 200
    assert response.get_json() == {
        "job_id": "backup",
        "before": rfc3339(T0 - 2 * DAY),
        "removed": 1,
        "dropped": False,
    }
    response = client.delete("/api/job/backup/results?before=36h")
    assert response.get_json()["removed"] == 1
    assert run_ids(client, "/api/job/backup/results") == ["2"]
    response = client.delete("/api/job/backup/results")  # no before: everything
    assert response.get_json() == {
        "job_id": "backup",
        "before": None,
        "removed": 1,
        "dropped": False,
    }
    assert client.get("/api/job/backup").get_json()["state"]["runs_total"] == 3


def test_delete_across_jobs_requires_before(client: FlaskClient) -> None:
    submit(client, {"job_name": "backup", "status": "success"})
    submit(client, {"job_name": "other", "status": "success"})
    response = client.delete("/api/job-result")
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "before"
    assert client.delete("/api/job-result?before=yesterday").status_code == 400
    assert client.delete("/api/job-result?before=all").get_json()["removed"] == 2
    assert client.delete("/api/job/nope/results").status_code == 404


def test_parse_before_accepts_dates_times_and_ages() -> None:
    assert parse_before("2026-01-05", 0) == T0
    assert parse_before("2026-01-05T01:00:00+01:00", 0) == T0
    assert parse_before("2026-01-05T00:00:00Z", 0) == T0
    assert parse_before("2d", T0) == T0 - 2 * DAY
    assert parse_before("all", T0) == float("inf")


def test_cli_purge_offline_edits_the_database(
    make_client: Any, fake_clock: FakeClock, tmp_path: Path
) -> None:
    client = make_client(JOBS)
    submit(
        client,
        {
            "job_name": "backup",
            "status": "success",
            "run_id": "old",
            "timestamp": iso(T0 - 10 * DAY),
        },
    )
    submit(client, {"job_name": "backup", "status": "success", "run_id": "new"})
    submit(
        client,
        {
            "job_name": "other",
            "status": "success",
            "run_id": "keep",
            "timestamp": iso(T0 - 10 * DAY),
        },
    )
    services(client.application).store.flush()
    state_dir = tmp_path / "state"
    out = CliRunner().invoke(
        cli, ["purge", "--before", "2026-01-01", "--job", "backup", "--state-dir", str(state_dir)]
    )
    assert out.exit_code == 0, out.output
    assert "removed 1 results of backup" in out.output
    with sqlite3.connect(state_dir / "state.db") as db:
        rows = db.execute("SELECT job_id, run_id FROM results_view ORDER BY id").fetchall()
    assert rows == [("backup", "new"), ("other", "keep")]
    again = make_client(JOBS)
    assert run_ids(again, "/api/job/backup/results") == ["new"]


def test_cli_purge_rejects_a_bad_date() -> None:
    out = CliRunner().invoke(cli, ["purge", "--before", "soon", "--state-dir", "/nonexistent"])
    assert out.exit_code != 0
