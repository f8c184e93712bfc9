"""Result storage: each job's running state and its recent history.

:class:`ResultStore` is the small interface the rest of the code depends on (record,
read state and history, purge, restore from a snapshot) so a shared backend such as Redis can sit
beside :class:`MemoryStore` for replicated deployments (DESIGN.md section 12).
Stores are not thread-safe on their own; :class:`cronmetrics.monitor.Monitor` serializes
access.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from cronmetrics.storage.history import History, Result

__all__ = ["History", "JobState", "MemoryStore", "Result", "ResultStore"]


@dataclass(slots=True)
class JobState:
    """What the server knows about one job; everything the evaluator needs besides time."""

    first_seen: float
    #: when the job last became active (resume, end of maintenance): deadlines count from here
    active_since: float
    last_report: float | None = None
    last_run: float | None = None
    last_success: float | None = None
    last_failure: float | None = None
    last_status: str | None = None
    last_duration: float | None = None
    last_exit_code: int | None = None
    running: bool = False
    run_started: float | None = None
    run_id: str | None = None
    consecutive_failures: int = 0
    runs_total: int = 0
    failures_total: int = 0
    history: History = field(default_factory=History)

    def copy(self) -> JobState:
        """An independent copy; cheap, the history is copied on write."""
        clone = copy.copy(self)
        clone.history = self.history.copy()
        return clone

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "history"}
        data["history"] = [r.to_dict() for r in self.history]
        return data


def apply_result(state: JobState, result: Result) -> bool:
    """Fold ``result`` into ``state``; return whether the job's current state changed.

    A result older than the newest one already seen goes to history (and the counters, it
    is still a run that happened) but never rolls the state back.
    """
    state.history.append(result)
    finished = result.status != "start"
    if finished:
        state.runs_total += 1
        if result.status == "failure":
            state.failures_total += 1
    if state.last_report is not None and result.timestamp < state.last_report:
        return finished
    state.last_report = result.timestamp
    if not finished:
        state.running = True
        state.run_started = result.timestamp
        state.run_id = result.run_id
        return True
    duration = result.duration
    # A finish ends the current run unless both carry run ids and they differ.
    same_run = result.run_id is None or state.run_id is None or result.run_id == state.run_id
    if state.running and same_run:
        if duration is None and state.run_started is not None:
            duration = max(0.0, result.timestamp - state.run_started)
        state.running = False
        state.run_started = None
        state.run_id = None
    state.last_run = result.timestamp
    state.last_status = result.status
    state.last_duration = duration
    state.last_exit_code = result.exit_code
    if result.status == "success":
        state.last_success = result.timestamp
        state.consecutive_failures = 0
    else:
        state.last_failure = result.timestamp
        state.consecutive_failures += 1
    return True


class ResultStore(Protocol):
    """What the monitor needs from a result backend."""

    def ensure(self, job_id: str, now: float) -> JobState: ...

    def get(self, job_id: str) -> JobState | None: ...

    def drop(self, job_id: str) -> None: ...

    def record(self, result: Result) -> bool: ...

    def history(self, job_id: str) -> list[Result]: ...

    def ids(self) -> Iterable[str]: ...

    def purge(self, before: float, job_id: str | None = None) -> int: ...

    def restore(self, job_id: str, values: dict[str, Any], history: History, now: float) -> bool:
        """Put back a job as a snapshot kept it; True unless the history had to be cut."""


class MemoryStore:
    """Everything in process memory; persisted by :mod:`cronmetrics.storage.snapshot`."""

    def __init__(self, max_results_per_job: int = 100) -> None:
        self.max_results = max_results_per_job
        self._states: dict[str, JobState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def ensure(self, job_id: str, now: float) -> JobState:
        state = self._states.get(job_id)
        if state is None:
            state = JobState(first_seen=now, active_since=now)
            state.history = History(job_id, self.max_results)
            self._states[job_id] = state
        return state

    def get(self, job_id: str) -> JobState | None:
        return self._states.get(job_id)

    def set_max_results(self, max_results_per_job: int) -> list[str]:
        """A new history limit for every job (a config reload); the ids whose history
        was cut to it."""
        self.max_results = max_results_per_job
        cut = []
        for job_id, state in self._states.items():
            before = len(state.history)
            state.history.limit(max_results_per_job)
            if len(state.history) != before:
                cut.append(job_id)
        return cut

    def drop(self, job_id: str) -> None:
        self._states.pop(job_id, None)

    def record(self, result: Result) -> bool:
        state = self._states[result.job_id]
        return apply_result(state, result)

    def history(self, job_id: str) -> list[Result]:
        state = self._states.get(job_id)
        return list(state.history) if state else []

    def ids(self) -> Iterable[str]:
        return list(self._states)

    def purge(self, before: float, job_id: str | None = None) -> int:
        """Drop history entries older than ``before``; return how many went."""
        removed = 0
        targets = [job_id] if job_id is not None else list(self._states)
        for jid in targets:
            state = self._states.get(jid)
            if state is not None:
                removed += state.history.purge_before(before)
        return removed

    def restore(self, job_id: str, values: dict[str, Any], history: History, now: float) -> bool:
        """Put back a job's state values and history as a snapshot kept them; return
        False when the history was cut to a ``max_results_per_job`` smaller than the one
        it was written with."""
        state = self.ensure(job_id, now)
        for name, value in values.items():
            setattr(state, name, value)
        kept = len(history)
        history.job_id = job_id
        history.limit(self.max_results)
        state.history = history
        return len(history) == kept
