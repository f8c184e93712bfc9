"""How a result changes a job's state: one pure function every engine shares.

The embedded engine applies it in memory (:func:`plan_results`, which also tells a
client's retry from a new run); the Redis engine applies it on the replica that received
the result and writes the outcome with a compare-and-set on the state's ``version``, so
both engines count and pair runs exactly alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from cronmetrics.storage.history import STATUS_CODES, History, Result
from cronmetrics.storage.interface import JobState, Recorded, new_state

__all__ = [
    "advance",
    "apply_result",
    "attached",
    "ends_run",
    "is_duplicate",
    "plan_results",
    "running_finishes",
]


def running_finishes(results: Sequence[Result]) -> list[Result]:
    """The finishes among ``results`` that may end a run already running: one that comes
    after a start of its job in the same batch ends that start's run, which has logged
    nothing yet, so the output of the run before must not go with it."""
    started: set[str] = set()
    finishes = []
    for result in results:
        if result.status == "start":
            started.add(result.job_id)
        elif result.job_id not in started:
            finishes.append(result)
    return finishes


def apply_result(state: JobState, result: Result) -> tuple[JobState, bool]:
    """The state after ``result`` and whether the job's current state changed.

    A result older than the newest one already seen goes to history (and the counters,
    it is still a run that happened) but never rolls the state back. The new state's
    ``version`` is one more: the history changed in any case.
    """
    changes: dict[str, object] = {"version": state.version + 1}
    finished = result.status != "start"
    if finished:
        changes["runs_total"] = state.runs_total + 1
        if result.status == "failure":
            changes["failures_total"] = state.failures_total + 1
    if state.last_report is not None and result.timestamp < state.last_report:
        return dataclasses.replace(state, **changes), finished  # type: ignore[arg-type]
    changes["last_report"] = result.timestamp
    if not finished:
        changes.update(running=True, run_started=result.timestamp, run_id=result.run_id)
        return dataclasses.replace(state, **changes), True  # type: ignore[arg-type]
    duration = result.duration
    # A finish ends the current run unless both carry run ids and they differ.
    same_run = result.run_id is None or state.run_id is None or result.run_id == state.run_id
    if state.running and same_run:
        if duration is None and state.run_started is not None:
            duration = max(0.0, result.timestamp - state.run_started)
        changes.update(running=False, run_started=None, run_id=None)
    changes.update(
        last_run=result.timestamp,
        last_status=result.status,
        last_duration=duration,
        last_exit_code=result.exit_code,
    )
    if result.status == "success":
        changes.update(last_success=result.timestamp, consecutive_failures=0)
    else:
        changes.update(
            last_failure=result.timestamp, consecutive_failures=state.consecutive_failures + 1
        )
    return dataclasses.replace(state, **changes), True  # type: ignore[arg-type]


def attached(state: JobState) -> JobState:
    """A detached job that reports is attached again (its definition may follow)."""
    return dataclasses.replace(state, detached_since=None)


def advance(state: JobState, result: Result) -> JobState:
    """The state after a recorded (not duplicate) ``result``: what recording it did, so
    that applying stored results to an older state row gives the state back."""
    if state.detached_since is not None:
        state = attached(state)
    return apply_result(state, result)[0]


def ends_run(state: JobState, result: Result) -> bool:
    """Whether ``result`` finishes the run ``state`` has running, as :func:`apply_result`
    pairs them (the run's logged output then goes with it)."""
    if result.status == "start" or not state.running:
        return False
    if state.last_report is not None and result.timestamp < state.last_report:
        return False
    return result.run_id is None or state.run_id is None or result.run_id == state.run_id


def is_duplicate(history: History, result: Result) -> bool:
    """The same ``(run_id, status)`` is already retained (a client's retry)."""
    if result.run_id is None:
        return False
    code, statuses = STATUS_CODES[result.status], history.status
    return any(statuses[i] == code for i in history.run_id.indices(result.run_id))


def plan_results(
    results: Sequence[Result],
    now: float,
    current: Mapping[str, JobState],
    histories: Mapping[str, History],
    states: dict[str, JobState],
    appended: dict[str, list[Result]],
) -> list[Recorded]:
    """What recording ``results`` does on top of the ``current`` states and
    ``histories`` and of the plan so far (``states`` and ``appended``, updated in place,
    so that a group of batches plans as one); each result's outcome. Nothing else
    changes: the caller makes the plan real once it is written (or at once)."""
    outcome: list[Recorded] = []
    for result in results:
        job_id = result.job_id
        state = states.get(job_id) or current.get(job_id)
        if state is None:
            state = new_state(job_id, now)
        elif state.detached_since is not None:
            state = attached(state)
        history = histories.get(job_id)
        pending = appended.get(job_id, ())
        if result.run_id is not None and (
            (history is not None and is_duplicate(history, result))
            or any(p.run_id == result.run_id and p.status == result.status for p in pending)
        ):
            outcome.append(Recorded(result, state, changed=False, duplicate=True))
            states.setdefault(job_id, state)
            continue
        state, changed = apply_result(state, result)  # what `advance` does on load
        states[job_id] = state
        appended.setdefault(job_id, []).append(result)
        outcome.append(Recorded(result, state, changed))
    # a duplicate's state is the job's state after the whole call
    return [
        dataclasses.replace(r, state=states[r.result.job_id]) if r.duplicate else r for r in outcome
    ]
