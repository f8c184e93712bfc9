"""The dashboard through the Flask test client: every page, filter, action and auth case."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronmetrics.web.app import services
from cronmetrics.web.auth import hash_token
from cronmetrics.web.sessions import LOGOUT_KIND

ADMIN, VIEWER, SUBMITTER, LIMITED = (
    "cm_admin_token_for_tests_000000000000",
    "cm_viewer_token_for_tests_00000000000",
    "cm_submit_token_for_tests_00000000000",
    "cm_limited_token_for_tests_0000000000",
)
SECRET = "a-dashboard-session-secret-for-the-tests-0123"

JOBS = {
    "team/backup.yaml": (
        "job_name: backup\nhost: db1\nautomatic_failure_threshold: 3600\n"
        "labels: {team: dba, env: prod}\ndescription: Nightly dump\n"
    ),
    "team/report.yaml": (
        "job_name: report\nschedule: '30 2 * * *'\ntimezone: Europe/Berlin\ngrace: 900\n"
        "labels: {team: data, env: prod}\n"
    ),
    "team/sync.yaml": (
        "job_name: sync\nhost: web1\nautomatic_failure_threshold: 7200\n"
        "labels: {team: web, env: stage}\n"
    ),
    "team/quiet.yaml": (
        "job_name: quiet\nautomatic_failure_threshold: 600\nstatus: paused\nlabels: {team: web}\n"
    ),
}


def _tokens() -> list[dict[str, Any]]:
    return [
        {"name": "ops", "sha256": hash_token(ADMIN), "scopes": ["admin", "read", "submit"]},
        {"name": "viewer", "sha256": hash_token(VIEWER), "scopes": ["read"]},
        {"name": "cron", "sha256": hash_token(SUBMITTER), "scopes": ["submit"]},
        {
            "name": "dba",
            "sha256": hash_token(LIMITED),
            "scopes": ["read", "admin"],
            "jobs": ["backup*"],
        },
    ]


def _submit(client: FlaskClient, body: Any, token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post("/api/job-result", json=body, headers=headers)
    assert response.status_code in (200, 202), response.get_data(as_text=True)


def _seed(client: FlaskClient, token: str | None = None) -> None:
    """backup fails (exit 2, with a secret in its output), sync succeeds."""
    _submit(
        client,
        [
            {"job_name": "sync", "host": "web1", "status": "success", "duration": 12},
            {
                "job_name": "backup",
                "host": "db1",
                "status": "failure",
                "exit_code": 2,
                "duration": 30,
                "output": "dumping\nDB_PASSWORD=hunter2 rejected\n",
            },
        ],
        token,
    )


@pytest.fixture
def open_client(make_client: Any) -> FlaskClient:
    client: FlaskClient = make_client(JOBS)
    _seed(client)
    return client


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr id="job-[^"]+" data-id="([^"]+)"', html)


def _page(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token in the form"
    return match.group(1)


# -- the jobs list ---------------------------------------------------------------------------


def test_list_shows_failing_first_with_counts_badges_and_expectations(
    open_client: FlaskClient,
) -> None:
    html = _page(open_client, "/")
    assert _ids(html) == ["backup@db1", "report", "sync@web1", "quiet"]
    assert 'class="badge s-failed"' in html and "failed</span>" in html
    assert "30 2 * * * Europe/Berlin + 15 min" in html
    assert "every 1 h" in html and "every 2 h" in html
    assert re.search(r"failing <b>1</b>", html)
    assert re.search(r"paused <b>1</b>", html)
    assert "<title>(1 failing) Jobs" in html
    assert 'title="last 1 runs: 1 failed"' not in html  # the strip names what it shows
    assert 'aria-label="last 1 runs: 1 failed"' in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=failing", ["backup@db1"]),
        ("status=failed", ["backup@db1"]),
        ("status=ok", ["sync@web1"]),
        ("status=pending", ["report"]),
        ("status=paused", ["quiet"]),
        ("host=web1", ["sync@web1"]),
        ("label=team%3Dweb", ["sync@web1", "quiet"]),
        ("label=team%3Dweb&label=env%3Dstage", ["sync@web1"]),
        ("q=DUMP", ["backup@db1"]),
        ("q=env%3Dstage", ["sync@web1"]),
        ("sort=name", ["backup@db1", "quiet", "report", "sync@web1"]),
        ("sort=name&order=desc", ["sync@web1", "report", "quiet", "backup@db1"]),
        ("sort=duration", ["backup@db1", "sync@web1", "quiet", "report"]),
        ("sort=name&per_page=2&page=2", ["report", "sync@web1"]),
    ],
)
def test_list_filters_sorts_and_pages_from_the_url(
    open_client: FlaskClient, query: str, expected: list[str]
) -> None:
    assert _ids(_page(open_client, "/?" + query)) == expected


def test_list_links_keep_the_other_filters(open_client: FlaskClient) -> None:
    html = _page(open_client, "/?q=a&sort=name")
    # a label chip adds its label to the current filters
    assert 'href="?label=team%3Ddba&amp;q=a&amp;sort=name"' in html
    # a status count keeps the label and the text
    html = _page(open_client, "/?label=team%3Dweb")
    assert 'href="?status=paused&amp;label=team%3Dweb"' in html
    assert "2 of 4 jobs match" in html


def test_list_pages_at_many_jobs(make_client: Any) -> None:
    jobs = {
        f"j{i:03}.yaml": f"job_name: j{i:03}\nautomatic_failure_threshold: 60\n" for i in range(250)
    }
    client = make_client(jobs)
    first = _ids(_page(client, "/"))
    assert len(first) == 100 and first[0] == "j000"
    last = _page(client, "/?page=3")
    assert _ids(last)[-1] == "j249" and "Page 3 of 3" in last
    assert _ids(_page(client, "/?page=99")) == _ids(last)  # past the end: the last page


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("label=noequals", "label"),
        ("sort=x", "sort"),
        ("page=0", "page"),
    ],
)
def test_bad_list_parameters_are_a_400_page_naming_them(
    open_client: FlaskClient, query: str, field: str
) -> None:
    html = _page(open_client, "/?" + query, 400)
    assert f"<code>{field}</code>" in html


def test_no_jobs_says_how_to_add_one(make_client: Any) -> None:
    assert "No jobs defined yet" in _page(make_client({}), "/")


# -- one job ---------------------------------------------------------------------------------


def test_job_page_says_why_and_shows_definition_stats_chart_history(
    open_client: FlaskClient,
) -> None:
    html = _page(open_client, "/jobs/backup@db1")
    assert "Failed at 00:00 UTC (just now) with exit code 2." in html
    assert "team/backup.yaml" in html and "automatic_failure_threshold: 3600" in html
    assert "<svg" in html and 'class="bar fail"' in html
    assert "DB_PASSWORD=[REDACTED] rejected" in html and "hunter2" not in html
    assert "/api/job-result" in html and "cronmetrics run --job backup@db1" in html
    assert "Last 7 days" in html
    assert "No maintenance covers this job now." in html


def test_job_page_sentences_follow_the_state(open_client: FlaskClient, fake_clock: Any) -> None:
    assert "OK: last succeeded at 00:00 UTC (just now)" in _page(open_client, "/jobs/sync@web1")
    assert "Paused: not monitored" in _page(open_client, "/jobs/quiet")
    fake_clock.advance(3 * 3600)
    html = _page(open_client, "/jobs/sync@web1")
    assert "Missed its deadline at 02:00 UTC (1 h ago)" in html


def test_job_history_is_paged(make_client: Any, fake_clock: Any) -> None:
    client = make_client(JOBS)
    start = fake_clock.now
    for i in range(45):
        fake_clock.now = start + i * 60
        _submit(client, {"job_name": "sync", "host": "web1", "status": "success", "duration": i})
    first = _page(client, "/jobs/sync@web1")
    assert "Page 1 of 3" in first and ">44 s<" in first
    third = _page(client, "/jobs/sync@web1?page=3")
    assert ">0 s<" in third and ">44 s<" not in third
    _page(client, "/jobs/sync@web1?page=x", 400)


def test_unknown_job_is_a_404_page(open_client: FlaskClient) -> None:
    assert "job &#39;nope&#39; not found" in _page(open_client, "/jobs/nope", 404)


# -- the exporter page -----------------------------------------------------------------------


def test_exporter_page_lists_invalid_files_with_file_line_message(make_client: Any) -> None:
    client = make_client(
        {**JOBS, "bad.yaml": "job_name: bad\nautomatic_failure_threshold: 60\nlables: {}\n"}
    )
    html = _page(client, "/exporter")
    assert re.search(r"bad\.yaml:3:\d+: [^<]*lables", html), html
    assert "1 invalid job file" in html
    assert "cronmetrics 0.1.0" in html or "cronmetrics " in html
    assert "jobs_dir" in html and "state_dir" in html  # the health checks


# -- actions ---------------------------------------------------------------------------------


def _act(client: FlaskClient, job: str, action: str, **extra: str) -> Any:
    csrf = _csrf(_page(client, f"/jobs/{job}"))
    return client.post(f"/jobs/{job}/action", data={"csrf": csrf, "action": action, **extra})


def test_pause_and_resume_write_the_job_file(open_client: FlaskClient, tmp_path: Path) -> None:
    path = tmp_path / "jobs.d" / "team" / "sync.yaml"
    response = _act(open_client, "sync@web1", "pause")
    assert response.status_code == 302 and response.headers["Location"] == "/jobs/sync@web1"
    assert "status: paused" in path.read_text()
    html = _page(open_client, "/jobs/sync@web1")
    assert "sync@web1 is paused." in html and 'value="resume"' in html
    assert _ids(_page(open_client, "/?status=paused")) == ["quiet", "sync@web1"]
    _act(open_client, "sync@web1", "resume")
    assert "status" not in path.read_text()
    assert "OK: last succeeded" in _page(open_client, "/jobs/sync@web1")


def test_maintenance_for_a_duration_and_ending_it(
    open_client: FlaskClient, tmp_path: Path, fake_clock: Any
) -> None:
    path = tmp_path / "jobs.d" / "team" / "backup.yaml"
    _act(open_client, "backup@db1", "maintenance", **{"for": "7200"})
    text = path.read_text()
    assert "status: maintenance" in text and "maintenance_until: '2026-01-05T02:00:00Z'" in text
    html = _page(open_client, "/jobs/backup@db1")
    assert "In maintenance until 02:00 UTC (in 2 h)" in html
    assert 'value="end-maintenance"' in html
    _act(open_client, "backup@db1", "end-maintenance")
    assert "maintenance" not in path.read_text()
    assert _act(open_client, "backup@db1", "maintenance", **{"for": "5"}).status_code == 400
    assert _act(open_client, "backup@db1", "explode").status_code == 400


def test_an_action_without_the_csrf_token_is_refused(
    open_client: FlaskClient, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.d" / "team" / "sync.yaml"
    before = path.read_text()
    _page(open_client, "/jobs/sync@web1")  # has a session with a token, but does not send it
    for data in ({"action": "pause"}, {"action": "pause", "csrf": "forged"}):
        response = open_client.post("/jobs/sync@web1/action", data=data)
        assert response.status_code == 403
    csrf = _csrf(_page(open_client, "/jobs/sync@web1"))
    response = open_client.post(
        "/jobs/sync@web1/action",
        data={"action": "pause", "csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403 and "another origin" in response.get_data(as_text=True)
    assert path.read_text() == before


def test_actions_on_a_read_only_jobs_dir_explain_why(make_client: Any) -> None:
    client = make_client(JOBS, job_writes="disabled")
    html = _page(client, "/jobs/sync@web1")
    assert 'value="pause"' not in html and "job_writes: disabled" in html
    with client.session_transaction() as session:
        session["csrf"] = "known"
    response = client.post("/jobs/sync@web1/action", data={"csrf": "known", "action": "pause"})
    assert response.status_code == 302
    assert "Could not change sync@web1" in _page(client, "/jobs/sync@web1")


# -- auth --------------------------------------------------------------------------------------


def _secure_client(make_client: Any) -> FlaskClient:
    client: FlaskClient = make_client(
        JOBS, no_auth=False, auth={"tokens": _tokens()}, dashboard={"session_secret": SECRET}
    )
    _seed(client, ADMIN)
    return client


@pytest.fixture
def secured(make_client: Any) -> FlaskClient:
    return _secure_client(make_client)


def _login(client: FlaskClient, token: str, next_url: str = "/") -> Any:
    csrf = _csrf(_page(client, "/login"))
    return client.post("/login", data={"token": token, "csrf": csrf, "next": next_url})


def test_with_tokens_every_page_needs_a_login(secured: FlaskClient) -> None:
    for url in ("/", "/jobs/sync@web1", "/exporter", "/?label=team%3Dweb"):
        response = secured.get(url)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")
    assert secured.post("/jobs/sync@web1/action", data={"action": "pause"}).status_code == 302
    assert secured.get("/static/dashboard.css").status_code == 200  # public


def test_login_sets_a_strict_httponly_cookie_without_the_token(secured: FlaskClient) -> None:
    response = _login(secured, VIEWER, "/?label=team%3Dweb")
    assert response.status_code == 302 and response.headers["Location"] == "/?label=team%3Dweb"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert VIEWER not in cookie and hash_token(VIEWER) not in cookie
    assert _ids(_page(secured, "/?label=team%3Dweb")) == ["sync@web1", "quiet"]


def test_the_cookie_is_secure_over_tls(secured: FlaskClient) -> None:
    csrf = _csrf(secured.get("/login", base_url="https://localhost").get_data(as_text=True))
    response = secured.post(
        "/login", data={"token": VIEWER, "csrf": csrf}, base_url="https://localhost"
    )
    assert "Secure" in response.headers["Set-Cookie"]


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        ("cm_not_a_token", 401, "unknown token"),
        ("", 401, "enter a token"),
        (SUBMITTER, 403, "lacks the &#39;read&#39; scope"),
    ],
)
def test_a_bad_login_says_why_and_sets_no_session(
    secured: FlaskClient, token: str, status: int, message: str
) -> None:
    response = _login(secured, token)
    assert response.status_code == status and message in response.get_data(as_text=True)
    assert secured.get("/").status_code == 302


def test_login_without_its_csrf_token_is_refused(secured: FlaskClient) -> None:
    assert secured.post("/login", data={"token": VIEWER}).status_code == 403


def test_login_never_redirects_off_site(secured: FlaskClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        assert _login(secured, VIEWER, target).headers["Location"] == "/"


def test_read_only_viewers_see_no_actions_and_cannot_post_them(
    secured: FlaskClient, tmp_path: Path
) -> None:
    _login(secured, VIEWER)
    html = _page(secured, "/jobs/sync@web1")
    assert "Signed in as <b>viewer</b> (read only)" in html
    assert 'value="pause"' not in html
    response = secured.post("/jobs/sync@web1/action", data={"action": "pause", "csrf": _csrf(html)})
    assert response.status_code == 403
    assert "status" not in (tmp_path / "jobs.d" / "team" / "sync.yaml").read_text()


def test_admins_see_and_use_actions(secured: FlaskClient, tmp_path: Path) -> None:
    _login(secured, ADMIN)
    assert _act(secured, "sync@web1", "pause").status_code == 302
    assert "status: paused" in (tmp_path / "jobs.d" / "team" / "sync.yaml").read_text()


def test_a_token_limited_to_some_jobs_sees_only_those(secured: FlaskClient) -> None:
    _login(secured, LIMITED)
    assert _ids(_page(secured, "/")) == ["backup@db1"]
    _page(secured, "/jobs/sync@web1", 403)
    assert 'value="pause"' in _page(secured, "/jobs/backup@db1")


def test_logout_ends_the_session(secured: FlaskClient) -> None:
    _login(secured, VIEWER)
    assert secured.get("/").status_code == 200
    response = secured.get("/logout")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert secured.get("/").status_code == 302


def test_a_copy_of_the_cookie_is_refused_after_logout_and_other_sessions_go_on(
    secured: FlaskClient, fake_clock: Any
) -> None:
    _login(secured, VIEWER)
    copied = secured.get_cookie("cronmetrics_session")
    assert copied is not None
    other = secured.application.test_client()  # another browser, same token
    _login(other, VIEWER)
    secured.get("/logout")
    secured.set_cookie("cronmetrics_session", copied.value)  # the copy a HAR file kept
    assert secured.get("/").status_code == 302
    assert other.get("/").status_code == 200  # one logout does not end every session
    (record,) = services(secured.application).store.list_records(LOGOUT_KIND)
    assert re.fullmatch(r"[0-9a-f]{32}", record.key)  # a keyed digest, not the session id
    assert record.value["until"] == fake_clock() + 12 * 3600  # kept while it could be used


def test_logging_in_and_out_in_a_loop_keeps_the_logout_records_bounded(
    secured: FlaskClient, fake_clock: Any
) -> None:
    store = services(secured.application).store
    other = secured.application.test_client()  # another browser, logged in before
    _login(other, VIEWER)
    fake_clock.advance(1)
    _login(secured, VIEWER)
    first = secured.get_cookie("cronmetrics_session")
    assert first is not None
    secured.get("/logout")
    for _ in range(200):  # a script holding a read token
        fake_clock.advance(1)
        _login(secured, VIEWER)
        secured.get("/logout")
    assert len(store.list_records(LOGOUT_KIND)) <= 102  # 100 one by one, 1 mark, 1 new
    secured.set_cookie("cronmetrics_session", first.value)
    assert secured.get("/").status_code == 302  # the oldest copy is still refused
    assert other.get("/").status_code == 302  # folded: the token's older logins end too
    fake_clock.advance(1)
    _login(secured, VIEWER)
    assert secured.get("/").status_code == 200  # a login after that goes on


def test_logout_records_are_dropped_once_their_sessions_would_have_expired(
    secured: FlaskClient, fake_clock: Any
) -> None:
    store = services(secured.application).store
    _login(secured, VIEWER)
    secured.get("/logout")
    fake_clock.advance(13 * 3600)  # past the 12 h lifetime: that record protects nothing
    _login(secured, VIEWER)
    secured.get("/logout")
    (record,) = store.list_records(LOGOUT_KIND)
    assert record.value["until"] == fake_clock() + 12 * 3600


def test_a_session_expires(secured: FlaskClient, fake_clock: Any) -> None:
    _login(secured, VIEWER)
    fake_clock.advance(11 * 3600)
    assert secured.get("/").status_code == 200
    fake_clock.advance(2 * 3600)  # past the default 12 hours
    assert secured.get("/").status_code == 302


def test_sessions_span_replicas_with_the_same_secret_and_end_with_the_token(
    make_client: Any, secured: FlaskClient, tmp_path: Path
) -> None:
    _login(secured, VIEWER)
    cookie = secured.get_cookie("cronmetrics_session")
    assert cookie is not None
    replica = make_client(
        JOBS,
        no_auth=False,
        auth={"tokens": _tokens()},
        dashboard={"session_secret": SECRET},
        state_dir=tmp_path / "replica",
    )
    replica.set_cookie("cronmetrics_session", cookie.value)
    assert replica.get("/").status_code == 200
    rotated = [t for t in _tokens() if t["name"] != "viewer"] + [
        {
            "name": "viewer",
            "sha256": hash_token("cm_the_new_viewer_token_000000000"),
            "scopes": ["read"],
        }
    ]
    after_rotation = make_client(
        JOBS,
        no_auth=False,
        auth={"tokens": rotated},
        dashboard={"session_secret": SECRET},
        state_dir=tmp_path / "rotated",
    )
    after_rotation.set_cookie("cronmetrics_session", cookie.value)
    assert after_rotation.get("/").status_code == 302


def test_an_unset_secret_is_generated_and_logged(
    make_client: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client(JOBS, no_auth=False, auth={"tokens": _tokens()})
    _login(client, VIEWER)
    assert client.get("/").status_code == 200
    err = capfd.readouterr().err
    assert "dashboard.session_secret is not set" in err
    assert VIEWER not in err and SECRET not in err


def test_the_token_never_reaches_a_log_line(
    make_client: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    secured = _secure_client(make_client)  # its log handler writes to this test's stderr
    _login(secured, "cm_wrong_guess_0000000000000000")
    _login(secured, ADMIN)
    _act(secured, "sync@web1", "pause")
    err = capfd.readouterr().err
    assert '"token": "ops"' in err
    assert ADMIN not in err and "cm_wrong_guess" not in err


def test_a_bearer_header_reads_the_dashboard_too(secured: FlaskClient) -> None:
    response = secured.get("/", headers={"Authorization": f"Bearer {VIEWER}"})
    assert response.status_code == 200
    assert secured.get("/", headers={"Authorization": f"Bearer {SUBMITTER}"}).status_code == 403


def test_a_link_from_another_site_reloads_same_site_before_asking_to_log_in(
    secured: FlaskClient,
) -> None:
    response = secured.get("/jobs/sync@web1", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200
    assert 'http-equiv="refresh" content="0;url=/jobs/sync@web1"' in response.get_data(as_text=True)


def test_no_auth_has_no_login(open_client: FlaskClient) -> None:
    assert open_client.get("/login").headers["Location"] == "/"
    assert "Log out" not in _page(open_client, "/")


def test_pages_forbid_third_party_content_and_framing(open_client: FlaskClient) -> None:
    response = open_client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from elsewhere
    for asset in ("dashboard.css", "dashboard.js"):
        static = open_client.get(f"/static/{asset}")
        assert static.status_code == 200 and not re.search(rb"https?://|url\(", static.data)


# -- maintenance windows ---------------------------------------------------------------------


def test_maintenance_for_a_duration_is_a_window_that_leaves_the_file_alone(
    make_client: Any, tmp_path: Path
) -> None:
    client = make_client(JOBS, job_writes="disabled")  # works on a read-only jobs dir too
    _seed(client)
    path = tmp_path / "jobs.d" / "team" / "sync.yaml"
    before = path.read_text()
    response = _act(client, "sync@web1", "window", **{"for": "3600", "comment": "db move"})
    assert response.status_code == 302
    html = _page(client, "/jobs/sync@web1")
    assert "sync@web1 is in maintenance until 2026-01-05 01:00:00 UTC." in html
    assert "In maintenance (a maintenance window) until 01:00 UTC (in 1 h)" in html
    assert "<code>job_name=&#34;sync&#34;</code>" in html or "job_name=" in html
    assert "db move" in html and 'value="end-window"' in html
    assert path.read_text() == before
    assert _ids(_page(client, "/?status=maintenance")) == ["sync@web1"]
    wid = re.search(r'name="window" value="([^"]+)"', html)
    assert wid is not None
    csrf = _csrf(html)
    response = client.post(
        "/jobs/sync@web1/action", data={"csrf": csrf, "action": "end-window", "window": wid[1]}
    )
    assert response.status_code == 302
    assert "OK: last succeeded" in _page(client, "/jobs/sync@web1")
    bogus = client.post(
        "/jobs/sync@web1/action", data={"csrf": csrf, "action": "end-window", "window": "nope"}
    )
    assert bogus.status_code == 400


def test_windows_need_a_token_without_job_globs(secured: FlaskClient) -> None:
    _login(secured, LIMITED)  # admin, but only backup*
    html = _page(secured, "/jobs/backup@db1")
    assert 'value="window"' not in html and 'value="maintenance"' in html
    response = secured.post(
        "/jobs/backup@db1/action", data={"csrf": _csrf(html), "action": "window", "for": "3600"}
    )
    assert response.status_code == 403


def test_read_only_viewers_cannot_start_a_window(secured: FlaskClient) -> None:
    _login(secured, VIEWER)
    html = _page(secured, "/jobs/sync@web1")
    assert 'value="window"' not in html
    response = secured.post(
        "/jobs/sync@web1/action", data={"csrf": _csrf(html), "action": "window", "for": "3600"}
    )
    assert response.status_code == 403


def test_a_running_run_shows_its_log_so_far_redacted(open_client: FlaskClient) -> None:
    """The lines a job sent to ``/ping/.../log`` are on its page while it runs (they
    refresh with the state), and go with the finish into the history."""
    from cronmetrics.web.services import services

    _submit(open_client, {"job_name": "sync", "host": "web1", "status": "start", "run_id": "r1"})
    assert "Log so far" not in _page(open_client, "/jobs/sync@web1")
    svc = services(open_client.application)
    text = "copied 3 files\nDB_PASSWORD=hunter2\n<b>"
    svc.monitor.append_output("sync", "web1", text, run_id="r1", now=svc.clock())
    html = _page(open_client, "/jobs/sync@web1")
    log = html[html.index("Log so far") :]
    log = log[: log.index("</pre>")]
    assert "copied 3 files" in log and "DB_PASSWORD=[REDACTED]" in log
    assert "hunter2" not in html and "&lt;b&gt;" in log  # escaped, never markup
    _submit(open_client, {"job_name": "sync", "host": "web1", "status": "success", "run_id": "r1"})
    html = _page(open_client, "/jobs/sync@web1")
    assert "Log so far" not in html and "copied 3 files" in html  # now in the history
