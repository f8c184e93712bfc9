"""Healthchecks-style ping URLs on a real server, driven by a Healthchecks client library
(``healthchecks-io`` from PyPI) whose only change is its base ping URL."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydantic
import pytest
from healthchecks_io import CheckNotFoundError, HCAPIAuthError
from healthchecks_io import Client as HealthchecksClient

from cronmetrics.config import TokenConfig
from cronmetrics.testing import ServerProcess

REPO = Path(__file__).resolve().parent.parent
KEY = "cm_ping-key-for-the-tests-0123"
PLAIN = "cm_submit-token-not-a-ping-key"
OPS = "cm_ops-token-for-reading-back"
JOB = "logrotate@web1"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from liveserver import live_server

    root = tmp_path_factory.mktemp("ping")
    shutil.copytree(REPO / "jobs.d", root / "jobs.d")
    config = root / "config.yaml"
    config.write_text(
        "limits: {max_output_bytes: 5000}\n"
        "auth:\n  tokens:\n"
        f"    - {{name: pinger, sha256: {sha(KEY)}, scopes: [submit], ping_key: true,"
        ' jobs: ["logrotate*", "home_rsync"]}\n'
        f"    - {{name: plain, sha256: {sha(PLAIN)}, scopes: [submit]}}\n"
        f"    - {{name: ops, sha256: {sha(OPS)}, scopes: [admin, read, submit]}}\n"
    )
    with live_server(root / "jobs.d", root / "state", args=("--config", str(config))) as server:
        yield server


def results(live: ServerProcess, job: str = JOB, limit: int = 5) -> list[dict[str, object]]:
    answer = httpx.get(
        f"{live.url}/api/job/{job}/results",
        params={"limit": limit},
        headers={"Authorization": f"Bearer {OPS}"},
        timeout=5,
    )
    return answer.json()["results"]  # type: ignore[no-any-return]


def test_a_healthchecks_client_reports_by_changing_its_base_url(live: ServerProcess) -> None:
    hc = HealthchecksClient(ping_key=KEY, ping_url=f"{live.url}/ping/")
    assert hc.start_ping(slug=JOB) == (True, "OK")
    assert hc.success_ping(slug=JOB, data="rotated 12 files") == (True, "OK")
    newest, start = results(live, limit=2)
    assert (start["status"], newest["status"]) == ("start", "success")
    assert newest["output"] == "rotated 12 files"
    assert hc.fail_ping(slug=JOB, data="disk full")[0]
    assert results(live, limit=1)[0]["status"] == "failure"
    assert hc.exit_code_ping(3, slug=JOB)[0]
    last = results(live, limit=1)[0]
    assert (last["status"], last["exit_code"]) == ("failure", 3)
    assert hc.exit_code_ping(0, slug=JOB)[0]
    assert results(live, limit=1)[0]["status"] == "success"


def test_the_client_library_sees_our_errors_as_its_own(live: ServerProcess) -> None:
    with pytest.raises(HCAPIAuthError):
        HealthchecksClient(ping_key="cm_wrong", ping_url=f"{live.url}/ping/").success_ping(slug=JOB)
    hc = HealthchecksClient(ping_key=KEY, ping_url=f"{live.url}/ping/")
    with pytest.raises(CheckNotFoundError):
        hc.success_ping(slug="logrotate_nope")


def test_get_answers_ok_as_text_with_the_body_limit(live: ServerProcess) -> None:
    answer = httpx.get(f"{live.url}/ping/{KEY}/{JOB}", timeout=5)
    assert answer.status_code == 200
    assert answer.text == "OK"
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.headers["ping-body-limit"] == "5000"


def test_the_body_is_the_output_whatever_its_content_type(live: ServerProcess) -> None:
    answer = httpx.post(
        f"{live.url}/ping/{KEY}/{JOB}/0",
        content=b"a=1&b=two",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    assert results(live, limit=1)[0]["output"] == "a=1&b=two"


def test_rid_pairs_the_start_with_its_finish(live: ServerProcess) -> None:
    rid = f"rid-{time.monotonic_ns()}"
    assert httpx.get(f"{live.url}/ping/{KEY}/{JOB}/start", params={"rid": rid}).text == "OK"
    assert httpx.post(f"{live.url}/ping/{KEY}/{JOB}", params={"rid": rid}).text == "OK"
    newest, start = results(live, limit=2)
    assert start["run_id"] == newest["run_id"] == rid


def test_errors_are_json_and_say_what_to_do(live: ServerProcess) -> None:
    wrong = httpx.get(f"{live.url}/ping/cm_wrong/{JOB}", timeout=5)
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "UNAUTHORIZED"
    assert "ping-body-limit" in wrong.headers
    not_a_key = httpx.get(f"{live.url}/ping/{PLAIN}/{JOB}", timeout=5)
    assert not_a_key.status_code == 403
    assert "ping_key: true" in not_a_key.json()["error"]["message"]
    outside = httpx.get(f"{live.url}/ping/{KEY}/db_import", timeout=5)
    assert outside.status_code == 403  # the key's job globs apply
    bad_action = httpx.get(f"{live.url}/ping/{KEY}/{JOB}/sometimes", timeout=5)
    assert bad_action.status_code == 400
    assert bad_action.json()["error"]["field"] == "action"
    too_big = httpx.get(f"{live.url}/ping/{KEY}/{JOB}/256", timeout=5)
    assert too_big.status_code == 400


def test_the_key_never_reaches_the_log(live: ServerProcess) -> None:
    httpx.get(f"{live.url}/ping/{KEY}/{JOB}", timeout=5)
    httpx.get(f"{live.url}/ping/{KEY}/ghost_job", timeout=5)  # 404, logged as a warning
    httpx.get(f"{live.url}/ping/{KEY}/db_import", timeout=5)  # 403
    httpx.get(f"{live.url}/ping/{KEY}/a/b/c/d", timeout=5)  # no such route
    httpx.get(f"{live.url}/ping/{KEY}/{JOB}/log", timeout=5)  # 409: no run running
    time.sleep(0.5)  # log lines are written by the server process; give them a moment
    text = live.log()
    assert "request failed" in text  # the failures were logged...
    assert KEY not in text  # ...without the key
    assert "/ping/[key]" in text or "ghost_job" in text


def test_a_ping_key_may_only_submit() -> None:
    with pytest.raises(pydantic.ValidationError, match="only have the submit scope"):
        TokenConfig(name="k", sha256=sha(KEY), scopes=["submit", "read"], ping_key=True)
    assert TokenConfig(name="k", sha256=sha(KEY), scopes=["submit"], ping_key=True).ping_key


def test_the_old_api_ping_route_keeps_working(live: ServerProcess) -> None:
    answer = httpx.post(
        f"{live.url}/api/ping/{JOB}/success",
        headers={"Authorization": f"Bearer {KEY}"},
        params={"run_id": "old-route"},
        content=b"still here",
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
    assert results(live, limit=1)[0]["run_id"] == "old-route"


def test_log_formatters_and_the_gunicorn_filter_scrub_ping_keys() -> None:
    import io
    import logging

    from cronmetrics.logs import JsonFormatter, ScrubFilter, TextFormatter, scrub

    line = f"Error handling request /ping/{KEY}/{JOB}/start?rid=1"
    assert scrub(line) == f"Error handling request /ping/[key]/{JOB}/start?rid=1"
    assert scrub(f"/api/ping/{JOB}/success") == f"/api/ping/{JOB}/success"  # an id, not a key
    record = logging.LogRecord("gunicorn.error", logging.ERROR, "x", 1, "%s", (line,), None)
    for formatter in (JsonFormatter(), TextFormatter()):
        assert KEY not in formatter.format(record)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubFilter())
    handler.handle(record)
    assert KEY not in stream.getvalue()
    assert "/ping/[key]/" in stream.getvalue()


LOGGED = "home_rsync"


def job_state(live: ServerProcess, job: str = LOGGED) -> dict[str, object]:
    answer = httpx.get(
        f"{live.url}/api/job/{job}", headers={"Authorization": f"Bearer {OPS}"}, timeout=5
    )
    return answer.json()["state"]  # type: ignore[no-any-return]


def start_run(live: ServerProcess) -> str:
    rid = f"rid-{time.monotonic_ns()}"
    assert httpx.get(f"{live.url}/ping/{KEY}/{LOGGED}/start", params={"rid": rid}).text == "OK"
    return rid


def test_log_pings_append_to_the_running_run_and_its_finish_shows_them(
    live: ServerProcess,
) -> None:
    rid = start_run(live)
    log = f"{live.url}/ping/{KEY}/{LOGGED}/log"
    first = httpx.post(log, content=b"copied 10 files\n", timeout=5)
    assert (first.status_code, first.text) == (200, "OK")
    assert first.headers["ping-body-limit"] == "5000"
    assert httpx.post(log, params={"rid": rid}, content=b'{"n":2}', timeout=5).text == "OK"
    assert httpx.get(log, timeout=5).text == "OK"  # a GET appends nothing, still fine
    assert job_state(live)["run_output"] == 'copied 10 files\n{"n":2}'
    done = httpx.post(f"{live.url}/ping/{KEY}/{LOGGED}/0", params={"rid": rid}, content=b"ok")
    assert done.text == "OK"
    newest = results(live, LOGGED, limit=1)[0]
    assert newest["output"] == 'copied 10 files\n{"n":2}\nok'
    assert job_state(live)["run_output"] is None


def test_a_log_without_its_run_running_is_refused_and_kept_nowhere(live: ServerProcess) -> None:
    log = f"{live.url}/ping/{KEY}/{LOGGED}/log"
    httpx.get(f"{live.url}/ping/{KEY}/{LOGGED}", timeout=5)  # no run running now
    idle = httpx.post(log, content=b"orphan", timeout=5)
    assert idle.status_code == 409
    assert idle.json()["error"]["code"] == "CONFLICT"
    assert "no run of 'home_rsync' is running: send its start first" in idle.text
    rid = start_run(live)
    other = httpx.post(log, params={"rid": "not-this-one"}, content=b"x", timeout=5)
    assert other.status_code == 409
    assert f"the running one is '{rid}'" in other.json()["error"]["message"]
    long_rid = httpx.post(log, params={"rid": "r" * 129}, content=b"x", timeout=5)
    assert long_rid.status_code == 400 and long_rid.json()["error"]["field"] == "rid"
    unknown = httpx.post(f"{live.url}/ping/{KEY}/logrotate@web2/log", content=b"x", timeout=5)
    assert unknown.status_code == 404
    assert "did you mean 'logrotate@web1'?" in unknown.json()["error"]["message"]
    httpx.get(f"{live.url}/ping/{KEY}/{LOGGED}/0", params={"rid": rid}, timeout=5)
    assert "orphan" not in str(results(live, LOGGED, limit=3))


def test_a_log_for_an_over_long_job_name_gets_the_rule_of_every_ping(
    live: ServerProcess,
) -> None:
    name = "x" * 3000
    answers = [
        httpx.post(f"{live.url}/ping/{KEY}/{name}{action}", content=b"x", timeout=5)
        for action in ("/start", "/log")
    ]
    for answer in answers:  # not a 404 that echoes the 3000 characters back
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"] == "job_name"
        assert "at most 128 characters" in answer.json()["error"]["message"]


def test_oversized_and_hostile_log_bodies_keep_a_redacted_tail(live: ServerProcess) -> None:
    rid = start_run(live)
    log = f"{live.url}/ping/{KEY}/{LOGGED}/log"
    hostile = b"\x00\xff\xfe binary \x1b[31m password=hunter2 \xc3\n"
    assert httpx.post(log, content=hostile, timeout=5).text == "OK"
    big = b"".join(b"line %06d\n" % i for i in range(20_000))  # 240 kB
    assert httpx.post(log, content=big, timeout=5).text == "OK"
    running = str(job_state(live)["run_output"])
    assert len(running.encode()) <= 5000 and running.endswith("line 019999\n")
    too_big = httpx.post(log, content=b"y" * 2_000_000, timeout=10)
    assert too_big.status_code == 413  # over limits.max_body_bytes: refused whole
    assert str(job_state(live)["run_output"]) == running
    httpx.post(log, content=hostile, timeout=5)
    httpx.post(f"{live.url}/ping/{KEY}/{LOGGED}/fail", params={"rid": rid}, timeout=5)
    output = str(results(live, LOGGED, limit=1)[0]["output"])
    assert len(output.encode()) <= 5000 and "hunter2" not in output
    assert output.endswith("\ufffd\n") and "line 019999\n" in output


def test_a_secret_split_over_two_log_pings_is_never_shown_nor_stored(
    live: ServerProcess,
) -> None:
    # each piece alone matches no pattern; together they do, and the stored tail's cut
    # (5000 bytes) falls inside 'password' once the second piece arrives
    rid = start_run(live)
    log = f"{live.url}/ping/{KEY}/{LOGGED}/log"
    assert httpx.post(log, content=b"x" * 4985 + b" password=", timeout=5).text == "OK"
    assert httpx.post(log, content=b"hunter2 " + b"y" * 4985, timeout=5).text == "OK"
    running = str(job_state(live)["run_output"])
    assert "hunter2" not in running and len(running.encode()) <= 5000
    assert running.endswith("y" * 4985)
    httpx.get(f"{live.url}/ping/{KEY}/{LOGGED}/0", params={"rid": rid}, timeout=5)
    output = str(results(live, LOGGED, limit=1)[0]["output"])
    assert "hunter2" not in output and len(output.encode()) <= 5000


def test_two_log_pings_at_once_lose_nothing(live: ServerProcess) -> None:
    rid = start_run(live)
    log = f"{live.url}/ping/{KEY}/{LOGGED}/log"
    sent = [f"worker {w} step {i}\n" for w in range(6) for i in range(8)]
    barrier = threading.Barrier(6)
    failures: list[int] = []

    def worker(w: int) -> None:
        with httpx.Client(timeout=10) as client:
            barrier.wait()
            for i in range(8):
                status = client.post(log, content=f"worker {w} step {i}\n".encode()).status_code
                if status != 200:
                    failures.append(status)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    httpx.get(f"{live.url}/ping/{KEY}/{LOGGED}/0", params={"rid": rid}, timeout=5)
    output = str(results(live, LOGGED, limit=1)[0]["output"])
    assert sorted(output.splitlines(keepends=True)) == sorted(sent)
