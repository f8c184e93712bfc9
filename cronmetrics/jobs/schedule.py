"""Cron math: standard 5-field expressions with Debian cron's semantics.

We use cronsim because it was written to match Debian cron: Sunday is 0 or 7,
day-of-month and day-of-week are OR-ed when both are restricted, and DST transitions are
handled the way Debian's cron does (a job in a skipped hour runs right after the jump, a
job in a repeated hour runs once). APScheduler 3.x's CronTrigger numbers weekdays from
Monday and ANDs the day fields, so it is not used for user schedules.

cronsim also accepts extensions (a seconds field, ``L``, ``#``) that cron does not; a job
file must mean the same thing everywhere, so :func:`parse` rejects them.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo

from cronsim import CronSim, CronSimError

__all__ = ["ALIASES", "CronSchedule", "next_fire", "parse", "parse_timezone", "previous_fire"]

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_NAMES = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|SUN|MON|TUE|WED|THU|FRI|SAT"
_ATOM = rf"(?:\d+|{_NAMES})"
_FIELD_RE = re.compile(rf"^(?:\*|{_ATOM}(?:-{_ATOM})?)(?:/\d+)?$", re.IGNORECASE)


class CronSchedule:
    """A validated cron expression (aliases expanded)."""

    __slots__ = ("expr", "normalized")

    def __init__(self, expr: str, normalized: str) -> None:
        self.expr = expr
        self.normalized = normalized

    def __repr__(self) -> str:
        return f"CronSchedule({self.expr!r})"


@functools.lru_cache(maxsize=4096)
def parse(expr: str) -> CronSchedule:
    """Validate ``expr``; raise ``ValueError`` naming the bad field."""
    text = expr.strip()
    normalized = ALIASES.get(text.lower(), text)
    if text.startswith("@") and normalized == text:
        known = ", ".join(sorted(ALIASES))
        raise ValueError(f"unknown cron alias {text!r} (known: {known})")
    fields = normalized.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron expression must have 5 fields (minute hour day-of-month month "
            f"day-of-week), got {len(fields)}"
        )
    for name, value in zip(_FIELD_NAMES, fields, strict=True):
        if not all(_FIELD_RE.match(part) for part in value.split(",")):
            raise ValueError(f"invalid {name} field {value!r}")
    try:
        CronSim(normalized, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    except CronSimError as exc:
        field = str(exc).removeprefix("Bad ")
        raise ValueError(f"invalid {field} field in {expr!r}") from None
    return CronSchedule(expr, normalized)


@functools.lru_cache(maxsize=1024)
def parse_timezone(name: str) -> zoneinfo.ZoneInfo:
    """Resolve an IANA zone name; raise ``ValueError`` when unknown."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"unknown timezone {name!r}")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {name!r} (use an IANA name like Europe/Berlin)"
        ) from None


def next_fire(schedule: CronSchedule, tz: dt.tzinfo, after: float) -> float:
    """The first fire time strictly after the epoch second ``after``."""
    start = dt.datetime.fromtimestamp(after, tz)
    for fire in CronSim(schedule.normalized, start):
        # cronsim ignores ``fold``: from the second pass of an autumn doubled hour it yields
        # the first pass of a time already gone (a deadline in the past); skip it.
        when: float = fire.timestamp()
        if when > after:
            return when
    raise AssertionError("cron schedules never run out")  # pragma: no cover


def previous_fire(schedule: CronSchedule, tz: dt.tzinfo, at: float) -> float:
    """The last fire time at or before the epoch second ``at``."""
    start = dt.datetime.fromtimestamp(at + 1, tz)
    return next(CronSim(schedule.normalized, start, reverse=True)).timestamp()
