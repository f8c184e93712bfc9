"""What the cron host's exceptions mean, and how a server's error answer becomes one.

The server answers an error as ``{"error": {"code", "message", "field"}}``: this module
turns that body back into the very class the server raised (its exit code included), so
a cron host reports what a local call would have. The classes here are the client's own:
a flag that is wrong before anything is sent (:class:`UsageError`), and the failures that
sending again cannot cure (:class:`Hopeless` and its kinds), which the retry policy
(:mod:`cronmetrics.client.retry`) leaves alone. Which network failure becomes which of
them is the HTTP client's to decide (:mod:`cronmetrics.client.http`).

Standard library only, and Python 3.9-compatible: the one-file client ships it.
"""

from __future__ import annotations

from collections.abc import Mapping

from cronmetrics import errors as err
from cronmetrics.errors import CronmetricsError, Problem, ServerUnavailable

#: typing costs a cron run ~3 ms to import: its names are for the type checker only
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CertificateRejected",
    "Hopeless",
    "NotCronmetrics",
    "UsageError",
    "WrongScheme",
    "advice",
    "error_from_response",
]

TOKEN_HINT = "pass a valid token with --token (or CRONMETRICS_TOKEN, --token-file)"  # noqa: S105


class UsageError(CronmetricsError):
    """A flag's value is wrong before anything was sent (exit 2, like a usage error)."""

    code = "USAGE"
    exit_code = 2


class Hopeless(ServerUnavailable):
    """The server is there, but this client as configured can never talk to it: trying
    again cannot help, so it is not retried (a cron run learns it in one attempt)."""


class WrongScheme(Hopeless):
    """The URL says https:// to a plain HTTP server or http:// to a TLS one."""

    code = "WRONG_SCHEME"


class NotCronmetrics(Hopeless):
    """A success that is not a cronmetrics answer: the URL points at another web app, so
    the report was not recorded, and sending it again there will not record it."""

    code = "NOT_CRONMETRICS"


class CertificateRejected(Hopeless):
    """The server's certificate is not trusted, or does not name the host of the URL."""

    code = "CERTIFICATE_REJECTED"


def _error_classes() -> dict[str, type[CronmetricsError]]:
    found: dict[str, type[CronmetricsError]] = {}
    todo: list[type[CronmetricsError]] = [CronmetricsError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


_BY_STATUS: dict[int, type[CronmetricsError]] = {
    401: err.Unauthorized,
    403: err.Forbidden,
    404: err.NotFound,
    409: err.Conflict,
    413: err.PayloadTooLarge,
    415: err.UnsupportedMediaType,
    429: err.RateLimited,
}


def _build_error(
    status: int,
    code: str,
    message: str,
    field: str | None,
    body: Mapping[str, Any],
    retry_after: float | None,
) -> CronmetricsError:
    if status >= 500 or code in ("UNAVAILABLE", "STORAGE_ERROR", "INTERNAL"):
        return ServerUnavailable(f"server error ({status}): {message}", field=field)
    cls = _error_classes().get(code) or _BY_STATUS.get(status, err.InvalidRequest)
    if issubclass(cls, err.ValidationError):
        problems = [
            Problem(str(p.get("message", "")), field=p.get("field"))
            for p in body.get("problems", [])
            if isinstance(p, dict)
        ] or [Problem(message, field=field)]
        return cls(problems)
    if issubclass(cls, err.RateLimited):
        return cls(message, retry_after=retry_after if retry_after is not None else 1.0)
    if cls in (CronmetricsError, err.ConfigError, UsageError):
        cls = err.InvalidRequest
    return cls(message, field=field)


def error_from_response(
    status: int, body: Any, fallback: str = "", *, retry_after: str | None = None
) -> CronmetricsError:
    """The exception a non-2xx answer stands for (the server's own code when it sent one)."""
    wait = _retry_after_seconds(retry_after)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        message = str(error.get("message") or fallback or f"HTTP {status}")
        field = error.get("field")
        field = field if isinstance(field, str) else None
        return _build_error(status, code, message, field, error, wait)
    text = fallback.strip().splitlines()[0][:200] if fallback.strip() else ""
    message = f"HTTP {status}" + (f": {text}" if text else "")
    return _build_error(status, "", message, None, {}, wait)


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the delta-seconds form: the one the server sends)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None


def advice(exc: CronmetricsError) -> str:
    """``exc``'s message with what to do about it, in one line."""
    message = " ".join(exc.message.split())
    if isinstance(exc, err.Unauthorized):
        return f"{message}: {TOKEN_HINT}"
    if isinstance(exc, err.Forbidden):
        return f"{message}: use a token with the submit scope whose jobs globs cover this job"
    if isinstance(exc, err.RateLimited):
        return (
            f"{message} (Retry-After {exc.retry_after:g}s); another client at this address"
            " sends a wrong token: fix that one"
        )
    return message
