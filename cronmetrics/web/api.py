"""HTTP plumbing shared by every route: errors, request context, auth, JSON bodies.

Every error leaves as ``{"error": {"code", "message", "field"}}``: :func:`error_response`
is the one place a :class:`CronmetricsError` (or a werkzeug HTTP error) becomes a response.
"""

from __future__ import annotations

import contextvars
import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydantic
from flask import Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cronmetrics import logs as cmlog
from cronmetrics.errors import (
    CronmetricsError,
    MalformedJson,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    UnsupportedMediaType,
    ValidationError,
)
from cronmetrics.jobs.model import problems_from_pydantic
from cronmetrics.web.auth import Identity
from cronmetrics.web.services import Services, services

__all__ = ["current", "identity", "json_body", "json_response", "require"]

log = cmlog.get_logger("api")
OPENAPI = Path(__file__).resolve().parent / "openapi.yaml"


#: the current request's services, set by :func:`before_request` and reset at teardown
_SERVICES: contextvars.ContextVar[Services | None] = contextvars.ContextVar(
    "cronmetrics_services", default=None
)


def current() -> Services:
    """The app's services. A submission asks about seven times; a context variable set
    once per request costs far less than resolving ``current_app`` through its proxy."""
    svc = _SERVICES.get()
    if svc is None:
        from flask import current_app

        svc = services(current_app)
    return svc


def json_response(data: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        status=status,
        mimetype="application/json",
    )


def error_response(exc: CronmetricsError) -> Response:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message, "field": exc.field}
    if isinstance(exc, ValidationError) and len(exc.problems) > 1:
        error["problems"] = [{"message": p.message, "field": p.field} for p in exc.problems]
    response = json_response({"error": error}, exc.http_status)
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cronmetrics"'
    if isinstance(exc, RateLimited):
        from cronmetrics.web.ratelimit import retry_after_header

        response.headers["Retry-After"] = retry_after_header(exc.retry_after)
    elif isinstance(exc, StoreUnavailable):  # a Redis blip: come back in a moment
        response.headers["Retry-After"] = "1"
    return response


_HTTP_CODES = {
    400: "INVALID_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def http_error(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):
        limit = current().config.limits.max_body_bytes
        return handle_error(PayloadTooLarge(f"request body is larger than {limit} bytes"))
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "HTTP_ERROR")
    message = exc.description or exc.name
    if status == 404:
        message = f"no such endpoint: {request.method} {request.path}"
    elif status == 405:
        message = f"method {request.method} not allowed on {request.path}"
    response = json_response({"error": {"code": code, "message": message, "field": None}}, status)
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return response


def handle_error(exc: CronmetricsError) -> Response:
    if getattr(g, "submission", False):
        outcome = {
            "UNAUTHORIZED": "unauthorized",
            "FORBIDDEN": "forbidden",
            "RATE_LIMITED": "rate_limited",
            "NOT_FOUND": "unknown_job",
            "PAYLOAD_TOO_LARGE": "too_large",
        }.get(exc.code, "invalid")
        current().metrics.submissions.labels(outcome).inc()
    level = log.warning if exc.http_status < 500 else log.error
    level(
        "request failed", extra={"status": exc.http_status, "code": exc.code, "error": exc.message}
    )
    return error_response(exc)


def unexpected_error(exc: Exception) -> Response:
    log.exception("unhandled error")
    body = {"error": {"code": "INTERNAL", "message": "internal server error", "field": None}}
    return json_response(body, 500)


# -- auth ----------------------------------------------------------------------------------


def identity() -> Identity:
    """The caller, identified once per request; raises 401 for a missing/unknown token.

    Binds the token's *name* to every later log line of the request; the value is never
    logged. Failures count against the peer address (429 once it has failed too often).
    """
    found: Identity | None = g.get("identity")
    if found is None:
        svc = current()
        found = svc.auth.identify(
            request.headers.get("Authorization"),
            client=request.remote_addr or "unknown",
            now=svc.clock(),
        )
        g.identity = found
        if found.name != "anonymous":
            cmlog.bind(token=found.name)
    return found


def require(scope: str, job_id: str | None = None) -> Identity:
    who = identity()
    current().auth.require(who, scope, job_id)
    return who


# -- bodies --------------------------------------------------------------------------------


def raw_body() -> bytes:
    """The request body, at most ``limits.max_body_bytes`` (413 beyond, chunked or not).

    Werkzeug enforces the limit against ``Content-Length``, but a chunked body (no
    length) is silently cut at the limit; one more byte on the wire means it was larger.
    """
    data = request.get_data(cache=True)
    limit = current().config.limits.max_body_bytes
    if request.content_length is None and len(data) >= limit:
        if "body_over_limit" not in g:
            g.body_over_limit = bool(request.environ["wsgi.input"].read(1))
        if g.body_over_limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    return data


def json_body(adapter: pydantic.TypeAdapter[Any], *, prefix_index: bool = False) -> Any:
    """Parse and validate a JSON body in one pass (pydantic's Rust JSON parser)."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            f"send the body as JSON with 'Content-Type: application/json' "
            f"(got {request.mimetype or 'no content type'!r})"
        )
    body = raw_body()
    if not body.strip():
        raise MalformedJson("request body is empty; expected JSON")
    try:
        return adapter.validate_json(body)
    except pydantic.ValidationError as exc:
        raise _json_problems(exc) from None


def _json_problems(exc: pydantic.ValidationError) -> CronmetricsError:
    errors = exc.errors()
    for error in errors:
        if error["type"] == "json_invalid":
            detail = str(error.get("ctx", {}).get("error", error["msg"]))
            return MalformedJson(f"malformed JSON: {detail}")
        if (
            error["type"] in ("model_type", "list_type", "model_attributes_type")
            and not error["loc"]
        ):
            return ValidationError(
                [_problem("body must be a JSON object (or an array of objects)", None)]
            )
    problems = problems_from_pydantic(exc)
    fixed = []
    for problem in problems:
        field = problem.field
        if field and field.split(".")[0].isdigit():
            index, _, rest = field.partition(".")
            field = f"[{index}].{rest}" if rest else f"[{index}]"
            message = problem.message.replace(problem.field or "", field, 1)
            fixed.append(_problem(message, field))
        else:
            fixed.append(problem)
    return ValidationError(fixed)


def _problem(message: str, field: str | None) -> Any:
    from cronmetrics.errors import Problem

    return Problem(message, field=field)


# -- app wiring ----------------------------------------------------------------------------


def before_request() -> None:
    from flask import current_app

    _SERVICES.set(services(current_app))
    cmlog.clear()
    rid = request.headers.get("X-Request-Id", "")
    if not (0 < len(rid) <= 64 and rid.replace("-", "").isalnum()):
        rid = uuid.uuid4().hex
    g.request_id = rid
    cmlog.bind(request_id=rid)
    job_id = (request.view_args or {}).get("job_id")
    if isinstance(job_id, str):
        cmlog.bind(job=job_id, host=job_id.partition("@")[2] or None)


def after_request(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id", "")
    return response


def teardown_request(exc: BaseException | None) -> None:
    """Unbind the request's log fields so that later lines of this thread don't carry
    another request's id or token name."""
    cmlog.clear()
    _SERVICES.set(None)


def stream(chunks: Iterable[bytes]) -> Iterable[bytes]:
    yield from chunks
