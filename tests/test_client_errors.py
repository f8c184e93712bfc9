"""What the client commands do when the server says no: one line, never a traceback, and
``run`` keeps the wrapped command's exit code whatever the answer.

Every test runs the real command line in a subprocess (the console entry point, as cron
would), against a real server or a real closed port.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cronmetrics import errors
from cronmetrics.errors import CronmetricsError

REPO = Path(__file__).resolve().parent.parent
TOKEN = "cm_good-token-for-error-tests"
JOB = "logrotate@web1"


@dataclass(frozen=True)
class Done:
    code: int
    out: str
    err: str


def client(args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path = REPO) -> Done:
    """``python -m cronmetrics ARGS`` with a clean client environment."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CRONMETRICS_") or k == "CRONMETRICS_LOG__LEVEL"
    }
    proc = subprocess.run(
        [sys.executable, "-m", "cronmetrics", *args],
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=90,
        cwd=cwd,
    )
    return Done(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with one token and a failure limit that a few bad tokens exhaust for a
    minute (longer than any client's retry budget)."""
    from liveserver import live_server

    root = tmp_path_factory.mktemp("limited")
    shutil.copytree(REPO / "jobs.d", root / "jobs.d")
    config = root / "config.yaml"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    config.write_text(
        "auth:\n"
        "  failure_limit: {burst: 2, per_minute: 0.5}\n"
        "  tokens:\n"
        f"    - {{name: ops, sha256: {digest}, scopes: [admin, read, submit]}}\n"
    )
    with live_server(root / "jobs.d", root / "state", args=("--config", str(config))) as live:
        for _ in range(4):
            httpx.get(f"{live.url}/api/job", headers={"Authorization": "Bearer wrong"})
        answer = httpx.get(f"{live.url}/api/job", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 429, answer.text
        yield live.url


def assert_one_clean_line(done: Done, *needles: str) -> None:
    assert "Traceback" not in done.err, done.err
    for needle in needles:
        assert needle in done.err, done.err


def test_run_keeps_exit_0_when_rate_limited(limited: str) -> None:
    done = client(
        ["run", "--url", limited, "--token", TOKEN, "--job", JOB, "--", "sh", "-c", "echo ok"]
    )
    assert done.code == 0, done.err
    assert done.out == "ok\n"
    assert_one_clean_line(done, "too many failed authentication attempts")


def test_run_keeps_a_failing_exit_code_when_rate_limited(limited: str) -> None:
    done = client(
        ["run", "--url", limited, "--token", TOKEN, "--job", JOB, "--", "sh", "-c", "exit 7"]
    )
    assert done.code == 7, done.err
    assert_one_clean_line(done, "too many failed authentication attempts")


def test_result_submit_rate_limited_is_one_line(limited: str) -> None:
    args = ["result", "submit", "--url", limited, "--token", TOKEN, "--job", JOB]
    done = client([*args, "--status", "success"])
    assert done.code != 0
    assert_one_clean_line(done, "too many failed authentication attempts")


def test_ingest_rate_limited_is_one_line(limited: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    log.write_text('{"ts": 1700000000, "exit": 0}\n')
    done = client(["ingest", str(log), "--url", limited, "--token", TOKEN, "--job", JOB])
    assert done.code != 0
    assert_one_clean_line(done, "too many failed authentication attempts")


# -- every error class, for run, result submit and ingest -----------------------------------


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Something to fail against for each error class: a plain server with a token, the
    same over TLS with a self-signed certificate, a closed port, a ``.invalid`` name, a
    server that answers 503, one that never answers in time."""
    from liveserver import free_port, live_server
    from recorder import Answer, recorder
    from test_tls import self_signed

    root = tmp_path_factory.mktemp("targets")
    shutil.copytree(REPO / "jobs.d", root / "jobs.d")
    cert, key = self_signed(root)
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    auth = (
        "auth:\n"
        "  failure_limit: {burst: 10000, per_minute: 10000}\n"
        "  tokens:\n"
        f"    - {{name: ops, sha256: {digest}, scopes: [admin, read, submit]}}\n"
    )
    (root / "plain.yaml").write_text(auth)
    (root / "tls.yaml").write_text(auth + f'tls: {{cert: "{cert}", key: "{key}"}}\n')
    busy = Answer(503, {"error": {"code": "UNAVAILABLE", "message": "busy, try later"}})
    with (
        live_server(
            root / "jobs.d", root / "s1", args=("--config", str(root / "plain.yaml"))
        ) as plain,
        live_server(
            root / "jobs.d",
            root / "s2",
            args=("--config", str(root / "tls.yaml")),
            scheme="https",
        ) as tls,
        recorder(*[busy] * 1000) as failing,
        recorder(*[Answer(delay=4)] * 100) as slow,
    ):
        yield {
            "plain": plain.url,
            "tls": tls.url,
            "cacert": str(cert),
            "refused": f"http://127.0.0.1:{free_port()}",
            "dns": "http://cronmetrics.invalid:9479",
            "5xx": failing.url,
            "slow": slow.url,
        }


#: case -> (target, extra flags, what stderr must say, exit code of submit and ingest)
CASES: dict[str, tuple[str, list[str], str, int]] = {
    "refused": ("refused", [], "connection refused; is cronmetrics serving there? check --url", 3),
    "dns": ("dns", [], "cannot resolve 'cronmetrics.invalid' (DNS): check --url", 3),
    "timeout": ("slow", [], "no answer within", 3),
    "5xx": ("5xx", [], "server error (503): busy, try later", 3),
    "https-to-plain": ("plain:https", [], "use http:// instead of https:// in --url", 3),
    "http-to-tls": (
        "tls:http",
        [],
        "serves TLS, not plain HTTP: use https:// instead of http://",
        3,
    ),
    "unverified": ("tls", [], "certificate not trusted", 3),
    "no-token": ("plain", ["--token", ""], "--token (or CRONMETRICS_TOKEN", 6),
    "wrong-token": ("plain", ["--token", "cm_wrong"], "unknown token: pass a valid token", 6),
    "unknown-job": ("plain", ["--job", "logrotate@web9"], "did you mean 'logrotate@web1'?", 4),
    "typo-job": ("plain", ["--job", "logrotat@web1"], "did you mean 'logrotate@web1'?", 4),
}


def target_url(targets: dict[str, str], target: str) -> str:
    name, _, scheme = target.partition(":")
    url = targets[name]
    if scheme:
        url = f"{scheme}://{url.partition('://')[2]}"
    return url


def command(kind: str, url: str, extra: list[str], tmp_path: Path) -> list[str]:
    flags = ["--url", url, "--token", TOKEN, "--job", JOB]
    for i in range(0, len(extra), 2):  # an extra flag replaces the default one
        flags[flags.index(extra[i]) + 1] = extra[i + 1]
    if kind == "run":
        return ["run", *flags, "--report-timeout", "2", "--", "sh", "-c", "echo ran; exit 3"]
    if kind == "submit":
        return ["result", "submit", *flags, "--status", "success", "--retry-timeout", "1"]
    log = tmp_path / "runs.jsonl"
    log.write_text(json.dumps({"ts": time.time() - 60, "exit": 0}) + "\n")
    return ["ingest", str(log), *flags, "--retry-timeout", "1"]


@pytest.mark.parametrize("kind", ["run", "submit", "ingest"])
@pytest.mark.parametrize("case", list(CASES))
def test_each_error_class_is_one_line_saying_what_to_do(
    targets: dict[str, str], tmp_path: Path, kind: str, case: str
) -> None:
    target, extra, needle, code = CASES[case]
    done = client(command(kind, target_url(targets, target), extra, tmp_path))
    assert "Traceback" not in done.err, done.err
    assert needle in done.err, done.err
    if kind == "run":
        assert done.code == 3, done.err  # the command's own code, whatever happened
        assert done.out == "ran\n"
    else:
        assert done.code == code, done.err
        assert len(done.err.strip().splitlines()) == 1, done.err  # one line


def test_unverified_certificate_passes_with_cacert(targets: dict[str, str], tmp_path: Path) -> None:
    for kind in ("run", "submit"):
        args = command(kind, targets["tls"], [], tmp_path)
        at = 1 if kind == "run" else 2  # after the command's words
        done = client([*args[:at], "--cacert", targets["cacert"], *args[at:]])
        assert done.code == (3 if kind == "run" else 0), done.err
        assert done.err == "", done.err
    env = {"CRONMETRICS_CACERT": targets["cacert"]}
    done = client(command("submit", targets["tls"], [], tmp_path), env=env)
    assert done.code == 0, done.err


def test_a_missing_cacert_file_still_runs_the_command(targets: dict[str, str]) -> None:
    done = client(
        ["run", "--url", targets["tls"], "--cacert", "/nonexistent/ca.pem", "--job", JOB,
         "--", "sh", "-c", "exit 5"]
    )  # fmt: skip
    assert done.code == 5
    assert "--cacert /nonexistent/ca.pem: no such file" in done.err
    assert "Traceback" not in done.err


def test_a_malformed_job_id_still_runs_the_command(targets: dict[str, str], tmp_path: Path) -> None:
    """A typo in a crontab's --job must not silently skip the backup it wraps."""
    marker = tmp_path / "ran"
    done = client(
        ["run", "--url", targets["plain"], "--token", TOKEN, "--job", "bad id/x",
         "--", "sh", "-c", f"touch {marker}; exit 3"]
    )  # fmt: skip
    assert marker.exists()
    assert done.code == 3
    assert "--job 'bad id/x'" in done.err
    assert "Traceback" not in done.err


# -- the server's error codes, mapped back -----------------------------------------------


def _every_error_class() -> list[type[CronmetricsError]]:
    found, todo = [], [CronmetricsError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.code)


def _raised(cls: type[CronmetricsError]) -> CronmetricsError:
    if issubclass(cls, errors.ValidationError):
        return cls([errors.Problem("bad value", field="status")])
    if issubclass(cls, errors.RateLimited):
        return cls("slow down", retry_after=7)
    return cls("something happened", field="status")


@pytest.mark.parametrize("cls", _every_error_class(), ids=lambda c: c.code)
def test_every_server_error_code_maps_back_to_its_class(cls: type[CronmetricsError]) -> None:
    """What the server sends for each class (its one error_response) becomes, in the
    client, that class again (5xx: ServerUnavailable), with its message and exit code."""
    from flask import Flask

    from cronmetrics.client.failures import error_from_response
    from cronmetrics.web.api import error_response

    with Flask("probe").test_request_context():
        response = error_response(_raised(cls))
    body = json.loads(response.get_data())
    exc = error_from_response(
        response.status_code,
        body,
        response.get_data(as_text=True),
        retry_after=response.headers.get("Retry-After"),
    )
    if response.status_code >= 500:
        assert isinstance(exc, errors.ServerUnavailable)
        assert exc.exit_code == 3
    elif cls in (CronmetricsError, errors.ConfigError):
        assert isinstance(exc, errors.InvalidRequest)  # not a client-side config problem
    else:
        assert type(exc) is cls
        assert exc.exit_code == cls.exit_code
    assert (
        "something happened" in exc.message or "bad value" in exc.message or "slow" in exc.message
    )
    if cls is errors.RateLimited:
        assert isinstance(exc, errors.RateLimited)
        assert exc.retry_after == 7


def test_a_non_json_error_page_still_maps_by_status() -> None:
    from cronmetrics.client.failures import error_from_response

    for status, cls in [
        (401, errors.Unauthorized),
        (404, errors.NotFound),
        (429, errors.RateLimited),
    ]:
        exc = error_from_response(status, None, "<html>nginx</html>", retry_after="3")
        assert type(exc) is cls
    assert isinstance(error_from_response(502, None, "Bad Gateway"), errors.ServerUnavailable)


@pytest.mark.parametrize("target", ["plain:https", "tls:http"])
def test_a_wrong_scheme_is_named_at_once_and_not_retried(
    targets: dict[str, str], target: str
) -> None:
    """https:// to a plain server (or http:// to a TLS one) cannot get better by trying
    again: one attempt, then the cause in one line, instead of the whole retry budget."""
    from cronmetrics.client.failures import WrongScheme
    from cronmetrics.client.http import Client

    waits: list[float] = []
    client = Client(target_url(targets, target), TOKEN, sleep=waits.append)
    with pytest.raises(WrongScheme) as caught:
        client.request_retrying("GET", "/api/job", budget=30)
    assert waits == []
    expected = "use http:// instead of https://" if target == "plain:https" else "use https://"
    assert expected in caught.value.message
    assert "serves" in caught.value.message or "does not speak TLS" in caught.value.message


def test_an_untrusted_certificate_is_named_at_once_and_not_retried(
    targets: dict[str, str],
) -> None:
    """A certificate this host does not trust stays untrusted for the whole budget: one
    attempt (the tester saw `run` wait 9 s and `ingest` 30 s for the same line)."""
    from cronmetrics.client.failures import CertificateRejected
    from cronmetrics.client.http import Client

    waits: list[float] = []
    client = Client(targets["tls"], TOKEN, sleep=waits.append)
    with pytest.raises(CertificateRejected) as caught:
        client.request_retrying("GET", "/api/job", budget=30)
    assert waits == []
    assert "certificate not trusted" in caught.value.message
    assert "--cacert" in caught.value.message


def test_a_certificate_for_other_names_says_to_fix_the_url_not_the_ca() -> None:
    """The CA is trusted (it was passed): telling the user to pass it again is no help."""
    import ssl

    from cronmetrics.client.failures import CertificateRejected
    from cronmetrics.client.http import Client

    client = Client("https://cm.internal:9479", TOKEN)
    for code, why in [
        (62, "Hostname mismatch, certificate is not valid for 'cm.internal'."),
        (64, "IP address mismatch, certificate is not valid for '10.0.0.5'."),
    ]:
        exc = ssl.SSLCertVerificationError(1, why)
        exc.verify_code, exc.verify_message = code, why
        found = client._network_error(exc, 5.0)
        assert isinstance(found, CertificateRejected)
        assert "does not name 'cm.internal'" in found.message
        assert "in --url" in found.message and "--cacert" not in found.message


def test_a_success_that_is_not_json_is_not_taken_for_a_recorded_report(tmp_path: Path) -> None:
    """--url pointing at another web app answering 200 with a page must not look like a
    recorded result: `result submit` fails with a line naming --url, and is not retried."""
    from recorder import Answer, recorder

    page = Answer(200, b"<html><body>Welcome to nginx!</body></html>")
    with recorder(page, page, page) as other_app:
        done = client(
            [
                "result",
                "submit",
                "--url",
                other_app.url,
                "--token",
                TOKEN,
                "--job",
                JOB,
                "--status",
                "success",
            ]
        )
        assert len(other_app.seen) == 1  # one attempt
    assert done.code == 3
    assert "answered 200 but not in JSON" in done.err and "--url" in done.err
    assert "Traceback" not in done.err


def test_a_last_try_cut_short_by_the_budget_reports_the_try_before() -> None:
    """The final attempt only had what was left of the budget: its "no answer within
    0.05s" would hide what actually went wrong (the tester saw exactly that)."""
    from cronmetrics.client import http

    now = [0.0]
    answers = [
        errors.ServerUnavailable("server error (503): busy, try later"),
        http._timeout(errors.ServerUnavailable("http://x: no answer within 0.1s")),
    ]

    class Scripted(http.Client):
        def request(self, *args: object, **kwargs: object) -> object:
            now[0] += 9.9  # the first try took most of the budget
            raise answers.pop(0)

    client = Scripted(
        "http://127.0.0.1:9", clock=lambda: now[0], sleep=lambda s: None, rng=lambda: 0.0
    )
    with pytest.raises(errors.ServerUnavailable, match="busy, try later"):
        client.request_retrying("POST", "/api/job-result", budget=10)
    assert answers == []


# -- the hand-written HTTP/1.1 exchange, at its edges --------------------------------------


@contextlib.contextmanager
def raw_server(answer: bytes, family: int = socket.AF_INET) -> Iterator[tuple[str, list[bytes]]]:
    """One loopback listener that reads a request head, sends ``answer`` and closes; the
    heads it read go to the list."""
    heads: list[bytes] = []
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                heads.append(data)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host = "[::1]" if family == socket.AF_INET6 else "127.0.0.1"
    try:
        yield f"http://{host}:{port}", heads
    finally:
        listener.close()
        thread.join(5)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", "answer cut short: 2 of 100 bytes"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            "bad chunk size",
        ),
    ],
    ids=["short-content-length", "bad-chunk-size"],
)
def test_a_broken_answer_is_one_line_not_a_short_body(answer: bytes, message: str) -> None:
    from cronmetrics.client.http import Client

    with (
        raw_server(answer) as (url, _),
        pytest.raises(errors.ServerUnavailable, match=message),
    ):
        Client(url).request("GET", "/api/job")


def test_a_redirect_is_not_followed_and_says_where_it_points() -> None:
    from cronmetrics.client.http import Client

    answer = b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://cm.example/\r\n\r\n"
    with (
        raw_server(answer) as (url, heads),
        pytest.raises(errors.InvalidRequest, match=r"redirects \(308\) to https://cm"),
    ):
        Client(url).request("POST", "/api/job-result", json={"x": 1})
    assert len(heads) == 1  # one request: nothing followed it


def test_an_ipv6_literal_url_sends_a_bracketed_host_header() -> None:
    from cronmetrics.client.http import Client

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
    with raw_server(ok, socket.AF_INET6) as (url, heads):
        assert Client(url).request("GET", "/api/job") == {}
    assert f"Host: {url.removeprefix('http://')}\r\n".encode() in heads[0]


def test_the_request_head_and_body_leave_in_one_send_with_nodelay_moot() -> None:
    """Head and body in one segment: Nagle's algorithm has nothing to hold back."""
    from cronmetrics.client.http import Client

    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    with raw_server(ok) as (url, heads):
        Client(url, "cm_x").request("POST", "/api/job-result", json={"job_name": "a"})
    head, _, body = heads[0].partition(b"\r\n\r\n")
    assert body == b'{"job_name":"a"}'  # it arrived with the head, in the same read
    assert b"Content-Length: 16" in head and b"Connection: close" in head


def test_http_proxy_variables_are_honoured_with_their_credentials() -> None:
    from recorder import recorder

    from cronmetrics.client.http import Client

    with recorder() as proxy:
        port = proxy.url.rsplit(":", 1)[1]
        env = {"HTTP_PROXY": f"http://ops:p%40ss@127.0.0.1:{port}", "NO_PROXY": "other.example"}
        client = Client("http://cm.example:9479", "cm_token", environ=env)
        client.submit({"job_name": "backup", "status": "success"})
        bypass = Client("http://other.example:9479", environ=env)
    (seen,) = proxy.seen
    assert seen.path == "http://cm.example:9479/api/job-result"  # absolute form: a proxy
    assert seen.headers["Proxy-Authorization"] == "Basic b3BzOnBAc3M="  # ops:p@ss
    assert seen.headers["Authorization"] == "Bearer cm_token"
    assert bypass._proxy is None


def test_a_token_that_cannot_be_a_header_is_a_usage_error() -> None:
    from cronmetrics.client.failures import UsageError
    from cronmetrics.client.http import Client

    for bad in ("cm_x\r\nX-Injected: 1", "cm_é", "cm x"):
        with pytest.raises(UsageError, match="a token never does"):
            Client("http://127.0.0.1:9", bad)
