"""How the dashboard says things: times, durations, expectations, a job's state in words,
and the duration chart (an inline SVG drawn on the server). Pure: ``now`` is an argument.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from cronmetrics.jobs.model import JobDefinition
from cronmetrics.monitor import JobView
from cronmetrics.storage.history import Result

__all__ = [
    "RunMark",
    "absolute",
    "clock_time",
    "duration_chart",
    "duration_words",
    "expectation",
    "failures",
    "relative",
    "run_marks",
    "sentence",
]

_UNITS = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))


def duration_words(seconds: float | None) -> str:
    """``27 s``, ``4 min 3 s``, ``2 h``, ``1 d 6 h``: the two largest units that matter."""
    if seconds is None:
        return "—"
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f} s"
    rest = round(seconds)
    if rest == 0:
        return "0 s"
    parts = []
    for unit, size in _UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {unit}")
        if len(parts) == 2 or (parts and count == 0):
            break
    return " ".join(parts)


def absolute(ts: float) -> str:
    """``2026-01-05 03:15:00 UTC``: what a hover over a relative time shows."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock_time(ts: float, now: float) -> str:
    """``03:15 UTC`` today, else with the date in front."""
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    if moment.date() == dt.datetime.fromtimestamp(now, dt.UTC).date():
        return moment.strftime("%H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def relative(ts: float, now: float) -> str:
    """``5 min ago``, ``in 2 h``, ``just now``."""
    delta = ts - now
    if abs(delta) < 5:
        return "just now"
    words = duration_words(abs(delta)).split(" ")
    short = " ".join(words[:2])  # one unit is enough at a glance
    return f"in {short}" if delta > 0 else f"{short} ago"


def expectation(d: JobDefinition) -> str:
    """When a job is expected, in words: ``30 2 * * * Europe/Berlin + 15 min`` and/or
    ``every 2 h`` (silence longer than the threshold fails it)."""
    parts = []
    if d.schedule:
        parts.append(f"{d.schedule} {d.timezone} + {duration_words(d.grace)}")
    if d.automatic_failure_threshold is not None:
        parts.append(f"every {duration_words(d.automatic_failure_threshold)}")
    return " or ".join(parts) if parts else "whenever it reports"


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "an unknown time"
    return f"{clock_time(ts, now)} ({relative(ts, now)})"


def sentence(view: JobView, now: float) -> str:
    """The job's state as one sentence: what happened, when, and what comes next."""
    d, s, e = view.definition, view.state, view.evaluation
    reason = e.reason
    if reason == "retired":
        return "Retired: kept for its history, not exported to Prometheus."
    if reason == "paused":
        return "Paused: not monitored and never alerting until someone resumes it."
    if reason == "maintenance":
        why = " (a maintenance window)" if e.windows and d.status != "maintenance" else ""
        until = e.maintenance_end
        if until is not None:
            return f"In maintenance{why} until {_when(until, now)}: not alerting."
        return "In maintenance with no end set: not alerting until someone ends it."
    if reason == "timeout":
        limit = duration_words(d.max_runtime)
        return (
            f"Timed out: the run started at {_when(s.run_started, now)} "
            f"has not finished within its max runtime of {limit}."
        )
    if reason == "failed":
        code = f" with exit code {s.last_exit_code}" if s.last_exit_code is not None else ""
        streak = s.consecutive_failures
        tail = f"; {streak} failures in a row" if streak > 1 else ""
        return f"Failed at {_when(s.last_run, now)}{code}{tail}."
    if reason == "missed deadline":
        return (
            f"Missed its deadline at {_when(e.deadline, now)}; "
            f"last heard from {_when(s.last_report, now)}."
        )
    if reason == "never reported":
        return f"Never reported: its first deadline passed at {_when(e.deadline, now)}."
    if reason == "running":
        text = f"Running since {_when(s.run_started, now)}"
        if d.max_runtime and s.run_started is not None:
            text += f"; it times out at {clock_time(s.run_started + d.max_runtime, now)}"
        return text + "."
    nxt = f"; the next deadline is {_when(e.deadline, now)}" if e.deadline else ""
    if reason == "pending":
        return f"Waiting for its first report{nxt}."
    return f"OK: last succeeded at {_when(s.last_success or s.last_run, now)}{nxt}."


@dataclass(frozen=True, slots=True)
class RunMark:
    """One run in a job's strip of recent runs."""

    status: str  # success | failure | start (still running or never finished)
    timestamp: float
    duration: float | None
    exit_code: int | None

    @property
    def label(self) -> str:
        word = {"success": "succeeded", "failure": "failed", "start": "started"}[self.status]
        extra = f", {duration_words(self.duration)}" if self.duration is not None else ""
        code = f", exit {self.exit_code}" if self.exit_code is not None else ""
        return f"{word} {absolute(self.timestamp)}{extra}{code}"


def failures(marks: Sequence[RunMark]) -> int:
    return sum(1 for m in marks if m.status == "failure")


def run_marks(history: Sequence[Result], count: int = 20) -> list[RunMark]:
    """The last ``count`` runs, oldest first; a start only counts while it is the newest."""
    marks: list[RunMark] = []
    for index, r in enumerate(reversed(history)):
        if r.status == "start" and index > 0:
            continue
        marks.append(RunMark(r.status, r.timestamp, r.duration, r.exit_code))
        if len(marks) == count:
            break
    marks.sort(key=lambda m: m.timestamp)
    return marks


#: round durations (seconds) for the top of the chart's axis; its middle is half of one
_AXIS_TOPS = (
    1,
    2,
    5,
    10,
    20,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    3600,
    7200,
    14400,
    21600,
    43200,
    86400,
    172800,
    604800,
)


def _axis_top(value: float) -> float:
    for top in _AXIS_TOPS:
        if value <= top:
            return float(top)
    return float(value)


def duration_chart(history: Sequence[Result], count: int = 60) -> Markup:
    """Bars of the last ``count`` run durations (oldest left), as accessible inline SVG.

    Failed runs are drawn full of a hatch and marked with a cross on top, so they do
    not depend on colour; every bar has a ``<title>`` tooltip.
    """
    runs = [r for r in history if r.status != "start" and r.duration is not None][-count:]
    if not runs:
        return Markup('<p class="muted">No run with a duration yet.</p>')
    width, height, left, top, bottom = 720, 170, 64, 12, 22
    plot_w, plot_h = width - left - 8, height - top - bottom
    longest = max(r.duration or 0.0 for r in runs)
    peak = _axis_top(longest)
    slot = plot_w / max(len(runs), 20)
    bar = max(2.0, slot * 0.7)
    failed = sum(1 for r in runs if r.status == "failure")
    summary = (
        f"Durations of the last {len(runs)} runs, up to {duration_words(longest)}; {failed} failed"
    )
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(summary)}">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="3" height="6" class="hatch"/></pattern></defs>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - fraction)
        out.append(
            f'<line class="grid" x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(duration_words(peak * fraction))}</text>"
        )
    for index, r in enumerate(runs):
        value = r.duration or 0.0
        h = max(1.5, plot_h * value / peak)
        x = left + index * slot + (slot - bar) / 2
        y = top + plot_h - h
        kind = "fail" if r.status == "failure" else "ok"
        mark = RunMark(r.status, r.timestamp, r.duration, r.exit_code)
        out.append(
            f'<g class="bar {kind}"><title>{escape(mark.label)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}"/>'
        )
        if kind == "fail":
            cx = x + bar / 2
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="url(#hatch)"/><text class="cross" x="{cx:.1f}" y="{max(y - 2, 9):.1f}" '
                f'text-anchor="middle">✕</text>'
            )
        out.append("</g>")
    first, last = runs[0].timestamp, runs[-1].timestamp
    out.append(
        f'<text class="axis" x="{left}" y="{height - 6}">{escape(absolute(first)[:16])}</text>'
        f'<text class="axis" x="{width - 8}" y="{height - 6}" text-anchor="end">'
        f"{escape(absolute(last)[:16])}</text></svg>"
    )
    return Markup("".join(out))  # noqa: S704 - every value in it went through escape()
