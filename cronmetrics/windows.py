"""Maintenance windows: matchers over a job's labels, a start and an end (pure).

A window silences every job its matchers select while ``start <= now < end``, like an
Alertmanager silence: matchers use Alertmanager's four operators over the job's labels,
``job_name`` and ``host`` (``""`` for a host-agnostic job, as on ``/metrics``), are AND-ed,
and regular expressions are fully anchored (``db.*`` matches ``db1``, not ``mydb1``). A
label a job does not have compares as ``""``.

Recurring windows come from job files (``maintenance_windows``: cron + duration); runtime
windows from the API and CLI, kept in the store. :func:`coverage` folds both into what the
evaluator needs at a given ``now``; nothing here reads a clock.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re2

from cronmetrics.errors import Problem, ValidationError
from cronmetrics.jobs import schedule as cron
from cronmetrics.jobs.model import EXPORTER_LABELS, LABEL_PATTERN, JobDefinition, RecurringWindow

__all__ = [
    "NO_COVERAGE",
    "OPERATORS",
    "Coverage",
    "Matcher",
    "Window",
    "coverage",
    "covers",
    "job_labels",
    "parse_duration",
    "parse_matcher",
]

#: longest first, so ``=~`` is not read as ``=`` followed by ``~...``
OPERATORS = ("=~", "!~", "!=", "=")
MATCHABLE_RESERVED = frozenset({"job_name", "host"})
MAX_REGEX = 1000
#: bound on chaining back-to-back windows when computing when maintenance ends
_MAX_CHAIN = 64
_NAME_RE = re.compile(LABEL_PATTERN)


def parse_duration(text: str) -> int:
    """``600``, ``10m``, ``1h30m``, ``2d`` -> whole seconds; ``ValueError`` otherwise."""
    from cronmetrics.client.cli import parse_duration as parse
    from cronmetrics.client.failures import UsageError

    try:
        return parse(text, what="")
    except UsageError as exc:
        raise ValueError(exc.message.strip()) from None


#: RE2, the engine behind Alertmanager's own matchers: the same syntax (no backreferences,
#: no lookaround) and matching in linear time, so a window such as ``x=~"(a+)+"`` made by a
#: ``maintenance`` token cannot stall /metrics; errors come back as values, not log lines
_RE2 = re2.Options()
_RE2.log_errors = False


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re2._Regexp[str]:
    return re2.compile(pattern, _RE2)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One ``name op value`` condition on a job's labels."""

    name: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _compiled(self.value).fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{_quote(self.value)}"'

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _unquote(value: str, field: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        body, out, i = value[1:-1], [], 0
        while i < len(body):
            char = body[i]
            if char == "\\" and i + 1 < len(body):
                out.append(body[i + 1])
                i += 2
                continue
            if char == '"':
                _bad(f"unescaped '\"' inside the quoted value {value!r}", field)
            out.append(char)
            i += 1
        return "".join(out)
    if value.startswith('"'):
        _bad(f"unterminated quote in {value!r}", field)
    return value


def _bad(message: str, field: str) -> Any:
    raise ValidationError([Problem(message, field=field)])


def make_matcher(name: str, op: str, value: str, *, field: str = "matchers") -> Matcher:
    """A checked matcher: a matchable name, a known operator, a valid regex."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        _bad(f"matcher name {name!r} is not a label name (letters, digits, '_')", field)
    if name in EXPORTER_LABELS and name not in MATCHABLE_RESERVED:
        _bad(f"{name!r} cannot be matched: match labels, job_name or host", field)
    if op not in OPERATORS:
        _bad(f"unknown matcher operator {op!r} (use =, !=, =~ or !~)", field)
    if not isinstance(value, str):
        _bad("matcher value must be a string", field)
    if op in ("=~", "!~"):
        if len(value) > MAX_REGEX:
            _bad(f"regular expression is longer than {MAX_REGEX} characters", field)
        try:
            _compiled(value)
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args else "invalid"
            _bad(f"invalid regular expression {value!r}: {reason}", field)
    return Matcher(name, op, value)


def parse_matcher(text: str, *, field: str = "matchers") -> Matcher:
    """``host=db1``, ``env!=prod``, ``job_name=~"backup_.*"``, ``team!~ops|sre``."""
    raw = text.strip()
    match = re.match(r"^([^=!~\s]*)\s*(=~|!~|!=|=)\s*(.*)$", raw, re.S)
    if match is None:
        return _bad(  # type: ignore[no-any-return]
            f"matcher {text!r} must look like name=value, name!=value, name=~regex or name!~regex",
            field,
        )
    name, op, value = match.groups()
    if not name:
        _bad(f"matcher {text!r} has no label name before {op!r}", field)
    return make_matcher(name, op, _unquote(value.strip(), field), field=field)


def job_labels(definition: JobDefinition) -> dict[str, str]:
    """What matchers see of a job: its labels plus ``job_name`` and ``host``."""
    return {**definition.labels, "job_name": definition.job_name, "host": definition.host or ""}


@dataclass(frozen=True, slots=True)
class Window:
    """A runtime maintenance window (``[start, end)``, epoch seconds)."""

    id: str
    matchers: tuple[Matcher, ...]
    start: float
    end: float
    comment: str = ""
    created_by: str = ""
    created_at: float = 0.0
    #: who ended it before its planned end (``None``: it ran or runs its course)
    ended_by: str | None = None

    def state(self, now: float) -> str:
        """``pending`` before its start, ``active`` inside, ``expired`` from its end on."""
        if now >= self.end:
            return "expired"
        return "active" if now >= self.start else "pending"

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def to_record(self) -> dict[str, Any]:
        """The JSON document kept in the store."""
        return {
            "id": self.id,
            "matchers": [m.to_dict() for m in self.matchers],
            "start": self.start,
            "end": self.end,
            "comment": self.comment,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "ended_by": self.ended_by,
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Window:
        """Rebuild a window from :meth:`to_record` (raises on a damaged record)."""
        return cls(
            id=str(data["id"]),
            matchers=tuple(make_matcher(m["name"], m["op"], m["value"]) for m in data["matchers"]),
            start=float(data["start"]),
            end=float(data["end"]),
            comment=str(data.get("comment") or ""),
            created_by=str(data.get("created_by") or ""),
            created_at=float(data.get("created_at") or 0.0),
            ended_by=data.get("ended_by"),
        )


def covers(window: Window, job: JobDefinition, now: float) -> bool:
    """Whether ``window`` silences ``job`` at ``now``."""
    return window.start <= now < window.end and window.selects(job_labels(job))


@dataclass(frozen=True, slots=True)
class Coverage:
    """What the windows of one job mean at one instant (for the evaluator)."""

    #: when the maintenance in force ends (back-to-back windows chained); None: not covered
    until: float | None = None
    #: ids of the runtime windows in force
    windows: tuple[str, ...] = ()
    #: a recurring window of the job file is in force
    recurring: bool = False
    #: the latest end at or before ``now`` of a window that covered the job (deadlines
    #: count afresh from there)
    last_end: float | None = None
    #: the earliest start after ``now`` (when the job goes into maintenance by itself)
    next_start: float | None = None

    @property
    def active(self) -> bool:
        return self.until is not None


NO_COVERAGE = Coverage()


#: (cron expression, zone) -> (p, n): consecutive fires, so for any t in [p, n) the last
#: fire at or before t is p and the first one after it is n
_FIRES: dict[tuple[str, str], tuple[float, float]] = {}


class _Recurring:
    """One recurring window's fires around an instant, remembered per schedule and zone:
    every evaluation of a job with a recurring window asks for the fires around "now", and
    iterating cron each time made a batch of submissions ten times slower."""

    __slots__ = ("duration", "key", "schedule", "tz")

    def __init__(self, window: RecurringWindow, zone: str) -> None:
        self.schedule = cron.parse(window.schedule)
        name = window.timezone or zone
        self.tz = cron.parse_timezone(name)
        self.key = (self.schedule.normalized, name)
        self.duration = window.duration

    def around(self, at: float) -> tuple[float, float]:
        """The last fire at or before ``at`` and the first one after it."""
        known = _FIRES.get(self.key)
        if known is not None and known[0] <= at < known[1]:
            return known
        fires = (
            cron.previous_fire(self.schedule, self.tz, at),
            cron.next_fire(self.schedule, self.tz, at),
        )
        if len(_FIRES) >= 10_000:
            _FIRES.clear()
        _FIRES[self.key] = fires
        return fires


@functools.lru_cache(maxsize=4096)
def _spans(recurring: tuple[RecurringWindow, ...], zone: str) -> tuple[_Recurring, ...]:
    return tuple(_Recurring(r, zone) for r in recurring)


def coverage(
    recurring: Sequence[RecurringWindow],
    zone: str,
    windows: Iterable[Window],
    now: float,
) -> Coverage:
    """Fold a job's recurring windows (in ``zone`` unless they name one) and the runtime
    windows that select it into a :class:`Coverage` at ``now``.

    A recurring window is each fire time of its cron schedule plus ``duration`` seconds of
    elapsed time (so a window across a DST change lasts what it says). The end of the
    maintenance in force follows windows that touch or overlap, so two back-to-back
    windows are one stretch of maintenance, not a blip of "active" between them.
    """
    runtime = [w for w in windows if w.start < w.end]
    if not runtime and not recurring:
        return NO_COVERAGE
    spans = _spans(tuple(recurring), zone)
    in_force = tuple(w.id for w in runtime if w.start <= now < w.end)
    recurring_now = False
    point, until = now, None
    for _ in range(_MAX_CHAIN):
        best = point
        for w in runtime:
            if w.start <= point < w.end:
                best = max(best, w.end)
        for span in spans:
            fired = span.around(point)[0]
            if fired + span.duration > point:
                best = max(best, fired + span.duration)
                recurring_now = recurring_now or point == now
        if best == point:
            break
        until = point = best
    last_end = None
    if until is None:
        ends = [w.end for w in runtime if w.end <= now]
        ends.extend(span.around(now)[0] + span.duration for span in spans)
        last_end = max(ends) if ends else None
    starts = [w.start for w in runtime if w.start > now]
    starts.extend(span.around(now)[1] for span in spans)
    next_start = min(starts) if starts else None
    return Coverage(until, in_force, recurring_now, last_end, next_start)
