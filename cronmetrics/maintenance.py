"""Runtime maintenance windows as a service: create, list, end, and keep the monitor in step.

Windows are runtime records in the state store (kind ``maintenance``), never files in
jobs.d, so they work when jobs.d is read-only, survive restarts, and every replica on a
shared store sees the same ones: :meth:`Maintenance.sync` reads them back (at start, after
each local change, and every second on the scheduler) and hands them to the monitor,
which evaluates jobs with them. The API, the CLI (online and offline) and the dashboard
call the same few functions here.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Protocol

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from cronmetrics.errors import Conflict, NotFound, Problem, ValidationError
from cronmetrics.jobs.model import problems_from_pydantic, to_utc
from cronmetrics.logs import get_logger, rfc3339
from cronmetrics.monitor import Monitor
from cronmetrics.windows import Matcher, Window, make_matcher, parse_duration, parse_matcher

__all__ = [
    "KIND",
    "Maintenance",
    "RuntimeRecords",
    "WindowIn",
    "build_window",
    "ended_now",
    "job_matchers",
    "window_json",
]

log = get_logger("maintenance")
KIND = "maintenance"
STATES = ("active", "pending", "expired")
MAX_MATCHERS = 32


class RuntimeRecords(Protocol):
    """The part of the state store windows live in (``put_record`` ... ``delete_record``)."""

    def put_record(self, kind: str, key: str, value: Mapping[str, Any], now: float) -> Any: ...
    def get_record(self, kind: str, key: str) -> Any: ...
    def list_records(self, kind: str) -> Sequence[Any]: ...
    def delete_record(self, kind: str, key: str) -> bool: ...


class MatcherIn(BaseModel):
    """A matcher as a JSON object, the form ``GET /api/maintenance`` answers with."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    op: StrictStr = "="
    value: StrictStr


class WindowIn(BaseModel):
    """The body of ``POST /api/maintenance``."""

    model_config = ConfigDict(extra="forbid")

    #: ``"host=db1"`` strings or ``{"name", "op", "value"}`` objects
    matchers: Annotated[list[Any], Field(min_length=1, max_length=MAX_MATCHERS)]
    start: Any = None
    end: Any = None
    duration: StrictStr | StrictInt | None = None
    comment: Annotated[StrictStr, Field(max_length=1000)] = ""


def _timestamp(value: Any, field: str) -> float:
    try:
        when: dt.datetime = to_utc(value)
    except ValueError as exc:
        raise ValidationError([Problem(f"{field}: {exc}", field=field)]) from None
    return when.timestamp()


def _seconds(value: str | int, field: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValidationError([Problem(f"{field}: {exc}", field=field)]) from None


def parse_window_in(body: Mapping[str, Any] | WindowIn) -> WindowIn:
    """Validate a request body (a dict from the CLI, or already parsed)."""
    if isinstance(body, WindowIn):
        return body
    try:
        return WindowIn.model_validate(body)
    except pydantic.ValidationError as exc:
        raise ValidationError(problems_from_pydantic(exc)) from None


def build_window(
    body: Mapping[str, Any] | WindowIn,
    *,
    now: float,
    created_by: str,
    max_duration: int,
    wid: str | None = None,
) -> Window:
    """A new window from a request, every rule checked (400 naming the field):

    one of ``end`` (a time) or ``duration`` (``2h`` or seconds, from the start); ``start``
    defaults to now (a start in the past means now, as in Alertmanager); the end must be
    after the start and in the future; at most ``max_duration`` seconds long."""
    spec = parse_window_in(body)
    matchers = []
    for index, item in enumerate(spec.matchers):
        field = f"matchers.{index}"
        if isinstance(item, str):
            matchers.append(parse_matcher(item, field=field))
            continue
        try:
            parsed = MatcherIn.model_validate(item)
        except pydantic.ValidationError as exc:
            raise ValidationError(problems_from_pydantic(exc, prefix=("matchers", index))) from None
        matchers.append(make_matcher(parsed.name, parsed.op, parsed.value, field=field))
    start = now if spec.start is None else max(now, _timestamp(spec.start, "start"))
    if (spec.end is None) == (spec.duration is None):
        raise ValidationError(
            [Problem("give either end (a time) or duration (like 2h), not both", field="end")]
            if spec.end is not None
            else [Problem("end is required: give end (a time) or duration (like 2h)", field="end")]
        )
    if spec.end is not None:
        field, end = "end", _timestamp(spec.end, "end")
        if end <= now:
            raise ValidationError([Problem(f"end {rfc3339(end)} is in the past", field=field)])
        if end <= start:
            raise ValidationError(
                [Problem(f"end must be after start ({rfc3339(start)})", field=field)]
            )
    else:
        assert spec.duration is not None
        field, seconds = "duration", _seconds(spec.duration, "duration")
        if seconds <= 0:
            raise ValidationError([Problem("duration must be positive", field=field)])
        end = start + seconds
    if end - start > max_duration:
        raise ValidationError(
            [
                Problem(
                    f"{field}: a window may last at most {_span(max_duration)} "
                    "(maintenance.max_duration)",
                    field=field,
                )
            ]
        )
    return Window(
        id=wid or secrets.token_hex(6),
        matchers=tuple(matchers),
        start=start,
        end=end,
        comment=spec.comment,
        created_by=created_by,
        created_at=now,
    )


def _span(seconds: int) -> str:
    """``30 days``, ``1 hour``, ``90 minutes``: the largest unit that says it exactly."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"


def window_json(window: Window, now: float, jobs: Sequence[str] | None = None) -> dict[str, Any]:
    """A window as the API and the CLI show it; ``jobs``: the ids it selects now."""
    out: dict[str, Any] = {
        "id": window.id,
        "state": window.state(now),
        "matchers": [m.to_dict() for m in window.matchers],
        "match": ", ".join(str(m) for m in window.matchers),
        "start": rfc3339(window.start),
        "end": rfc3339(window.end),
        "comment": window.comment,
        "created_by": window.created_by,
        "created_at": rfc3339(window.created_at),
        "ended_by": window.ended_by,
    }
    if jobs is not None:
        out["covers"] = len(jobs)
        out["jobs"] = list(jobs)
    return out


def ended_now(window: Window, now: float, ended_by: str) -> Window:
    """``window`` ended at ``now`` by ``ended_by``; a pending one never starts."""
    return Window(
        window.id,
        window.matchers,
        min(window.start, now),
        now,
        window.comment,
        window.created_by,
        window.created_at,
        ended_by,
    )


def job_matchers(job_name: str, host: str | None) -> list[str]:
    """Matchers selecting exactly one job (``host=""`` for a host-agnostic one)."""
    return [str(Matcher("job_name", "=", job_name)), str(Matcher("host", "=", host or ""))]


class Maintenance:
    """Windows of one server: the store keeps them, the monitor applies them."""

    def __init__(
        self,
        records: RuntimeRecords,
        monitor: Monitor,
        clock: Callable[[], float],
        *,
        max_duration: int = 30 * 86400,
        keep_expired: int = 5 * 86400,
    ) -> None:
        self.records = records
        self.monitor = monitor
        self.clock = clock
        self.max_duration = max_duration
        self.keep_expired = keep_expired
        self._lock = threading.Lock()

    def _load(self) -> list[Window]:
        windows = []
        for record in self.records.list_records(KIND):
            try:
                windows.append(Window.from_record(record.value))
            except (KeyError, TypeError, ValueError, ValidationError) as exc:
                log.error(
                    "damaged maintenance window ignored",
                    extra={"id": record.key, "error": str(exc)},
                )
        return windows

    def sync(self) -> list[str]:
        """Read the windows back from the store into the monitor (what another replica
        or an offline ``cronmetrics maintenance`` did shows up here); drop windows expired
        longer than ``keep_expired``. Return the ids of the jobs whose windows changed."""
        with self._lock:
            now = self.clock()
            kept = []
            for window in self._load():
                if window.end + self.keep_expired <= now:
                    self.monitor.settle_window(window)
                    self.records.delete_record(KIND, window.id)
                else:
                    kept.append(window)
            return self.monitor.set_windows(kept, now)

    def create(self, body: Mapping[str, Any] | WindowIn, created_by: str) -> Window:
        now = self.clock()
        window = build_window(body, now=now, created_by=created_by, max_duration=self.max_duration)
        self.records.put_record(KIND, window.id, window.to_record(), now)
        self.sync()
        log.info(
            "maintenance window created",
            extra={"id": window.id, "match": [str(m) for m in window.matchers],
                   "end": rfc3339(window.end), "jobs_now": len(self.jobs(window))},
        )  # fmt: skip
        return window

    def windows(self, states: Iterable[str] = ("active", "pending")) -> list[Window]:
        """Windows in the given states, soonest end first."""
        now = self.clock()
        wanted = set(states)
        chosen = [w for w in self.monitor.windows.values() if w.state(now) in wanted]
        return sorted(chosen, key=lambda w: (w.end, w.id))

    def get(self, wid: str) -> Window:
        record = self.records.get_record(KIND, wid)
        if record is None:
            raise NotFound(f"no maintenance window {wid!r}", field="id")
        return Window.from_record(record.value)

    def end(self, wid: str, ended_by: str) -> Window:
        """End a window now (a pending one never starts); 409 if it is over already."""
        window = self.get(wid)
        now = self.clock()
        if window.end <= now:
            raise Conflict(f"maintenance window {wid!r} already ended at {rfc3339(window.end)}")
        ended = ended_now(window, now, ended_by)
        self.records.put_record(KIND, wid, ended.to_record(), now)
        self.sync()
        log.info("maintenance window ended early", extra={"id": wid, "by": ended_by})
        return ended

    def silence_job(
        self, job_name: str, host: str | None, seconds: int, created_by: str, comment: str = ""
    ) -> Window:
        """A window for one job for ``seconds`` from now (the dashboard's "maintenance for
        a duration"): it needs no write to jobs.d, so it works when jobs.d is read-only."""
        body = {"matchers": job_matchers(job_name, host), "duration": seconds, "comment": comment}
        return self.create(body, created_by)

    def jobs(self, window: Window) -> list[str]:
        """The ids of the jobs ``window`` selects now."""
        return self.monitor.selected_by(window)
