"""One exception hierarchy for the whole package.

Every error a user can cause is a :class:`CronmetricsError`. The HTTP layer maps them to
responses in one place (``api.error_response``) and the CLI maps them to one-line messages
and exit codes in one place (``cli.main``; the cron host's commands in ``client.cli``), so
a new error type needs no new plumbing.

Standard library only, and Python 3.9-compatible: the one-file client (zipapp) ships this
module, so the cron host side raises the same classes as the server.
"""

from __future__ import annotations

_FIELDS = ("message", "path", "line", "column", "field")


class Problem:
    """One validation problem, located as precisely as we can (file, line, column, field).

    A value (immutable, compared and hashed by its fields). A plain class rather than a
    dataclass: ``dataclasses`` imports ``inspect``, which cost every cron run of the
    client ~9 ms."""

    __slots__ = _FIELDS

    message: str
    path: str | None
    line: int | None
    column: int | None
    field: str | None

    def __init__(
        self,
        message: str,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
    ) -> None:
        init = object.__setattr__
        init(self, "message", message)
        init(self, "path", path)
        init(self, "line", line)
        init(self, "column", column)
        init(self, "field", field)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: a Problem is immutable")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Problem:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"Problem({inner})"

    def replace(self, **changes: object) -> Problem:
        """A copy with ``changes`` (what ``dataclasses.replace`` would give)."""
        values = {name: getattr(self, name) for name in _FIELDS}
        values.update(changes)
        return Problem(**values)

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        return f"{where}{self.message}"


class CronmetricsError(Exception):
    """Root of every error cronmetrics raises on purpose."""

    code = "ERROR"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ConfigError(CronmetricsError):
    """The configuration file, environment or flags are invalid."""

    code = "CONFIG_ERROR"
    exit_code = 2


class ValidationError(CronmetricsError):
    """Input (a job file, a request body) broke the contract; carries every problem found."""

    code = "VALIDATION_ERROR"
    http_status = 400

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("ValidationError needs at least one problem")
        first = problems[0]
        super().__init__(str(first), field=first.field)
        self.problems = problems


class InvalidRequest(CronmetricsError):
    """A request is malformed in a way that is not about one field's value."""

    code = "INVALID_REQUEST"
    http_status = 400


class MalformedJson(InvalidRequest):
    code = "INVALID_JSON"


class UnsupportedMediaType(CronmetricsError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415


class PayloadTooLarge(CronmetricsError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class NotFound(CronmetricsError):
    code = "NOT_FOUND"
    http_status = 404
    exit_code = 4


class Conflict(CronmetricsError):
    code = "CONFLICT"
    http_status = 409
    exit_code = 5


class ReadOnly(Conflict):
    """The jobs directory cannot be written (ConfigMap, git-sync worktree)."""

    code = "READ_ONLY"


class Unauthorized(CronmetricsError):
    code = "UNAUTHORIZED"
    http_status = 401
    exit_code = 6


class Forbidden(CronmetricsError):
    code = "FORBIDDEN"
    http_status = 403
    exit_code = 6


class RateLimited(CronmetricsError):
    """Too many failed attempts; ``retry_after`` seconds until the next one is allowed."""

    code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageError(CronmetricsError):
    """State could not be persisted or restored (disk full, corrupt snapshot)."""

    code = "STORAGE_ERROR"
    http_status = 503


class StoreUnavailable(StorageError):
    """The shared store (Redis) cannot be reached; the client should retry."""

    code = "STORE_UNAVAILABLE"


class ServerUnavailable(CronmetricsError):
    """The CLI could not reach the server."""

    code = "UNAVAILABLE"
    http_status = 503
    exit_code = 3
