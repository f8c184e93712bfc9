"""Job status as a pure function of (definition, state, now).

No clock, no I/O: every rule is testable by passing ``now``. The result also says when
it can next change on its own (a deadline, a timeout, the end of a maintenance window),
which is what the scheduler waits for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cronmetrics import windows as mw
from cronmetrics.jobs import schedule as cron
from cronmetrics.jobs.model import JobDefinition, Lifecycle
from cronmetrics.storage.interface import JobState

__all__ = ["Evaluation", "deadline", "evaluate"]

OK, RUNNING, PENDING = "ok", "running", "pending"
FAILED, TIMEOUT, MISSED, NEVER = "failed", "timeout", "missed deadline", "never reported"
REASONS = (OK, RUNNING, PENDING, FAILED, TIMEOUT, MISSED, NEVER, "maintenance", "paused")


@dataclass(frozen=True, slots=True)
class Evaluation:
    lifecycle: str  # active | maintenance | paused | retired
    value: int  # 1 ok, 0 failing, -1 not monitored right now
    reason: str
    deadline: float | None = None
    next_change: float | None = None
    #: when the maintenance in force ends by itself (None: not in maintenance, or no end)
    maintenance_end: float | None = None
    #: ids of the runtime maintenance windows silencing the job
    windows: tuple[str, ...] = ()

    @property
    def exported(self) -> bool:
        return self.lifecycle != Lifecycle.RETIRED

    @property
    def failing(self) -> bool:
        return self.value == 0


def effective_lifecycle(definition: JobDefinition, now: float) -> tuple[Lifecycle, float | None]:
    """The lifecycle in force at ``now`` and when maintenance ends (if it does by itself)."""
    until = definition.maintenance_until.timestamp() if definition.maintenance_until else None
    if definition.status == Lifecycle.MAINTENANCE and until is not None and now >= until:
        return Lifecycle.ACTIVE, until
    return definition.status, until


def deadline(definition: JobDefinition, anchor: float) -> float | None:
    """When a job last heard from at ``anchor`` is overdue (threshold and/or cron + grace)."""
    candidates = []
    if definition.automatic_failure_threshold is not None:
        candidates.append(anchor + definition.automatic_failure_threshold)
    schedule = definition.cron
    if schedule is not None:
        fire = _next_fire(schedule, definition.timezone, anchor)
        candidates.append(fire + definition.grace)
    return min(candidates) if candidates else None


#: (cron expression, zone) -> (a, f): ``f`` is the first fire strictly after ``a``
_FIRES: dict[tuple[str, str], tuple[float, float]] = {}


def _next_fire(schedule: cron.CronSchedule, zone: str, anchor: float) -> float:
    """:func:`cron.next_fire`, remembering the last answer per schedule and zone.

    If ``f`` is the first fire strictly after ``a``, nothing fires in ``(a, f)``, so ``f``
    is also the first fire after any anchor in ``[a, f)``. Results arrive with anchors near
    "now", so a batch of 1000 results for jobs sharing a few schedules iterates cron once
    per schedule instead of once per result (cron iteration dominated the submit path).
    """
    key = (schedule.normalized, zone)
    known = _FIRES.get(key)
    if known is not None and known[0] <= anchor < known[1]:
        return known[1]
    fire = cron.next_fire(schedule, cron.parse_timezone(zone), anchor)
    if len(_FIRES) >= 100_000:
        _FIRES.clear()
    _FIRES[key] = (anchor, fire)
    return fire


def evaluate(
    definition: JobDefinition,
    state: JobState,
    now: float,
    windows: Sequence[mw.Window] = (),
) -> Evaluation:
    """The job's status at ``now``; ``windows`` are the runtime maintenance windows whose
    matchers select this job (pending, active or recently expired: all of them count)."""
    lifecycle, until = effective_lifecycle(definition, now)
    if lifecycle == Lifecycle.RETIRED:
        return Evaluation(lifecycle, -1, "retired")
    if lifecycle == Lifecycle.PAUSED:
        return Evaluation(lifecycle, -1, str(lifecycle))
    cover = mw.NO_COVERAGE
    if windows or definition.maintenance_windows:
        cover = mw.coverage(definition.maintenance_windows, definition.timezone, windows, now)
    if lifecycle == Lifecycle.MAINTENANCE:  # the job file says so
        ends = until
        if ends is not None and cover.until is not None:
            ends = max(ends, cover.until)
        return Evaluation(lifecycle, -1, str(lifecycle), None, until, ends, cover.windows)
    if cover.until is not None:
        return Evaluation(
            Lifecycle.MAINTENANCE,
            -1,
            str(Lifecycle.MAINTENANCE),
            None,
            cover.until,
            cover.until,
            cover.windows,
        )

    # Silence only counts from when the job was last (re)activated.
    floor = max(state.first_seen, state.active_since)
    if until is not None and definition.status == Lifecycle.MAINTENANCE:
        floor = max(floor, until)
    if cover.last_end is not None:
        floor = max(floor, cover.last_end)
    anchor = floor if state.last_report is None else max(state.last_report, floor)
    due = deadline(definition, anchor)

    timeout_at = None
    if state.running and state.run_started is not None and definition.max_runtime:
        timeout_at = state.run_started + definition.max_runtime
        if now >= timeout_at:
            return Evaluation(lifecycle, 0, TIMEOUT, due, cover.next_start)
    if state.last_status == "failure" and not state.running:
        return Evaluation(lifecycle, 0, FAILED, due, cover.next_start)
    if due is not None and now >= due:
        reason = NEVER if state.last_report is None else MISSED
        return Evaluation(lifecycle, 0, reason, due, _earliest(timeout_at, cover.next_start))
    if state.running:
        reason = RUNNING
    elif state.last_report is None:
        reason = PENDING
    else:
        reason = OK
    return Evaluation(lifecycle, 1, reason, due, _earliest(due, timeout_at, cover.next_start))


def _earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None
