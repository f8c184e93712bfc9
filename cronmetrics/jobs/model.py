"""The domain model: job definitions and results, validated with pydantic.

``schemas/job.schema.json`` publishes the same contract as :class:`JobDefinition`;
``tests/test_schema.py`` proves they accept and reject the same documents.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from cronmetrics.errors import Problem, ValidationError
from cronmetrics.jobs import schedule as cron

__all__ = [
    "EXPORTER_LABELS",
    "JobDefinition",
    "Lifecycle",
    "RecurringWindow",
    "ResultIn",
    "ResultStatus",
    "job_id",
    "parse_job",
    "problems_from_pydantic",
    "split_job_id",
]

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
HOST_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
LABEL_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_NAME_RE = re.compile(NAME_PATTERN)
_HOST_RE = re.compile(HOST_PATTERN)
_LABEL_RE = re.compile(LABEL_PATTERN)
#: Labels the exporter sets itself, plus the ones Prometheus attaches to every target.
EXPORTER_LABELS = frozenset({"job_name", "host", "status", "reason", "result", "job", "instance"})
MAX_LABELS = 20
MAX_LABEL_VALUE = 256
TEN_YEARS = 10 * 366 * 86400
NEEDS_DEADLINE = "set automatic_failure_threshold (seconds) or schedule (cron), or both"


class Lifecycle(enum.StrEnum):
    ACTIVE = "active"
    MAINTENANCE = "maintenance"
    PAUSED = "paused"
    RETIRED = "retired"


class ResultStatus(enum.StrEnum):
    START = "start"
    SUCCESS = "success"
    FAILURE = "failure"


def job_id(name: str, host: str | None) -> str:
    return f"{name}@{host}" if host else name


def _check_name(value: str, regex: re.Pattern[str]) -> str:
    if ".." in value:
        raise ValueError(f"{value!r} must not contain '..'")
    if not regex.fullmatch(value):
        first = "a letter or '_'" if regex is _NAME_RE else "a letter, digit or '_'"
        raise ValueError(
            f"{value!r} is not allowed: use letters, digits, '_', '.', '-' "
            f"(no spaces or '/'), starting with {first}"
        )
    return value


def check_job_name(value: str) -> str:
    return _check_name(value, _NAME_RE)


def check_host(value: str) -> str:
    return _check_name(value, _HOST_RE)


def split_job_id(value: str) -> tuple[str, str | None]:
    """``name@host`` -> ``(name, host)`` (``name`` or ``name@`` -> no host).

    Raises ``ValueError`` for a bad name or host; each caller turns that into its own
    error (a CLI usage error, a 400 naming its field).
    """
    name, _, host = value.partition("@")
    check_job_name(name)
    if host:
        check_host(host)
    return name, host or None


#: RFC 3339 date-time (what JSON Schema's ``date-time`` format means) or a full date.
_RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def to_utc(value: Any) -> Any:
    """A timestamp: a YAML timestamp, an RFC 3339 string with offset, or a date.

    YAML timestamps without an offset are UTC (YAML spec); a date is midnight UTC. Strings
    must carry an offset (``2026-12-01T00:00:00Z``), as JSON Schema's ``date-time`` says;
    epoch numbers and other spellings pydantic would guess at are refused.
    """
    if isinstance(value, str):
        text = value.strip()
        if _DATE_RE.fullmatch(text):
            try:
                value = dt.date.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a valid date") from None
        elif _RFC3339_RE.fullmatch(text):
            try:
                value = dt.datetime.fromisoformat(text.replace("z", "Z"))
            except ValueError:
                raise ValueError(f"{value!r} is not a valid timestamp") from None
        else:
            raise ValueError(
                f"{value!r} is not a timestamp: use RFC 3339 with an offset, like "
                "2026-12-01T00:00:00Z, or a date like 2026-12-01"
            )
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    raise ValueError("must be a timestamp like 2026-12-01T00:00:00Z or a date like 2026-12-01")


def _integral(value: Any) -> Any:
    """``3600.0`` is the integer 3600, as in JSON Schema; ``3600.5`` is not an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _label_name(name: str) -> str:
    if not _LABEL_RE.fullmatch(name):
        raise ValueError(f"label name {name!r} is not a valid Prometheus label name")
    if name.startswith("__"):
        raise ValueError(f"label name {name!r} must not start with '__' (reserved)")
    if name in EXPORTER_LABELS:
        raise ValueError(f"label name {name!r} is reserved by the exporter")
    return name


def _result_label_name(name: str) -> str:
    if not _LABEL_RE.fullmatch(name):
        raise ValueError(f"label name {name!r} is not a valid label name")
    return name


JobName = Annotated[
    StrictStr, Field(min_length=1, max_length=128), pydantic.AfterValidator(check_job_name)
]
Host = Annotated[
    StrictStr, Field(min_length=1, max_length=253), pydantic.AfterValidator(check_host)
]
Seconds = Annotated[StrictInt, Field(ge=1, le=TEN_YEARS), pydantic.BeforeValidator(_integral)]
LabelValue = Annotated[StrictStr, Field(max_length=MAX_LABEL_VALUE)]
Labels = Annotated[
    dict[
        Annotated[StrictStr, Field(max_length=64), pydantic.AfterValidator(_label_name)],
        LabelValue,
    ],
    Field(max_length=MAX_LABELS),
]
ResultLabels = Annotated[
    dict[
        Annotated[StrictStr, Field(max_length=64), pydantic.AfterValidator(_result_label_name)],
        LabelValue,
    ],
    Field(max_length=MAX_LABELS),
]


MAX_RECURRING_WINDOWS = 20


class RecurringWindow(BaseModel):
    """A maintenance window that comes back: each fire of ``schedule`` starts ``duration``
    seconds of maintenance (elapsed time), in ``timezone`` (default: the job's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    duration: Seconds
    timezone: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        cron.parse(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None:
            cron.parse_timezone(value)
        return value


class JobDefinition(BaseModel):
    """One expected job, as declared in a ``jobs.d`` file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_name: JobName
    host: Host | None = None
    automatic_failure_threshold: Seconds | None = None
    schedule: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    timezone: Annotated[StrictStr, Field(min_length=1, max_length=64)] = "UTC"
    grace: Annotated[StrictInt, Field(ge=0, le=TEN_YEARS), pydantic.BeforeValidator(_integral)] = (
        300
    )
    max_runtime: Seconds | None = None
    labels: Labels = Field(default_factory=dict)
    status: Lifecycle = Lifecycle.ACTIVE
    maintenance_until: dt.datetime | None = None
    maintenance_windows: Annotated[
        tuple[RecurringWindow, ...], Field(max_length=MAX_RECURRING_WINDOWS)
    ] = ()
    description: Annotated[StrictStr, Field(max_length=1000)] | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            cron.parse(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        cron.parse_timezone(value)
        return value

    @field_validator("maintenance_until", mode="before")
    @classmethod
    def _until(cls, value: Any) -> Any:
        return None if value is None else to_utc(value)

    @field_validator("maintenance_windows", mode="before")
    @classmethod
    def _no_windows(cls, value: Any) -> Any:
        return () if value is None else value

    @pydantic.model_validator(mode="after")
    def _needs_deadline(self) -> JobDefinition:
        if self.automatic_failure_threshold is None and self.schedule is None:
            raise ValueError(NEEDS_DEADLINE)
        return self

    @property
    def id(self) -> str:
        return job_id(self.job_name, self.host)

    @property
    def cron(self) -> cron.CronSchedule | None:
        return cron.parse(self.schedule) if self.schedule else None

    @property
    def tz(self) -> dt.tzinfo:
        return cron.parse_timezone(self.timezone)

    def to_document(self) -> dict[str, Any]:
        """The definition as a job file would spell it (defaults left out)."""
        return self.model_dump(mode="json", exclude_defaults=True)


class ResultIn(BaseModel):
    """One submitted result: the body of ``POST /api/job-result`` (docs/api.md)."""

    model_config = ConfigDict(extra="forbid")

    job_name: JobName
    host: Host | None = None
    status: ResultStatus
    duration: Annotated[float, Field(ge=0, le=TEN_YEARS, allow_inf_nan=False)] | None = None
    timestamp: dt.datetime | None = None
    exit_code: Annotated[StrictInt, Field(ge=-1024, le=1024)] | None = None
    run_id: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None
    output: StrictStr | None = None
    labels: ResultLabels = Field(default_factory=dict)

    @field_validator("timestamp", mode="after")
    @classmethod
    def _timestamp(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        if not math.isfinite(value.timestamp()) or value.year < 2000:
            raise ValueError("timestamp must be after 2000-01-01")
        return value


_FIELDS = tuple(JobDefinition.model_fields)
_KINDS: dict[type, str] = {
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    dt.datetime: "a timestamp",
    dt.date: "a date",
}


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        hint = difflib.get_close_matches(key, _FIELDS, n=1, cutoff=0.6) if len(loc) == 1 else []
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"unknown key {key!r}{suggestion}"
    if kind == "missing":
        return f"{'.'.join(map(str, loc))} is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "string_type" and len(loc) == 2 and loc[0] == "labels":
        message = "label values must be strings (quote the value)"
    message = message.replace("Input should be", "must be")
    field = ".".join(map(str, loc))
    return f"{field}: {message}" if field else message


def problems_from_pydantic(
    exc: pydantic.ValidationError,
    *,
    path: str | None = None,
    text: str | None = None,
    prefix: Sequence[str | int] = (),
) -> list[Problem]:
    """Translate pydantic's errors into located :class:`Problem` objects."""
    from cronmetrics.jobs.yamlio import locate

    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
        line = col = None
        if text is not None:
            found = locate(text, loc)
            if found:
                line, col = found
        fixed = {**error, "loc": loc}
        field = ".".join(map(str, (*prefix, *loc))) or None
        problems.append(Problem(_message(fixed), path=path, line=line, column=col, field=field))
    return problems


def parse_job(data: Any, *, path: str | None = None, text: str | None = None) -> JobDefinition:
    """Validate one job document; raise :class:`ValidationError` with every problem."""
    if not isinstance(data, dict):
        kind = _KINDS.get(type(data), f"a {type(data).__name__}")
        what = "file is empty" if data is None else f"top level must be a mapping, not {kind}"
        raise ValidationError(
            [
                Problem(
                    what,
                    path=path,
                    line=1 if text is not None else None,
                    column=1 if text is not None else None,
                )
            ]
        )
    try:
        return JobDefinition.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = problems_from_pydantic(exc, path=path, text=text)
    # pydantic skips model validators when a field is invalid; report this one anyway
    deadline_keys = ("automatic_failure_threshold", "schedule")
    typos = [str(k) for k in data if k not in JobDefinition.model_fields]
    needs_deadline = all(data.get(key) is None for key in deadline_keys) and not any(
        difflib.get_close_matches(typo, deadline_keys, n=1, cutoff=0.6) for typo in typos
    )
    if needs_deadline and all(p.message != NEEDS_DEADLINE for p in problems):
        from cronmetrics.jobs.yamlio import locate

        where = locate(text, ()) if text is not None else None
        line, col = where or (None, None)
        problems.append(Problem(NEEDS_DEADLINE, path=path, line=line, column=col))
    raise ValidationError(problems)
