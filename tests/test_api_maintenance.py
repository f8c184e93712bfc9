"""``/api/maintenance``: runtime windows silence jobs by matcher, end by themselves, and
bad input is a 400 naming its field (Flask test client, fake clock)."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from cronmetrics.logs import rfc3339
from cronmetrics.web.auth import hash_token

T0 = 1_767_571_200.0  # the fake clock's start (conftest.FakeClock)
JOBS = {
    "db1/backup.yaml": "job_name: backup\nhost: db1\nautomatic_failure_threshold: 600\n"
    "labels: {env: prod}\n",
    "db1/vacuum.yaml": "job_name: vacuum\nhost: db1\nschedule: '0 * * * *'\n",
    "web1/logrotate.yaml": "job_name: logrotate\nhost: web1\nautomatic_failure_threshold: 600\n",
}


@pytest.fixture
def client(make_client: Any) -> FlaskClient:
    c: FlaskClient = make_client(JOBS, job_writes="disabled")  # jobs.d is read-only
    return c


def status_lines(client: FlaskClient) -> dict[str, str]:
    out = {}
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith("cronjob_status{"):
            name = line.split('job_name="')[1].split('"')[0]
            out[name] = line
    return out


def create(client: FlaskClient, **body: Any) -> Any:
    body.setdefault("matchers", ["host=db1"])
    return client.post("/api/maintenance", json=body)


def test_one_call_silences_every_job_of_a_host_and_they_come_back_by_themselves(
    client: FlaskClient, fake_clock: Any
) -> None:
    answer = create(client, duration="2h", comment="disk swap")
    assert answer.status_code == 201, answer.get_json()
    window = answer.get_json()
    assert answer.headers["Location"] == f"/api/maintenance/{window['id']}"
    assert (window["state"], window["covers"]) == ("active", 2)
    assert window["jobs"] == ["backup@db1", "vacuum@db1"]
    assert window["end"] == rfc3339(T0 + 7200)
    assert window["created_by"] == "anonymous"
    lines = status_lines(client)
    assert lines["backup"].endswith('status="maintenance"} -1')
    assert lines["vacuum"].endswith('status="maintenance"} -1')
    assert lines["logrotate"].endswith('status="active"} 1')
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'cronmetrics_maintenance_windows{state="active"} 1.0' in metrics
    labels = 'job_name="backup",host="db1",env="prod"'
    assert f"cronjob_maintenance_end_timestamp_seconds{{{labels}}} {int(T0 + 7200)}" in metrics
    job = client.get("/api/job/backup@db1").get_json()["state"]
    assert (job["reason"], job["maintenance_windows"]) == ("maintenance", [window["id"]])
    assert job["maintenance_end"] == rfc3339(T0 + 7200)

    fake_clock.advance(2 * 3600 + 1)  # far past the 600 s threshold, but counted from the end
    lines = status_lines(client)
    assert lines["backup"].endswith('status="active"} 1')
    job = client.get("/api/job/backup@db1").get_json()["state"]
    assert (job["reason"], job["deadline"]) == ("pending", rfc3339(T0 + 7200 + 600))
    listed = client.get("/api/maintenance").get_json()
    assert listed["count"] == 0
    expired = client.get("/api/maintenance?state=expired").get_json()["windows"]
    assert [w["id"] for w in expired] == [window["id"]]


def test_results_arrive_inside_a_window_and_count_when_it_ends(
    client: FlaskClient, fake_clock: Any
) -> None:
    create(client, end=rfc3339(T0 + 600))
    sent = client.post(
        "/api/job-result", json={"job_name": "backup", "host": "db1", "status": "failure"}
    )
    assert sent.status_code == 200, sent.get_json()
    assert client.get("/api/job/backup@db1").get_json()["state"]["reason"] == "maintenance"
    assert len(client.get("/api/job/backup@db1/results").get_json()["results"]) == 1
    fake_clock.advance(600)
    assert client.get("/api/job/backup@db1").get_json()["state"]["reason"] == "failed"


def test_ending_a_window_early_brings_the_jobs_back_and_a_second_end_is_409(
    client: FlaskClient, fake_clock: Any
) -> None:
    wid = create(client, duration=3600).get_json()["id"]
    fake_clock.advance(60)
    ended = client.delete(f"/api/maintenance/{wid}")
    assert ended.status_code == 200, ended.get_json()
    assert (ended.get_json()["state"], ended.get_json()["end"]) == ("expired", rfc3339(T0 + 60))
    assert ended.get_json()["ended_by"] == "anonymous"
    assert status_lines(client)["backup"].endswith('status="active"} 1')
    again = client.delete(f"/api/maintenance/{wid}")
    assert again.status_code == 409
    assert client.get(f"/api/maintenance/{wid}").get_json()["state"] == "expired"
    assert client.get("/api/maintenance/nope").status_code == 404


def test_a_pending_window_starts_by_itself(client: FlaskClient, fake_clock: Any) -> None:
    answer = create(client, start=rfc3339(T0 + 300), duration="10m").get_json()
    assert answer["state"] == "pending"
    assert status_lines(client)["backup"].endswith("} 1")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'cronmetrics_maintenance_windows{state="pending"} 1.0' in metrics
    fake_clock.advance(300)
    assert status_lines(client)["backup"].endswith("} -1")


def test_a_window_matching_nothing_is_accepted_and_says_so(client: FlaskClient) -> None:
    answer = create(client, matchers=["host=db9"], duration="1h")
    assert answer.status_code == 201
    assert (answer.get_json()["covers"], answer.get_json()["jobs"]) == (0, [])


def test_regex_and_object_matchers_are_anded(client: FlaskClient) -> None:
    answer = create(
        client,
        matchers=["job_name=~back.*|vac.*", {"name": "env", "op": "!=", "value": "prod"}],
        duration="1h",
    )
    assert answer.get_json()["jobs"] == ["vacuum@db1"]
    assert answer.get_json()["matchers"][1] == {"name": "env", "op": "!=", "value": "prod"}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"matchers": ["host=db1"]}, "end", "end is required"),
        ({"duration": "2h", "end": "2026-01-05T03:00:00Z"}, "end", "not both"),
        ({"end": "2026-01-04T00:00:00Z"}, "end", "in the past"),
        ({"start": "2026-01-05T05:00:00Z", "end": "2026-01-05T04:00:00Z"}, "end", "after start"),
        ({"end": "tomorrow"}, "end", "is not a timestamp"),
        ({"duration": "31d"}, "duration", "at most 30 days"),
        ({"duration": "2 hours"}, "duration", "is not a duration"),
        ({"duration": 0}, "duration", "must be positive"),
        ({"matchers": ["host=~db(", "x=1"], "duration": "1h"}, "matchers.0", "invalid regular"),
        ({"matchers": ["ok=1", "host"], "duration": "1h"}, "matchers.1", "must look like"),
        (
            {"matchers": [{"name": "host", "op": "~", "value": "a"}], "duration": "1h"},
            "matchers.0",
            "operator",
        ),
        ({"matchers": [], "duration": "1h"}, "matchers", "at least 1"),
        ({"duration": "1h", "comment": "x" * 1001}, "comment", "1000"),
        ({"duration": "1h", "until": "x"}, "until", "unknown key"),
    ],
)
def test_bad_windows_are_400_naming_the_field(
    client: FlaskClient, body: dict[str, Any], field: str, message: str
) -> None:
    answer = create(client, **body)
    assert answer.status_code == 400, answer.get_json()
    error = answer.get_json()["error"]
    assert error["field"] == field, error
    assert message in error["message"], error
    assert client.get("/api/maintenance?state=all").get_json()["count"] == 0  # nothing kept


def test_the_maximum_duration_is_configurable(make_client: Any) -> None:
    client = make_client(JOBS, maintenance={"max_duration": 3600})
    refused = create(client, duration="2h")
    assert refused.status_code == 400
    message = refused.get_json()["error"]["message"]
    assert "may last at most 1 hour (maintenance.max_duration)" in message
    assert create(client, duration="1h").status_code == 201


def test_an_unknown_state_filter_is_400(client: FlaskClient) -> None:
    answer = client.get("/api/maintenance?state=over")
    assert (answer.status_code, answer.get_json()["error"]["field"]) == (400, "state")


# -- scopes --------------------------------------------------------------------------------


def _token(name: str, scopes: list[str], jobs: list[str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "sha256": hash_token(f"t-{name}"), "scopes": scopes}
    if jobs:
        entry["jobs"] = jobs
    return entry


@pytest.fixture
def secured(make_client: Any) -> FlaskClient:
    tokens = [
        _token("oncall", ["maintenance"]),
        _token("viewer", ["read"]),
        _token("backups", ["admin"], ["backup*"]),
        _token("ops", ["admin"]),
    ]
    c: FlaskClient = make_client(JOBS, no_auth=False, auth={"tokens": tokens})
    return c


def _as(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer t-{name}"}


def test_the_maintenance_scope_may_silence_and_records_who_did(secured: FlaskClient) -> None:
    body = {"matchers": ["host=db1"], "duration": "1h"}
    made = secured.post("/api/maintenance", json=body, headers=_as("oncall"))
    assert made.status_code == 201
    assert made.get_json()["created_by"] == "oncall"
    assert secured.post("/api/maintenance", json=body, headers=_as("ops")).status_code == 201
    assert secured.post("/api/maintenance", json=body, headers=_as("viewer")).status_code == 403
    limited = secured.post("/api/maintenance", json=body, headers=_as("backups"))
    assert limited.status_code == 403
    assert "limited to some jobs" in limited.get_json()["error"]["message"]
    assert secured.post("/api/maintenance", json=body).status_code == 401
    assert secured.get("/api/maintenance", headers=_as("viewer")).get_json()["count"] == 2
    wid = made.get_json()["id"]
    assert secured.delete(f"/api/maintenance/{wid}", headers=_as("viewer")).status_code == 403
    ended = secured.delete(f"/api/maintenance/{wid}", headers=_as("ops"))
    assert ended.get_json()["ended_by"] == "ops"


def test_silencing_one_job_for_a_duration_covers_only_that_job(
    client: FlaskClient, fake_clock: Any
) -> None:
    from cronmetrics.web.app import services

    service = services(client.application).maintenance
    assert service is not None
    window = service.silence_job("backup", "db1", 600, "dashboard", "reboot")
    assert service.jobs(window) == ["backup@db1"]
    assert status_lines(client)["backup"].endswith("} -1")
    assert status_lines(client)["vacuum"].endswith("} 1")
    fake_clock.advance(600)
    assert status_lines(client)["backup"].endswith("} 1")
