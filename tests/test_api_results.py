"""Submissions and every status rule through HTTP (Flask test client)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from typing import Any

import pytest
from conftest import T0, FakeClock
from flask.testing import FlaskClient

JOBS = {
    "backup.yaml": "job_name: backup\nautomatic_failure_threshold: 600\nmax_runtime: 300\n"
    "labels: {env: prod}\n",
    "backup_db1.yaml": "job_name: backup\nhost: db1\nautomatic_failure_threshold: 600\n",
    "nightly.yaml": 'job_name: nightly\nschedule: "30 2 * * *"\ntimezone: Europe/Berlin\n'
    "grace: 900\n",
    "paused.yaml": "job_name: paused\nautomatic_failure_threshold: 60\nstatus: paused\n",
    "maint.yaml": "job_name: maint\nautomatic_failure_threshold: 60\nstatus: maintenance\n",
    "retired.yaml": "job_name: retired\nautomatic_failure_threshold: 60\nstatus: retired\n",
    "window.yaml": "job_name: window\nautomatic_failure_threshold: 600\nstatus: maintenance\n"
    "maintenance_until: 2026-01-05T01:00:00Z\n",
}


@pytest.fixture
def client(make_client: Any) -> FlaskClient:
    c: FlaskClient = make_client(JOBS)
    return c


def post(client: FlaskClient, body: Any, **kw: Any) -> Any:
    return client.post("/api/job-result", json=body, **kw)


def state(client: FlaskClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/job/{job_id}")
    assert response.status_code == 200, response.get_data(as_text=True)
    result: dict[str, Any] = response.get_json()["state"]
    return result


def series(client: FlaskClient, name: str, job_name: str) -> list[tuple[str, str]]:
    """(label string, value) of every ``name`` sample of ``job_name`` in /metrics."""
    text = client.get("/metrics").get_data(as_text=True)
    pattern = re.compile(rf'^{name}\{{job_name="{re.escape(job_name)}",(.*)\}} (\S+)$', re.M)
    return pattern.findall(text)


def row(client: FlaskClient, job_id: str) -> tuple[int, str]:
    """(cronjob_status value, reason) from /metrics, checked against /api/job/<id>."""
    name, _, host = job_id.partition("@")
    status = [
        v for labels, v in series(client, "cronjob_status", name) if f'host="{host}"' in labels
    ]
    reasons = [
        re.search(r'reason="([^"]*)"', labels).group(1)  # type: ignore[union-attr]
        for labels, _ in series(client, "cronjob_status_reason", name)
        if f'host="{host}"' in labels
    ]
    assert len(status) == len(reasons) == 1
    api = state(client, job_id)
    assert (api["value"], api["reason"]) == (int(status[0]), reasons[0])
    return int(status[0]), reasons[0]


def iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


def error(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert set(body) == {"error"}
    assert {"code", "message", "field"} <= set(body["error"])
    result: dict[str, Any] = body["error"]
    return result


# -- the status rules, one by one ------------------------------------------------------


def test_retired_job_is_not_exported(client: FlaskClient) -> None:
    assert series(client, "cronjob_status", "retired") == []
    assert state(client, "retired")["status"] == "retired"


def test_paused_and_maintenance_are_minus_one(client: FlaskClient, fake_clock: FakeClock) -> None:
    fake_clock.advance(10_000)
    assert row(client, "paused") == (-1, "paused")
    assert row(client, "maint") == (-1, "maintenance")
    assert series(client, "cronjob_status", "paused")[0][0].endswith('status="paused"')


def test_maintenance_until_ends_by_itself(client: FlaskClient, fake_clock: FakeClock) -> None:
    fake_clock.advance(3599)
    assert row(client, "window") == (-1, "maintenance")
    fake_clock.advance(1)  # 01:00, the end of the window
    assert row(client, "window") == (1, "pending")
    assert state(client, "window")["status"] == "active"
    fake_clock.advance(599)
    assert row(client, "window") == (1, "pending")
    fake_clock.advance(1)  # a full threshold after the window, not after first_seen
    assert row(client, "window") == (0, "never reported")


def test_started_run_past_max_runtime_is_timeout(
    client: FlaskClient, fake_clock: FakeClock
) -> None:
    assert client.post("/api/ping/backup/start").status_code == 200
    assert row(client, "backup") == (1, "running")
    fake_clock.advance(299)
    assert row(client, "backup") == (1, "running")
    fake_clock.advance(1)
    assert row(client, "backup") == (0, "timeout")
    client.post("/api/ping/backup/success")
    assert row(client, "backup") == (1, "ok")


def test_finish_with_another_run_id_does_not_end_the_run(
    client: FlaskClient, fake_clock: FakeClock
) -> None:
    post(client, {"job_name": "backup", "status": "start", "run_id": "a"})
    post(client, {"job_name": "backup", "status": "success", "run_id": "b", "duration": 1})
    assert state(client, "backup")["running"] is True
    fake_clock.advance(300)
    assert row(client, "backup") == (0, "timeout")
    post(client, {"job_name": "backup", "status": "success", "run_id": "a"})
    assert row(client, "backup") == (1, "ok")
    assert series(client, "cronjob_last_duration_seconds", "backup")[0][1] == "300"


def test_last_result_failure_is_failed(client: FlaskClient) -> None:
    assert client.post("/api/ping/backup/fail").status_code == 200
    assert row(client, "backup") == (0, "failed")
    assert client.post("/api/ping/backup/0").status_code == 200
    assert row(client, "backup") == (1, "ok")


def test_silence_past_threshold_is_missed_deadline(
    client: FlaskClient, fake_clock: FakeClock
) -> None:
    post(client, {"job_name": "backup", "status": "success", "duration": 27})
    fake_clock.advance(599)
    assert row(client, "backup") == (1, "ok")
    fake_clock.advance(1)
    assert row(client, "backup") == (0, "missed deadline")
    deadline = series(client, "cronjob_deadline_timestamp_seconds", "backup")[0][1]
    assert float(deadline) == T0 + 600


def test_silence_past_schedule_plus_grace_is_missed_deadline(
    client: FlaskClient, fake_clock: FakeClock
) -> None:
    # 2026-01-05 01:40 UTC is 02:40 in Berlin: the 02:30 run reported; next one tomorrow
    fake_clock.advance(100 * 60)
    post(client, {"job_name": "nightly", "status": "success"})
    tomorrow = T0 + 86400 + 90 * 60 + 900  # 02:30 CET = 01:30 UTC, plus 15 min grace
    fake_clock.now = tomorrow - 1
    assert row(client, "nightly") == (1, "ok")
    fake_clock.now = tomorrow
    assert row(client, "nightly") == (0, "missed deadline")


def test_never_reported_after_the_first_deadline(
    client: FlaskClient, fake_clock: FakeClock
) -> None:
    assert row(client, "backup@db1") == (1, "pending")
    fake_clock.advance(600)
    assert row(client, "backup@db1") == (0, "never reported")


def test_ok_running_pending(client: FlaskClient) -> None:
    assert row(client, "backup") == (1, "pending")
    client.post("/api/ping/backup/start")
    assert row(client, "backup") == (1, "running")
    client.post("/api/ping/backup/success")
    assert row(client, "backup") == (1, "ok")


def test_resume_from_paused_counts_from_the_resume(
    make_client: Any, fake_clock: FakeClock, tmp_path: Any
) -> None:
    from cronmetrics.web.app import services

    client = make_client(
        {"j.yaml": "job_name: j\nautomatic_failure_threshold: 600\nstatus: paused\n"}
    )
    post(client, {"job_name": "j", "status": "success"})
    fake_clock.advance(5000)
    assert row(client, "j") == (-1, "paused")
    (tmp_path / "jobs.d" / "j.yaml").write_text("job_name: j\nautomatic_failure_threshold: 600\n")
    services(client.application).reload()
    assert row(client, "j") == (1, "ok")
    fake_clock.advance(599)
    assert row(client, "j") == (1, "ok")
    fake_clock.advance(1)
    assert row(client, "j") == (0, "missed deadline")


# -- submissions -----------------------------------------------------------------------


def test_result_with_host_goes_to_the_host_specific_job(client: FlaskClient) -> None:
    response = post(client, {"job_name": "backup", "host": "db1", "status": "failure"})
    assert response.get_json() == {"accepted": 1, "jobs": ["backup@db1"]}
    response = post(client, {"job_name": "backup", "host": "db7", "status": "success"})
    assert response.get_json()["jobs"] == ["backup"]
    assert row(client, "backup@db1") == (0, "failed")
    assert row(client, "backup") == (1, "ok")


def test_full_result_fields_are_exported(client: FlaskClient, fake_clock: FakeClock) -> None:
    body = {
        "job_name": "backup",
        "host": "web1",
        "status": "failure",
        "duration": 27.5,
        "timestamp": iso(T0 - 60),
        "exit_code": 2,
        "output": "tail of the log",
        "labels": {"type": "backup"},
    }
    assert post(client, body).status_code == 200
    s = state(client, "backup")
    assert (s["last_duration"], s["last_exit_code"], s["last_status"]) == (27.5, 2, "failure")
    assert s["last_failure"] == "2026-01-04T23:59:00.000Z"
    text = client.get("/metrics").get_data(as_text=True)
    assert 'cronjob_last_exit_code{job_name="backup",host="",env="prod"} 2' in text
    assert 'type="backup"' not in text  # result labels stay in history


def test_batch_of_results(client: FlaskClient) -> None:
    response = post(
        client,
        [
            {"job_name": "backup", "status": "success"},
            {"job_name": "backup", "host": "db1", "status": "success"},
        ],
    )
    assert response.status_code == 200
    assert response.get_json() == {"accepted": 2, "jobs": ["backup", "backup@db1"]}


def test_batch_with_one_unknown_job_records_nothing(client: FlaskClient) -> None:
    response = post(
        client,
        [
            {"job_name": "backup", "status": "success"},
            {"job_name": "ghost", "status": "success"},
            {"job_name": "backup", "host": "db1", "status": "success"},
        ],
    )
    assert response.status_code == 404
    assert "ghost" in error(response)["message"]
    assert state(client, "backup")["runs_total"] == 0
    assert state(client, "backup@db1")["runs_total"] == 0


def test_batch_error_names_the_index_and_field(client: FlaskClient) -> None:
    response = post(
        client,
        [{"job_name": "backup", "status": "success"}, {"job_name": "backup", "status": "done"}],
    )
    assert response.status_code == 400
    err = error(response)
    assert err["code"] == "VALIDATION_ERROR"
    assert err["field"] == "[1].status"
    assert state(client, "backup")["runs_total"] == 0


def test_batch_larger_than_max_batch_is_rejected(make_client: Any) -> None:
    client = make_client(JOBS, limits={"max_batch": 3})
    response = post(client, [{"job_name": "backup", "status": "success"}] * 4)
    assert response.status_code == 400
    assert error(response)["code"] == "VALIDATION_ERROR"
    assert post(client, [{"job_name": "backup", "status": "success"}] * 3).status_code == 200


def test_empty_batch_is_rejected(client: FlaskClient) -> None:
    response = post(client, [])
    assert response.status_code == 400
    assert error(response)["code"] == "VALIDATION_ERROR"


def test_unknown_job_is_404(client: FlaskClient) -> None:
    response = post(client, {"job_name": "ghost", "host": "h1", "status": "success"})
    assert response.status_code == 404
    err = error(response)
    assert err["code"] == "NOT_FOUND"
    assert "ghost@h1" in err["message"]


def test_unknown_job_accepted_is_exported_as_unmanaged(make_client: Any) -> None:
    client = make_client(JOBS, unknown_jobs="accept")
    assert post(client, {"job_name": "adhoc", "host": "h1", "status": "success"}).status_code == 200
    assert series(client, "cronjob_unmanaged", "adhoc") == [('host="h1"', "1")]
    assert client.get("/api/job/adhoc@h1").get_json()["unmanaged"] is True


def test_future_timestamp_is_rejected(client: FlaskClient) -> None:
    response = post(client, {"job_name": "backup", "status": "success", "timestamp": iso(T0 + 301)})
    assert response.status_code == 400
    assert error(response)["field"] == "timestamp"
    ok = post(client, {"job_name": "backup", "status": "success", "timestamp": iso(T0 + 299)})
    assert ok.status_code == 200


def test_late_result_does_not_roll_state_back(client: FlaskClient) -> None:
    post(client, {"job_name": "backup", "status": "success", "timestamp": iso(T0)})
    post(client, {"job_name": "backup", "status": "failure", "timestamp": iso(T0 - 100)})
    s = state(client, "backup")
    assert (s["reason"], s["runs_total"], s["failures_total"]) == ("ok", 2, 1)


def test_output_is_truncated_and_redacted(make_client: Any) -> None:
    from cronmetrics.web.app import services

    client = make_client(JOBS, limits={"max_output_bytes": 64})
    output = "x" * 500 + "\nconnecting with password=hunter2\ndone"
    assert client.post("/api/ping/backup/success", data=output).status_code == 200
    stored = services(client.application).monitor.store.history("backup")[-1].output
    assert stored is not None
    assert "hunter2" not in stored
    assert stored.endswith("done")
    assert len(stored.encode()) <= 64


# -- malformed requests ----------------------------------------------------------------


def test_malformed_json_is_400_invalid_json(client: FlaskClient) -> None:
    response = client.post(
        "/api/job-result", data=b'{"job_name": "backup",', content_type="application/json"
    )
    assert response.status_code == 400
    assert error(response)["code"] == "INVALID_JSON"


def test_wrong_content_type_is_415(client: FlaskClient) -> None:
    body = json.dumps({"job_name": "backup", "status": "success"})
    response = client.post("/api/job-result", data=body, content_type="text/plain")
    assert response.status_code == 415
    assert error(response)["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_missing_content_type_is_415(client: FlaskClient) -> None:
    response = client.post("/api/job-result", data=b'{"job_name": "backup"}')
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"job_name": "backup", "status": "success", "duration": "long"}, "duration"),
        ({"job_name": "backup", "status": "success", "exit_code": "1"}, "exit_code"),
        ({"job_name": "backup", "status": "success", "exit_code": 1.5}, "exit_code"),
        ({"job_name": 7, "status": "success"}, "job_name"),
        ({"job_name": "backup", "status": "success", "labels": {"env": 1}}, "labels.env"),
        ({"job_name": "backup", "status": "success", "duration": -1}, "duration"),
        ({"job_name": "backup"}, "status"),
        ({"job_name": "backup", "status": "success", "colour": "red"}, "colour"),
        ({"job_name": "../etc", "status": "success"}, "job_name"),
        ({"job_name": "backup", "status": "success", "timestamp": "yesterday"}, "timestamp"),
    ],
)
def test_wrong_types_are_400_with_the_field(
    client: FlaskClient, body: dict[str, Any], field: str
) -> None:
    response = post(client, body)
    assert response.status_code == 400
    err = error(response)
    assert err["code"] == "VALIDATION_ERROR"
    assert err["field"] == field


@pytest.mark.parametrize("body", [b"", b"   ", b"\n"])
def test_empty_body_is_400(client: FlaskClient, body: bytes) -> None:
    response = client.post("/api/job-result", data=body, content_type="application/json")
    assert response.status_code == 400
    assert error(response)["code"] == "INVALID_JSON"


@pytest.mark.parametrize("body", [b"42", b'"text"', b"null", b"true"])
def test_body_that_is_not_an_object_is_400(client: FlaskClient, body: bytes) -> None:
    response = client.post("/api/job-result", data=body, content_type="application/json")
    assert response.status_code == 400
    assert error(response)["code"] in ("VALIDATION_ERROR", "INVALID_JSON")


def test_oversized_body_is_413(make_client: Any) -> None:
    client = make_client(JOBS, limits={"max_body_bytes": 2048})
    body = {"job_name": "backup", "status": "success", "output": "x" * 4000}
    response = post(client, body)
    assert response.status_code == 413
    assert error(response)["code"] == "PAYLOAD_TOO_LARGE"
    ping = client.post("/api/ping/backup/success", data=b"x" * 4000)
    assert ping.status_code == 413


@pytest.mark.parametrize("depth", [100, 10_000, 100_000])
def test_deeply_nested_json_is_a_clean_400(client: FlaskClient, depth: int) -> None:
    for body in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        response = client.post("/api/job-result", data=body, content_type="application/json")
        assert response.status_code == 400
        error(response)


# -- ping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "status", "exit_code"),
    [
        ("success", "success", 0),
        ("fail", "failure", None),
        ("failure", "failure", None),
        ("0", "success", 0),
        ("1", "failure", 1),
        ("255", "failure", 255),
    ],
)
def test_ping_actions(client: FlaskClient, action: str, status: str, exit_code: int | None) -> None:
    response = client.post(f"/api/ping/backup@db1/{action}")
    assert response.status_code == 200
    assert response.get_json()["jobs"] == ["backup@db1"]
    s = state(client, "backup@db1")
    assert (s["last_status"], s["last_exit_code"]) == (status, exit_code)


def test_ping_start_then_success_measures_the_duration(
    client: FlaskClient, fake_clock: FakeClock
) -> None:
    client.post("/api/ping/backup/start?run_id=r1")
    fake_clock.advance(42)
    client.post("/api/ping/backup/success?run_id=r1")
    assert state(client, "backup")["last_duration"] == 42


def test_ping_duration_query_parameter(client: FlaskClient) -> None:
    assert client.post("/api/ping/backup/success?duration=12.5").status_code == 200
    assert state(client, "backup")["last_duration"] == 12.5
    response = client.post("/api/ping/backup/success?duration=soon")
    assert response.status_code == 400
    assert error(response)["field"] == "duration"


@pytest.mark.parametrize("action", ["done", "256", "-1", "1000", "sucess", "%20"])
def test_ping_invalid_action_is_400(client: FlaskClient, action: str) -> None:
    response = client.post(f"/api/ping/backup/{action}")
    assert response.status_code == 400
    assert error(response)["field"] == "action"


@pytest.mark.parametrize("job_id", ["..", "a..b", "..%2Fetc", "a%2Fb", "%2E%2E", "bad name"])
def test_ping_invalid_id_is_rejected_cleanly(client: FlaskClient, job_id: str) -> None:
    response = client.post(f"/api/ping/{job_id}/success")
    assert response.status_code in (400, 404)
    err = error(response)
    assert err["code"] in ("VALIDATION_ERROR", "NOT_FOUND")


def test_ping_unknown_job_is_404(client: FlaskClient) -> None:
    response = client.post("/api/ping/ghost/success")
    assert response.status_code == 404
    assert error(response)["code"] == "NOT_FOUND"


@pytest.mark.parametrize("job_id", ["team/backup", "backup@db1/x", "a/b/c"])
def test_ping_with_a_slash_in_the_id_answers_with_the_id_rule(
    client: FlaskClient, job_id: str
) -> None:
    """A folder of jobs.d is not part of the id; say so instead of "no such endpoint"."""
    response = client.post(f"/api/ping/{job_id}/success")
    assert response.status_code == 400
    err = error(response)
    assert (err["code"], err["field"]) == ("VALIDATION_ERROR", "job_id")
    assert "no spaces or '/'" in err["message"]
    assert "no such endpoint" not in err["message"]


def test_ping_with_a_slash_still_needs_a_token(make_client: Any) -> None:
    from cronmetrics.web.auth import hash_token

    token = {"name": "t", "sha256": hash_token("cm_x"), "scopes": ["submit"]}
    client = make_client(JOBS, no_auth=False, auth={"tokens": [token]})
    assert client.post("/api/ping/team/backup/success").status_code == 401


def test_ping_body_is_the_output(client: FlaskClient) -> None:
    from cronmetrics.web.app import services

    client.post("/api/ping/backup/fail", data="disk full\n")
    history = services(client.application).monitor.store.history("backup")
    assert history[-1].output == "disk full\n"


# -- routing errors and metrics --------------------------------------------------------


def test_unknown_route_is_404_json(client: FlaskClient) -> None:
    response = client.get("/api/nope")
    assert response.status_code == 404
    assert error(response)["code"] == "NOT_FOUND"


def test_wrong_method_is_405_json(client: FlaskClient) -> None:
    response = client.get("/api/job-result/extra")
    assert response.status_code == 404
    response = client.put("/api/job-result", json={})
    assert response.status_code == 405
    assert error(response)["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in response.headers["Allow"]


def test_metrics_gzip_is_the_plain_body(client: FlaskClient) -> None:
    post(client, {"job_name": "backup", "status": "success"})
    plain = client.get("/metrics")
    zipped = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    # the self-metrics tail (process CPU time) may move between two scrapes
    cut = b"# HELP cronjobs "
    assert gzip.decompress(zipped.data).split(cut)[0] == plain.data.split(cut)[0]


def test_submissions_are_counted_by_outcome(client: FlaskClient) -> None:
    post(client, {"job_name": "backup", "status": "success"})
    post(client, {"job_name": "ghost", "status": "success"})
    post(client, {"job_name": "backup", "status": "nope"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'cronmetrics_submissions_total{outcome="accepted"} 1.0' in text
    assert 'cronmetrics_submissions_total{outcome="unknown_job"} 1.0' in text
    assert 'cronmetrics_submissions_total{outcome="invalid"} 1.0' in text


def test_threshold_and_schedule_together_the_earliest_deadline_wins(
    make_client: Any, fake_clock: FakeClock
) -> None:
    client = make_client(
        {
            "both.yaml": 'job_name: both\nschedule: "0 12 * * *"\ngrace: 60\n'
            "automatic_failure_threshold: 7200\n"
        }
    )
    post(client, {"job_name": "both", "status": "success"})  # 00:00: threshold first (02:00)
    assert float(series(client, "cronjob_deadline_timestamp_seconds", "both")[0][1]) == T0 + 7200
    fake_clock.advance(11 * 3600)  # 11:00: the schedule (12:01) is now the earlier one
    post(client, {"job_name": "both", "status": "success"})
    assert state(client, "both")["deadline"] == "2026-01-05T12:01:00.000Z"
    fake_clock.now = T0 + 12 * 3600 + 60
    assert row(client, "both") == (0, "missed deadline")


def test_log_lines_of_a_request_name_the_job_and_host(make_client, capsys) -> None:  # type: ignore[no-untyped-def]
    client = make_client({"a.yaml": "job_name: backup\nautomatic_failure_threshold: 60\n"})
    capsys.readouterr()
    r = client.post(
        "/api/job-result", json={"job_name": "nightly", "host": "db1", "status": "success"}
    )
    assert r.status_code == 404
    r = client.post("/api/ping/nope@db9/fail", data="boom")
    assert r.status_code == 404
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    failures = [line for line in lines if line["msg"] == "request failed"]
    assert [(line["job"], line["host"]) for line in failures] == [
        ("nightly@db1", "db1"),
        ("nope@db9", "db9"),
    ]
    assert all(len(line["request_id"]) == 32 for line in failures)
