"""Per-job statistics from the retained history: what a user asks after an alert.

:func:`job_stats` is pure (``now`` is an argument) so the numbers are tested with a fake
clock; ``GET /api/job/<id>/stats`` and ``cronmetrics job stats ID`` show its result as is.
The JSON shape is a stable contract (new keys may be added, none removed or renamed)::

    {
      "job_id": "backup@db1",
      "now": "2025-10-30T20:00:00.000Z",
      "history": {"results": 100, "runs": 95, "oldest": RFC3339|null, "newest": RFC3339|null},
      "windows": {
        "24h": {"runs": 24, "successes": 23, "failures": 1, "success_rate": 0.9583|null},
        "7d":  {"runs": 168, "successes": 160, "failures": 8, "success_rate": 0.9524|null}
      },
      "totals": {"runs": 1234, "failures": 12},
      "duration": {"samples": 95, "avg": 27.1|null, "p95": 60.0|null, "max": 75.0|null},
      "interval": {"samples": 94, "avg": 3600.2|null},
      "last_failure": {"timestamp": RFC3339, "exit_code": 1|null, "message": "...|null"}|null
    }

- A *run* is a finished result (``success`` or ``failure``); ``start`` results only help
  to compute the duration of a run that did not report one.
- ``windows`` count runs whose own timestamp lies within the last 24 hours / 7 days;
  ``success_rate`` is successes / runs (``null`` without runs). Windows longer than the
  retained history (``retention``) only see what is retained.
- ``totals`` are the lifetime counters (``cronjob_runs_total`` / ``cronjob_failures_total``).
- ``duration`` (seconds) covers the retained runs: the reported ``duration``, else the time
  since the matching ``start`` (same ``run_id``, or the latest start without one). ``p95``
  uses the nearest-rank method.
- ``interval`` is the mean time between consecutive retained runs, in seconds.
- ``last_failure.message`` is the tail (last 1000 characters) of that run's output; if the
  failure has already left the history only its time is known.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from cronmetrics.logs import rfc3339
from cronmetrics.storage.interface import JobState, Result

__all__ = ["MESSAGE_TAIL", "WINDOWS", "job_stats", "percentile"]

WINDOWS = {"24h": 86_400.0, "7d": 7 * 86_400.0}
MESSAGE_TAIL = 1000


def _ts(value: float | None) -> str | None:
    return None if value is None else rfc3339(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _durations(ordered: Iterable[Result]) -> list[float]:
    """Durations of finished runs: reported, or measured from their ``start``."""
    starts: dict[str | None, float] = {}
    out: list[float] = []
    for r in ordered:
        if r.status == "start":
            starts[r.run_id] = r.timestamp
            continue
        if r.duration is not None:
            out.append(r.duration)
        else:
            began = starts.get(r.run_id)
            if began is not None and r.timestamp >= began:
                out.append(r.timestamp - began)
        starts.pop(r.run_id, None)
    return out


def job_stats(
    job_id: str, history: Sequence[Result], now: float, state: JobState | None = None
) -> dict[str, Any]:
    """Statistics for one job at ``now`` (see the module docstring for the shape)."""
    ordered = sorted(history, key=lambda r: r.timestamp)
    runs = [r for r in ordered if r.status != "start"]
    windows: dict[str, dict[str, Any]] = {}
    for name, span in WINDOWS.items():
        inside = [r for r in runs if r.timestamp > now - span]
        successes = sum(1 for r in inside if r.status == "success")
        windows[name] = {
            "runs": len(inside),
            "successes": successes,
            "failures": len(inside) - successes,
            "success_rate": round(successes / len(inside), 4) if inside else None,
        }
    durations = _durations(ordered)
    intervals = len(runs) - 1
    avg_interval = (runs[-1].timestamp - runs[0].timestamp) / intervals if intervals > 0 else None
    failures = [r for r in runs if r.status == "failure"]
    last_failure: dict[str, Any] | None = None
    if failures:
        last = failures[-1]
        message = last.output[-MESSAGE_TAIL:] if last.output else None
        last_failure = {
            "timestamp": rfc3339(last.timestamp),
            "exit_code": last.exit_code,
            "message": message,
        }
    elif state is not None and state.last_failure is not None:
        last_failure = {
            "timestamp": rfc3339(state.last_failure),
            "exit_code": None,
            "message": None,
        }
    return {
        "job_id": job_id,
        "now": rfc3339(now),
        "history": {
            "results": len(ordered),
            "runs": len(runs),
            "oldest": _ts(ordered[0].timestamp) if ordered else None,
            "newest": _ts(ordered[-1].timestamp) if ordered else None,
        },
        "windows": windows,
        "totals": {
            "runs": state.runs_total if state is not None else len(runs),
            "failures": state.failures_total if state is not None else len(failures),
        },
        "duration": {
            "samples": len(durations),
            "avg": _round(sum(durations) / len(durations)) if durations else None,
            "p95": _round(percentile(durations, 95)),
            "max": _round(max(durations)) if durations else None,
        },
        "interval": {"samples": max(0, intervals), "avg": _round(avg_interval)},
        "last_failure": last_failure,
    }
