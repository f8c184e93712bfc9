"""Issue #5: scoped tokens, secure defaults, hostile input, redaction, rate limiting.

Every endpoint of the Flask url_map is checked against the scope docs/security.md gives
it; every hostile request in :data:`HOSTILE` must be answered with the right status and
error code *and* leave jobs.d, the state dir and the monitor exactly as they were.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from cronmetrics import logs as cmlog
from cronmetrics.cli.main import cli
from cronmetrics.config import DEFAULT_REDACT, load_config
from cronmetrics.errors import ConfigError
from cronmetrics.web.app import register_routes, services
from cronmetrics.web.auth import TokenAuth, hash_token
from cronmetrics.web.ratelimit import FailureLimiter

JOBS = {
    "backup_db1.yaml": "job_name: backup\nhost: db1\nautomatic_failure_threshold: 3600\n",
    "web_sync.yaml": "job_name: web_sync\nautomatic_failure_threshold: 600\n",
}

#: name -> (token value, scopes, job globs); values are what clients send, never stored
TOKENS: dict[str, tuple[str, list[str], list[str] | None]] = {
    "ops": ("cm_ops-4fJ2kLq9zX0pW7vR3tY6uB1nM8c", ["admin", "read", "submit", "metrics"], None),
    "no-admin": ("cm_noadmin-Q1w2E3r4T5y6U7i8O9p0", ["read", "submit", "metrics"], None),
    "no-read": ("cm_noread-A1s2D3f4G5h6J7k8L9z0", ["admin", "submit", "metrics"], None),
    "no-submit": ("cm_nosubmit-Z1x2C3v4B5n6M7q8W9e0", ["admin", "read", "metrics"], None),
    "no-metrics": ("cm_nometrics-R1t2Y3u4I5o6P7a8S9d0", ["admin", "read", "submit"], None),
    "backups": ("cm_backups-F1g2H3j4K5l6Z7x8C9v0", ["submit"], ["backup*"]),
    "backup-reader": ("cm_bkreader-V1b2N3m4Q5w6E7r8T9y0", ["read"], ["backup*"]),
    "pinger": ("cm_pinger-P1i2N3g4K5e6Y7z8X9w0", ["submit"], None),
}
#: tokens marked ``ping_key: true``: the credential of ``/ping/<key>/...`` URLs
PING_KEYS = {"pinger"}
WITHOUT = {"admin": "no-admin", "read": "no-read", "submit": "no-submit", "metrics": "no-metrics"}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


def token_config() -> dict[str, Any]:
    return {
        "tokens": [
            {
                "name": name,
                "sha256": hash_token(value),
                "scopes": scopes,
                "jobs": jobs,
                "ping_key": name in PING_KEYS,
            }
            for name, (value, scopes, jobs) in TOKENS.items()
        ]
    }


@pytest.fixture
def secure(make_client: Callable[..., FlaskClient]) -> Callable[..., FlaskClient]:
    """An app with the tokens above and authentication on (no ``--no-auth``)."""

    def build(**overrides: Any) -> FlaskClient:
        overrides.setdefault("auth", token_config())
        return make_client(dict(JOBS), no_auth=False, **overrides)

    return build


@pytest.fixture
def client(secure: Callable[..., FlaskClient]) -> FlaskClient:
    return secure()


# -- every endpoint, from the url_map ------------------------------------------------------

OPEN = {"/health", "/health/deep", "/api/openapi.yaml", "/client.pyz"}


def _endpoints() -> list[tuple[str, str]]:
    app = Flask("probe")
    register_routes(app)
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("dashboard."):  # cookie logins: tests/test_web_dashboard.py
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, rule.rule))
    return sorted(out, key=lambda mr: (mr[1], mr[0]))


ENDPOINTS = _endpoints()


def required_scope(method: str, rule: str) -> str | None:
    """The scope each endpoint needs, as docs/api.md and docs/security.md give it."""
    if rule in OPEN or rule.startswith("/static/"):
        return None
    if rule == "/metrics":
        return "metrics"  # because a configured token has the metrics scope
    if method == "POST" and (rule == "/api/job-result" or rule.startswith("/api/ping/")):
        return "submit"
    if rule.startswith("/ping/<key>/"):
        return "submit"  # GET too: the key in the URL is a submit-only token
    return "read" if method == "GET" else "admin"


PROTECTED = [(m, r) for m, r in ENDPOINTS if required_scope(m, r) is not None]
PARAMS = {"job_id": "backup@db1", "action": "success", "filename": "x.js"}
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/job-result"): {"job_name": "backup", "host": "db1", "status": "success"},
    ("POST", "/api/job"): {"job_name": "new_job", "automatic_failure_threshold": 60},
    ("PUT", "/api/job/<job_id>"): {
        "job_name": "backup",
        "host": "db1",
        "automatic_failure_threshold": 60,
    },
    ("PATCH", "/api/job/<job_id>"): {"description": "patched"},
}


def concrete(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: PARAMS.get(m.group(1), "backup@db1"), rule)


def call(client: FlaskClient, method: str, rule: str, headers: dict[str, str] | None = None) -> Any:
    """``rule`` with its parameters filled in; a ping URL carries the bearer token as its
    ``<key>`` (that is its credential) instead of the header."""
    if "<key>" in rule:
        scheme, _, token = (headers or {}).pop("Authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" and token.strip() else "cm_no-key"
        rule = rule.replace("<key>", key)
    body = BODIES.get((method, rule))
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if body is not None:
        kwargs["json"] = body
    elif method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return client.open(concrete(rule), method=method, **kwargs)


def ids(pairs: list[tuple[str, str]]) -> list[str]:
    return [f"{m} {r}" for m, r in pairs]


def test_the_endpoint_table_covers_the_write_and_submit_paths() -> None:
    scopes = {required_scope(m, r) for m, r in ENDPOINTS}
    assert {"read", "submit", "metrics"} <= scopes
    assert ("POST", "/api/job-result") in PROTECTED
    assert ("POST", "/api/ping/<path:job_id>/<action>") in PROTECTED


BAD_HEADERS = {
    "missing": None,
    "unknown": "Bearer cm_not-a-configured-token",
    "basic-scheme": "Basic b3BzOnNlY3JldA==",
    "empty-bearer": "Bearer ",
    "no-scheme": TOKENS["ops"][0],
    "token-of-other-case": "Bearer " + TOKENS["ops"][0].upper(),
}


@pytest.mark.parametrize(("method", "rule"), PROTECTED, ids=ids(PROTECTED))
def test_protected_endpoint_answers_401_without_a_valid_token(
    client: FlaskClient, method: str, rule: str
) -> None:
    for case, header in BAD_HEADERS.items():
        response = call(client, method, rule, {"Authorization": header} if header else {})
        assert response.status_code == 401, (case, response.get_data(as_text=True))
        assert response.json["error"]["code"] == "UNAUTHORIZED", case
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), case


@pytest.mark.parametrize(("method", "rule"), PROTECTED, ids=ids(PROTECTED))
def test_protected_endpoint_answers_403_to_a_token_without_its_scope(
    client: FlaskClient, method: str, rule: str
) -> None:
    scope = required_scope(method, rule)
    assert scope is not None
    response = call(client, method, rule, bearer(WITHOUT[scope]))
    assert response.status_code == 403, response.get_data(as_text=True)
    error = response.json["error"]
    assert error["code"] == "FORBIDDEN"
    assert scope in error["message"]


@pytest.mark.parametrize(("method", "rule"), PROTECTED, ids=ids(PROTECTED))
def test_protected_endpoint_lets_a_token_with_its_scope_through(
    client: FlaskClient, method: str, rule: str
) -> None:
    scope = required_scope(method, rule)
    holders = PING_KEYS if "<key>" in rule else TOKENS.keys() - PING_KEYS
    holder = next(
        n
        for n, (_, scopes, jobs) in TOKENS.items()
        if scope in scopes and not jobs and n in holders
    )
    response = call(client, method, rule, bearer(holder))
    assert response.status_code not in (401, 403, 429), response.get_data(as_text=True)


@pytest.mark.parametrize("path", sorted(OPEN))
def test_health_and_openapi_are_open(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code not in (401, 403, 429)


def test_metrics_are_open_unless_a_token_has_the_metrics_scope(
    secure: Callable[..., FlaskClient],
) -> None:
    value, _, _ = TOKENS["no-metrics"]
    no_metrics_tokens = {
        "tokens": [{"name": "ops", "sha256": hash_token(value), "scopes": ["admin", "read"]}]
    }
    client = secure(auth=no_metrics_tokens)
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/job").status_code == 401


# -- per-job tokens ------------------------------------------------------------------------


def history(client: FlaskClient, job_id: str) -> list[Any]:
    return services(client.application).monitor.store.history(job_id)


def result(name: str, host: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"job_name": name, "host": host, "status": "success", **extra}


def test_job_glob_token_can_report_its_own_job(client: FlaskClient) -> None:
    response = client.post(
        "/api/job-result", json=result("backup", "db1"), headers=bearer("backups")
    )
    assert response.status_code == 200, response.json
    assert response.json["jobs"] == ["backup@db1"]
    ping = client.post("/api/ping/backup@db1/success", headers=bearer("backups"))
    assert ping.status_code == 200
    assert len(history(client, "backup@db1")) == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/job-result", result("web_sync")),
        ("/api/job-result", result("web_sync", "db1")),  # resolves to the host-agnostic job
        ("/api/job-result", result("not_defined")),  # 403, not a 404 that confirms names
        ("/api/ping/web_sync/success", None),
    ],
    ids=["other-job", "other-job-own-host", "unknown-job", "ping-other-job"],
)
def test_job_glob_token_cannot_report_other_jobs(
    client: FlaskClient, path: str, body: dict[str, Any] | None
) -> None:
    response = client.post(path, json=body, headers=bearer("backups"))
    assert response.status_code == 403
    assert response.json["error"]["code"] == "FORBIDDEN"
    assert history(client, "web_sync") == []


def test_batch_with_one_forbidden_job_records_nothing(client: FlaskClient) -> None:
    batch = [result("backup", "db1"), result("web_sync"), result("backup", "db1")]
    response = client.post("/api/job-result", json=batch, headers=bearer("backups"))
    assert response.status_code == 403
    assert "web_sync" in response.json["error"]["message"]
    assert history(client, "backup@db1") == []
    assert history(client, "web_sync") == []


def test_job_glob_read_token_sees_only_its_jobs(client: FlaskClient) -> None:
    listed = client.get("/api/job", headers=bearer("backup-reader"))
    assert [job["id"] for job in listed.json["jobs"]] == ["backup@db1"]
    assert client.get("/api/job/backup@db1", headers=bearer("backup-reader")).status_code == 200
    assert client.get("/api/job/web_sync", headers=bearer("backup-reader")).status_code == 403


# -- logs carry the token name, never its value ---------------------------------------------


def test_logs_name_the_token_and_never_contain_a_token_value(client: FlaskClient) -> None:
    buffer = io.StringIO()
    cmlog.configure("debug", "json", stream=buffer)
    requests = [
        ("/api/job-result", result("web_sync")),  # 403
        ("/api/job-result", result("backup", "db9")),  # 404 unknown job
        ("/api/job-result", {"job_name": "backup", "status": "bogus"}),  # 400
        ("/api/ping/backup@db1/fail", None),  # accepted
    ]
    token_of: dict[str, str] = {}  # request id -> the token name its lines must carry
    for path, body in requests:
        response = client.post(path, json=body, headers=bearer("backups"))
        token_of[response.headers["X-Request-Id"]] = "backups"
    if any(rule == "/api/job" for _, rule in ENDPOINTS):  # a request that logs a reload too
        created = client.post(
            "/api/job",
            json={"job_name": "new_job", "automatic_failure_threshold": 60},
            headers=bearer("ops"),
        )
        assert created.status_code == 201, created.json
        token_of[created.headers["X-Request-Id"]] = "ops"
    client.post(
        "/api/job-result",
        json=result("backup"),
        headers={"Authorization": "Bearer cm_wrong-guess-123"},
    )
    text = buffer.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    ours = [line for line in lines if line.get("request_id") in token_of]
    assert len(ours) >= 3
    for line in ours:
        assert line.get("token") == token_of[line["request_id"]], line
    for value, _, _ in TOKENS.values():
        assert value not in text
    assert "cm_wrong-guess-123" not in text


# -- rate limiting of failed authentication --------------------------------------------------


def from_addr(address: str) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": address}}


def test_repeated_failures_from_one_address_get_429_with_retry_after(
    client: FlaskClient, fake_clock: Any
) -> None:
    wrong = {"Authorization": "Bearer cm_guess"}
    for _ in range(10):
        assert client.get("/api/job", headers=wrong, **from_addr("192.0.2.1")).status_code == 401
    limited = client.get("/api/job", headers=wrong, **from_addr("192.0.2.1"))
    assert limited.status_code == 429
    assert limited.json["error"]["code"] == "RATE_LIMITED"
    assert limited.headers["Retry-After"] == "6"
    # while limited, even a good token is refused: a correct guess looks like a wrong one
    good = client.get("/api/job", headers=bearer("ops"), **from_addr("192.0.2.1"))
    assert good.status_code == 429
    # other addresses are not affected
    assert (
        client.get("/api/job", headers=bearer("ops"), **from_addr("192.0.2.2")).status_code == 200
    )
    assert client.get("/api/job", headers=wrong, **from_addr("192.0.2.2")).status_code == 401
    # one allowance comes back every 6 seconds
    fake_clock.advance(6)
    assert client.get("/api/job", headers=wrong, **from_addr("192.0.2.1")).status_code == 401
    assert client.get("/api/job", headers=wrong, **from_addr("192.0.2.1")).status_code == 429
    fake_clock.advance(6)
    assert (
        client.get("/api/job", headers=bearer("ops"), **from_addr("192.0.2.1")).status_code == 200
    )


def test_successful_authentication_is_never_limited(client: FlaskClient) -> None:
    for _ in range(200):
        response = client.post(
            "/api/ping/backup@db1/success", headers=bearer("backups"), **from_addr("192.0.2.7")
        )
        assert response.status_code == 200
    # and successes left the whole failure allowance in place
    wrong = {"Authorization": "Bearer cm_guess"}
    statuses = [
        client.get("/api/job", headers=wrong, **from_addr("192.0.2.7")).status_code
        for _ in range(11)
    ]
    assert statuses == [401] * 10 + [429]


def behind_proxy(forwarded_for: str) -> dict[str, Any]:
    """A request as a reverse proxy at 10.0.0.1 relays it."""
    return {
        "environ_base": {"REMOTE_ADDR": "10.0.0.1"},
        "headers": {"X-Forwarded-For": forwarded_for},
    }


def test_behind_a_trusted_proxy_each_client_address_has_its_own_allowance(
    secure: Callable[..., FlaskClient],
) -> None:
    """Behind an ingress every TCP peer is the ingress: without trusted_proxy_hops a
    fleet with a stale token would get every host behind it limited."""
    client = secure(trusted_proxy_hops=1)
    wrong = {"Authorization": "Bearer cm_guess"}

    def call(auth: dict[str, str], forwarded_for: str) -> int:
        request = behind_proxy(forwarded_for)
        request["headers"] |= auth
        return client.get("/api/job", **request).status_code

    assert [call(wrong, "198.51.100.1") for _ in range(11)] == [401] * 10 + [429]
    assert call(bearer("ops"), "198.51.100.2") == 200  # another host behind the same proxy
    # a client cannot escape by sending its own X-Forwarded-For: the proxy appends the
    # real address, and only the last hop is trusted
    assert call(wrong, "203.0.113.7, 198.51.100.1") == 429


def test_without_trusted_proxies_x_forwarded_for_is_ignored(client: FlaskClient) -> None:
    wrong = {"Authorization": "Bearer cm_guess"}
    statuses = []
    for i in range(11):
        request = behind_proxy(f"198.51.100.{i}")  # a spoofed header per request
        request["headers"] |= wrong
        statuses.append(client.get("/api/job", **request).status_code)
    assert statuses == [401] * 10 + [429]


def test_failure_limit_is_configurable(secure: Callable[..., FlaskClient]) -> None:
    client = secure(auth={**token_config(), "failure_limit": {"burst": 2, "per_minute": 60}})
    wrong = {"Authorization": "Bearer cm_guess"}
    statuses = [
        client.get("/api/job", headers=wrong, **from_addr("192.0.2.9")).status_code
        for _ in range(3)
    ]
    assert statuses == [401, 401, 429]
    limited = client.get("/api/job", headers=wrong, **from_addr("192.0.2.9"))
    assert limited.headers["Retry-After"] == "1"


def test_failure_limiter_forgets_refilled_addresses_and_stays_bounded() -> None:
    limiter = FailureLimiter(burst=2, rate=1.0, max_addresses=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", now=float(i))
    assert len(limiter) <= 100
    limiter.failed("198.51.100.1", now=2000.0)
    limiter.failed("198.51.100.1", now=2000.0)
    assert limiter.retry_after("198.51.100.1", now=2000.0) == pytest.approx(1.0)
    assert limiter.retry_after("198.51.100.1", now=2001.0) == 0.0


def test_disabled_auth_needs_no_token_and_counts_nothing() -> None:
    auth = TokenAuth([], disabled=True)
    for _ in range(50):
        assert auth.identify(None, client="192.0.2.9", now=0.0).name == "anonymous"
    assert len(auth.limiter) == 0


# -- hostile requests: the answer, and nothing written ---------------------------------------

MAX_BODY = 64 * 1024
MAX_BATCH = 5


@dataclass(frozen=True)
class Hostile:
    id: str
    method: str
    path: str
    status: int
    code: str
    token: str | None = "ops"
    json: Any = None
    data: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False

    def send(self, client: FlaskClient) -> Any:
        headers = dict(self.headers)
        if self.token is not None:
            headers.update(bearer(self.token))
        kwargs: dict[str, Any] = {"method": self.method, "headers": headers}
        if self.json is not None:
            kwargs["json"] = self.json
        elif self.chunked:
            kwargs["input_stream"] = io.BytesIO(self.data or b"")
            kwargs["environ_base"] = {"wsgi.input_terminated": True}
        elif self.data is not None:
            kwargs["data"] = self.data
        return client.open(self.path, **kwargs)


def nested(depth: int) -> bytes:
    return (
        b'{"job_name":"web_sync","status":"success","labels":'
        + b'{"a":' * depth
        + b'"x"'
        + b"}" * depth
        + b"}"
    )


BIG_RESULT = json.dumps(result("web_sync", output="x" * (MAX_BODY + 10))).encode()
JSON = {"Content-Type": "application/json"}

VALID, JSONERR, UNAUTH, FORBID = "VALIDATION_ERROR", "INVALID_JSON", "UNAUTHORIZED", "FORBIDDEN"
TOO_LARGE, NOT_FOUND, BAD = "PAYLOAD_TOO_LARGE", "NOT_FOUND", "INVALID_REQUEST"
OPS_VALUE = TOKENS["ops"][0]


def submit(id: str, status: int, code: str, body: Any = None, **kw: Any) -> Hostile:
    """A hostile ``POST /api/job-result``; ``data=`` bodies are sent as JSON too."""
    if "data" in kw:
        kw.setdefault("headers", JSON)
    return Hostile(id, "POST", "/api/job-result", status, code, json=body, **kw)


def ping(id: str, path: str, status: int, code: str, **kw: Any) -> Hostile:
    return Hostile(id, "POST", f"/api/ping/{path}", status, code, **kw)


def admin(id: str, method: str, path: str, status: int, code: str, **kw: Any) -> Hostile:
    return Hostile(id, method, path, status, code, **kw)


NEW = {"automatic_failure_threshold": 60}
LONG_AUTH = {"Authorization": "Bearer " + "A" * 100_000}

# fmt: off
HOSTILE = [
    submit("no-token", 401, UNAUTH, result("web_sync"), token=None),
    Hostile("token-in-query-string", "POST", f"/api/job-result?token={OPS_VALUE}", 401, UNAUTH,
            token=None, json=result("web_sync")),
    submit("huge-authorization-header", 401, UNAUTH, result("web_sync"), token=None,
           headers=LONG_AUTH),
    submit("read-token-submits", 403, FORBID, result("web_sync"), token="no-submit"),
    submit("glob-token-other-job", 403, FORBID, result("web_sync"), token="backups"),
    submit("glob-token-batch-one-forbidden", 403, FORBID,
           [result("backup", "db1"), result("web_sync")], token="backups"),
    submit("body-too-large", 413, TOO_LARGE, data=BIG_RESULT),
    submit("chunked-body-too-large", 413, TOO_LARGE, data=BIG_RESULT, chunked=True),
    ping("ping-output-too-large", "web_sync/success", 413, TOO_LARGE, data=b"y" * (MAX_BODY + 1)),
    ping("chunked-ping-output-too-large", "web_sync/success", 413, TOO_LARGE,
         data=b"y" * (MAX_BODY + 1), chunked=True),
    submit("batch-too-large", 400, VALID, [result("web_sync")] * (MAX_BATCH + 1)),
    submit("too-many-labels", 400, VALID,
           result("web_sync", labels={f"l{i}": "v" for i in range(21)})),
    submit("label-value-too-long", 400, VALID, result("web_sync", labels={"env": "v" * 257})),
    submit("label-name-too-long", 400, VALID, result("web_sync", labels={"l" * 65: "v"})),
    submit("label-name-invalid", 400, VALID, result("web_sync", labels={"bad-name": "v"})),
    submit("job-name-traversal", 400, VALID, result("../../etc/passwd")),
    submit("job-name-slash", 400, VALID, result("web/sync")),
    submit("job-name-nul", 400, VALID, result("web_sync\x00")),
    submit("job-name-dotdot", 400, VALID, result("web..sync")),
    submit("job-name-very-long", 400, VALID, result("a" * 10_000)),
    submit("job-name-cyrillic-e", 400, VALID, result("w\u0435b_sync")),
    submit("host-traversal", 400, VALID, result("backup", "../db1")),
    submit("unknown-field", 400, VALID, {**result("web_sync"), "__proto__": {"admin": True}}),
    submit("output-not-a-string", 400, VALID, result("web_sync", output={"a": 1})),
    submit("nan-duration", 400, VALID,
           data=b'{"job_name":"web_sync","status":"success","duration":NaN}'),
    submit("deep-json-array", 400, JSONERR, data=b"[" * 10_000 + b"]" * 10_000),
    submit("deep-json-object", 400, JSONERR, data=nested(5_000)),
    submit("malformed-json", 400, JSONERR, data=b'{"job_name": "web_sync",'),
    submit("not-json", 415, "UNSUPPORTED_MEDIA_TYPE", data=b"job_name=web_sync",
           headers={"Content-Type": "application/x-www-form-urlencoded"}),
    ping("ping-traversal-encoded", "..%2F..%2Fetc%2Fpasswd/success", 400, VALID),
    ping("ping-slash-encoded", "web%2Fsync/success", 400, VALID),
    ping("ping-dotdot", "../success", 400, VALID),
    ping("ping-nul", "web_sync%00/success", 400, VALID),
    ping("ping-very-long-id", "a" * 5000 + "/success", 400, VALID),
    ping("ping-bad-action", "web_sync/rm%20-rf", 400, BAD),
    ping("ping-bad-duration", "web_sync/success?duration=1e999", 400, VALID),
    Hostile("get-job-traversal", "GET", "/api/job/..%2F..%2Fetc%2Fpasswd", 404, NOT_FOUND),
    Hostile("get-job-nul", "GET", "/api/job/web_sync%00", 404, NOT_FOUND),
    admin("create-job-traversal", "POST", "/api/job", 400, VALID,
          json={"job_name": "../evil", **NEW}),
    admin("create-job-host-traversal", "POST", "/api/job", 400, VALID,
          json={"job_name": "evil", "host": "../../tmp", **NEW}),
    admin("create-job-nul", "POST", "/api/job", 400, VALID,
          json={"job_name": "evil\x00.yaml", **NEW}),
    admin("create-job-without-admin", "POST", "/api/job", 403, FORBID, token="no-admin",
          json={"job_name": "evil", **NEW}),
    admin("replace-job-traversal", "PUT", "/api/job/..%2Fevil", 404, NOT_FOUND,
          json={"job_name": "evil", **NEW}),
    admin("delete-job-traversal", "DELETE", "/api/job/..%2F..%2Fjobs.d", 404, NOT_FOUND),
    admin("delete-job-dotdot", "DELETE", "/api/job/..", 400, BAD),
    admin("delete-job-glob-outside", "DELETE", "/api/job/web_sync", 403, FORBID,
          token="backups"),
]
# fmt: on


def snapshot(client: FlaskClient) -> dict[str, Any]:
    svc = services(client.application)
    config = svc.config

    def tree(root: Path) -> dict[str, bytes]:
        if not root.exists():
            return {}
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    monitor = svc.monitor
    store = svc.store
    states = {
        job: (dataclasses.asdict(state), store.history(job))
        for job, state in sorted(store.states().items())
    }
    with monitor.lock:
        return {
            "jobs_dir": tree(config.jobs_dir),
            "state_dir": tree(config.state_dir),
            "definitions": sorted(monitor.definitions),
            "states": states,
            "version": monitor.version,
        }


@pytest.mark.parametrize("case", HOSTILE, ids=[c.id for c in HOSTILE])
def test_hostile_request_is_refused_and_writes_nothing(
    secure: Callable[..., FlaskClient], case: Hostile
) -> None:
    client = secure(limits={"max_body_bytes": MAX_BODY, "max_batch": MAX_BATCH})
    before = snapshot(client)
    response = case.send(client)
    assert response.status_code == case.status, response.get_data(as_text=True)[:500]
    assert response.json["error"]["code"] == case.code
    assert set(response.json["error"]) >= {"code", "message", "field"}
    assert snapshot(client) == before


def test_hostile_table_requests_would_write_if_they_were_well_formed(
    secure: Callable[..., FlaskClient],
) -> None:
    """The snapshot comparison is not vacuous: an accepted result changes it."""
    client = secure()
    before = snapshot(client)
    assert (
        client.post("/api/job-result", json=result("web_sync"), headers=bearer("ops")).status_code
        == 200
    )
    assert snapshot(client) != before


# -- output: truncated keeping the tail, redacted before it is stored -------------------------

SECRETS = {
    "password=hunter2": "hunter2",
    "export DB_PASSWORD='s3cr3t pass'": "s3cr3t",
    "GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789": "ghp_abcdefghij",
    "client_secret: Zx9Yw8Xv7": "Zx9Yw8Xv7",
    '{"password": "json pw", "user": "bob"}': "json pw",
    "api-key=k3y-v4lue": "k3y-v4lue",
    "using AKIAIOSFODNN7EXAMPLE today": "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY": "wJalrXUtnFEMI",
    "curl -H 'Authorization: Bearer xyz.abc.def' https://api": "xyz.abc.def",
    "Authorization: Basic dXNlcjpwYXNzd29yZA==": "dXNlcjpwYXNzd29yZA",
    "proxy-authorization: Negotiate YIIabc123": "YIIabc123",
    "pg_dump postgres://backup:Pa55word@db1:5432/app": "Pa55word",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----": (
        "MIIEowIBAAKCAQEA7"
    ),
}


@pytest.mark.parametrize("route", ["job-result", "ping"])
def test_secrets_in_output_are_redacted_before_they_are_stored(
    client: FlaskClient, route: str
) -> None:
    output = "\n".join(["backup started", *SECRETS, "Tokens processed: 12", "done"])
    if route == "ping":
        response = client.post("/api/ping/backup@db1/0", data=output, headers=bearer("ops"))
    else:
        body = result("backup", "db1", output=output)
        response = client.post("/api/job-result", json=body, headers=bearer("ops"))
    assert response.status_code == 200
    stored = history(client, "backup@db1")[-1].output
    assert stored is not None
    for secret in SECRETS.values():
        assert secret not in stored
    assert stored.count("[REDACTED]") >= len(SECRETS)
    assert "backup started" in stored
    assert "Tokens processed: 12" in stored  # ordinary words survive
    # the (?P<secret>...) group of a default pattern keeps the key, so readers know what it was
    assert "export DB_PASSWORD=[REDACTED]" in stored
    assert "Authorization: Bearer [REDACTED]" in stored
    assert "postgres://backup:[REDACTED]@db1" in stored


def test_redact_patterns_are_configurable(secure: Callable[..., FlaskClient]) -> None:
    client = secure(redact=[r"ticket-\d+", r"\bpin (?P<secret>\d{4})"])
    output = "closing ticket-4711, pin 1234, password=kept-because-defaults-were-replaced"
    client.post(
        "/api/job-result", json=result("backup", "db1", output=output), headers=bearer("ops")
    )
    stored = history(client, "backup@db1")[-1].output
    assert stored == (
        "closing [REDACTED], pin [REDACTED], password=kept-because-defaults-were-replaced"
    )


def test_default_redact_patterns_compile_and_are_used_by_default() -> None:
    config = load_config(None, no_auth=True)
    assert config.redact == DEFAULT_REDACT


def test_long_output_keeps_its_tail(secure: Callable[..., FlaskClient]) -> None:
    client = secure(limits={"max_output_bytes": 1000})
    output = "".join(f"line {i}\n" for i in range(2000))
    client.post(
        "/api/job-result", json=result("backup", "db1", output=output), headers=bearer("ops")
    )
    stored = history(client, "backup@db1")[-1].output
    assert stored == output.encode()[-1000:].decode()


def test_a_secret_cut_by_truncation_is_still_redacted(secure: Callable[..., FlaskClient]) -> None:
    client = secure(limits={"max_output_bytes": 1000})
    # the tail boundary falls inside "password=": cutting first would keep "hunter2"
    output = "x" * 5000 + "\npassword=hunter2 " + "y" * 990
    client.post(
        "/api/job-result", json=result("backup", "db1", output=output), headers=bearer("ops")
    )
    stored = history(client, "backup@db1")[-1].output
    assert stored is not None
    assert len(stored.encode()) <= 1000
    assert "hunter" not in stored


def test_multibyte_output_is_cut_on_a_character_boundary(
    secure: Callable[..., FlaskClient],
) -> None:
    client = secure(limits={"max_output_bytes": 1001})
    client.post(
        "/api/job-result", json=result("backup", "db1", output="ü" * 2000), headers=bearer("ops")
    )
    stored = history(client, "backup@db1")[-1].output
    assert stored == "ü" * 500


# -- YAML is parsed safely everywhere --------------------------------------------------------

EVIL = '!!python/object/apply:os.system ["touch {marker}"]'


def test_config_file_with_a_python_tag_is_an_error_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    config = tmp_path / "config.yaml"
    config.write_text(f"bind: {EVIL.format(marker=marker)}\n")
    with pytest.raises(ConfigError, match="unsupported tag"):
        load_config(config)
    assert not marker.exists()


def test_job_file_with_a_python_tag_is_invalid_and_runs_nothing(
    make_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = f"job_name: {EVIL.format(marker=marker)}\nautomatic_failure_threshold: 60\n"
    client = make_client({"evil.yaml": evil, **JOBS})
    report = services(client.application).last_reload
    assert report is not None
    assert any("evil.yaml" in name for name in report.invalid)
    assert not marker.exists()


def test_roundtrip_reader_refuses_python_tags(tmp_path: Path) -> None:
    from cronmetrics.jobs.yamlio import YamlSyntaxError, load_roundtrip

    marker = tmp_path / "pwned"
    with pytest.raises(YamlSyntaxError):
        load_roundtrip(f"job_name: {EVIL.format(marker=marker)}\n")
    assert not marker.exists()


# -- cronmetrics token new / hash ------------------------------------------------------------


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line and not line.startswith("#")]


def test_token_new_prints_a_strong_token_and_a_config_line_that_works(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(
        cli, ["token", "new", "--scope", "submit", "--job", "backup*", "--name", "backups"]
    )
    assert out.exit_code == 0, out.output
    token, line = _lines(out.output)
    assert token.startswith("cm_")
    import base64

    raw = base64.urlsafe_b64decode(token.removeprefix("cm_") + "=" * (-len(token) % 4))
    assert len(raw) * 8 >= 128
    assert token not in line
    config_file = tmp_path / "config.yaml"
    config_file.write_text("auth:\n  tokens:\n    " + line + "\n")
    config = load_config(config_file)
    who = TokenAuth.from_config(config).identify(f"Bearer {token}")
    assert (who.name, who.scopes, who.jobs) == ("backups", frozenset({"submit"}), ("backup*",))
    again = _lines(runner.invoke(cli, ["token", "new", "--scope", "read"]).output)[0]
    assert again != token


def test_token_new_refuses_bad_names_and_needs_a_scope() -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["token", "new", "--scope", "read", "--name", "a b"]).exit_code == 2
    assert runner.invoke(cli, ["token", "new"]).exit_code == 2
    assert runner.invoke(cli, ["token", "new", "--scope", "root"]).exit_code == 2


def test_token_hash_reads_stdin_for_rotation() -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["token", "hash"], input="cm_existing-token\n")
    assert out.exit_code == 0
    assert out.output.strip() == hashlib.sha256(b"cm_existing-token").hexdigest()
    line = runner.invoke(
        cli, ["token", "hash", "--scope", "read", "--name", "grafana-2"], input="cm_x\n"
    )
    assert line.output.strip() == (
        f'- {{name: "grafana-2", sha256: "{hash_token("cm_x")}", scopes: ["read"]}}'
    )
    assert runner.invoke(cli, ["token", "hash"], input="\n").exit_code != 0


def test_rotation_old_and_new_token_work_side_by_side_until_the_old_is_removed() -> None:
    from cronmetrics.config import TokenConfig
    from cronmetrics.errors import Unauthorized

    old = TokenConfig(name="ci", sha256=hash_token("cm_old"), scopes=["submit"])
    new = TokenConfig(name="ci-2", sha256=hash_token("cm_new"), scopes=["submit"])
    both = TokenAuth([old, new])
    assert both.identify("Bearer cm_old").name == "ci"
    assert both.identify("Bearer cm_new").name == "ci-2"
    after = TokenAuth([new])
    with pytest.raises(Unauthorized):
        after.identify("Bearer cm_old")
