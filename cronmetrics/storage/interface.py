"""The store interface: what the rest of cronmetrics may ask of a state backend.

Two engines implement :class:`Store`: the embedded one (states and histories in memory,
persisted to SQLite in the state dir) and a shared one for replicas (Redis). Everything
above them (the monitor, the routes, the exposition, retention) goes through this module
and nothing else, so an engine that sits behind a network works the same as one in the
process. The rules that make that possible::

    caller (monitor, routes)                    Store engine
    ------------------------                    ------------------------------------
    values in  ─── Result, JobState, dicts ───▶ keeps its own copies
    values out ◀── frozen dataclasses, lists ── never a live object of its own
    no monitor lock held ─── record(batch) ───▶ I/O happens here, on the caller's thread
    cursor C   ─── changes(C) ────────────────▶ (ids changed after C, C')

Value types
-----------
:class:`Result` (from :mod:`cronmetrics.storage.history`) is one accepted result;
:class:`JobState` the running state of one job, without its history (which is read with
:meth:`Store.history`); :class:`Recorded` the outcome of recording one result;
:class:`RuntimeRecord` a small JSON document the server keeps at run time (maintenance
windows); :class:`StoreHealth` the engine's readiness. All are frozen: a caller may keep
them, hand them to another thread or compare them, and the engine never changes them.

Guarantees of every engine
--------------------------
- **Thread-safety.** Every method may be called from any thread at any time without an
  outside lock; an engine serializes what must be serialized itself. Callers must *not*
  hold the monitor lock around a call (an engine may do disk or network I/O).
- **record(results, now)** is atomic per call: either every result of the list is
  recorded (history, counters, state) or none is and it raises
  :class:`~cronmetrics.errors.StorageError`; a half-recorded batch never exists, in
  memory or on disk. Results are applied in list order. With durability on
  (``snapshot.journal``) the results are durable when the call returns (the caller
  answers 2xx after it); otherwise they are durable at the next :meth:`Store.flush`.
  Concurrent calls may share one commit (group commit). A result whose ``run_id`` is set
  and whose ``(job id, run_id, status)`` equals one already retained in the job's history
  is a **duplicate**: it is acknowledged (``Recorded.duplicate``), changes nothing and is
  not counted again; results without a ``run_id`` are never duplicates. The job's state is
  created on first use (``first_seen = active_since = now``).
- **Ordering.** Each state has a ``version`` that grows by one at every change; of two
  :class:`JobState` values of the same job, the higher version is the newer. A caller
  that receives states from concurrent calls keeps the newest by that number.
- **changes(cursor)** returns the ids whose state, history or existence changed after
  ``cursor`` and a new cursor to pass next time. A cursor is an opaque string, precise
  for the engine instance that issued it (one store object in one process: the
  embedded engine, or one replica's copy of Redis). Any other cursor (``""``, or one from
  another process, another replica, an earlier run) is answered with every id this
  instance knows: the ones it holds and the ones dropped since it started. Over-reporting
  is allowed, missing a change is not; a dropped job is listed (its :meth:`Store.state`
  is then ``None``). So a second process that passes its cursor to another process's
  store learns *everything*, never too little, except jobs dropped before that store
  started, which it cannot know of: a caller resuming with a foreign cursor compares
  what it holds with :meth:`Store.ids`. Within one process a cursor is never mistaken
  for another instance's (a random epoch per instance, not a pid or an address that
  a restart or the allocator can reuse).
- **Reading** (:meth:`~Store.state`, :meth:`~Store.history`, :meth:`~Store.recent`,
  :meth:`~Store.ids`) returns copies: what a caller gets never changes under it.
  ``history`` and ``recent`` are newest first (by the result's own timestamp, then by
  arrival).
- **purge** removes history entries durably before it returns: with the embedded engine
  the purged bytes are gone from every file of the state dir. Counters and states stay.
- **detach / ensure.** A job whose definition disappears is *detached*, not dropped: its
  state and history stay (``JobState.detached_since`` says since when) until
  :meth:`~Store.expire_detached` or :meth:`~Store.drop`; :meth:`~Store.ensure` attaches it
  again with everything it had. :meth:`~Store.drop` removes a job at once: state,
  history and its last good definition.
- **Definitions.** The last good definition of each job, as the JSON-able dict of
  ``JobDefinition.model_dump(mode="json")``, so that a restart with a now-invalid file
  keeps serving the job.
- **Runtime records** (``kind``, ``key``) -> JSON object: small, rare, durable when the call
  returns, listed in key order.
- **Run output** (the append-only execution log of ``/ping/<key>/<id>/log``): text
  appended to the output of a job's *running* run, kept with the run it belongs to (its
  run id and start), bounded to its tail::

      append_output(id, text, run_id?) ──▶ running run (the one of run_id, if given)?
                                           no: Conflict, nothing kept
                                           yes: its text += text, last `limit` bytes
      record_unlogged(results)       ──▶   a finish ends a run with open output?
                                           yes: None, nothing recorded
                                           no: record() (checked in the same step)
      take_outputs(finishes)         ──▶   for each finish that ends its job's running
                                           run (what transitions.ends_run says): that
                                           run's text, removed; appends to it: Conflict
      restore_output(taken)          ──▶   put back (recording the finish failed)

  The monitor records a finish with ``record_unlogged`` and, when that answers None,
  takes the outputs, puts them in front of the finishes' own and records. Appends and
  takes of one job are serialized: two appends at once both land, in some order; an
  append and the finish of its run at once either is in the finish's output or is
  refused (the take closes every run it is given, logged or not). The output is durable
  when the call returns.
  Callers (the monitor) redact and bound each piece before it comes here; the finish
  puts the taken text in front of its own output.
- **health()** is cheap and never raises: ``ok`` False (with a ``detail`` a human reads
  in ``/health/deep``) while the engine cannot persist or reach its data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from cronmetrics.storage.history import Result

__all__ = [
    "JobState",
    "Recorded",
    "Result",
    "RunOutput",
    "RuntimeRecord",
    "Store",
    "StoreHealth",
    "new_state",
]

#: a JSON value as runtime records hold them
JSONValue = Any


@dataclass(frozen=True, slots=True)
class JobState:
    """What the server knows about one job, everything the evaluator needs besides time.

    A value: engines build a new one at every change (``dataclasses.replace``)."""

    job_id: str
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
    #: when the job's definition disappeared (None: defined, or reported without one)
    detached_since: float | None = None
    #: grows by one at every change of this job's state or history (see "Ordering")
    version: int = 0


def new_state(job_id: str, now: float) -> JobState:
    """The state of a job seen for the first time at ``now``."""
    return JobState(job_id=job_id, first_seen=now, active_since=now)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording one result did."""

    result: Result
    #: the job's state after this result (after the whole call for a duplicate)
    state: JobState
    #: whether the job's current state changed (an old result only adds to history)
    changed: bool
    #: an already retained ``(run_id, status)``: acknowledged, not counted again
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class RuntimeRecord:
    """A small document the server keeps at run time, such as a maintenance window."""

    kind: str
    key: str
    value: Mapping[str, JSONValue]
    updated: float


@dataclass(frozen=True, slots=True)
class RunOutput:
    """What a running run has logged so far (``/ping/<key>/<id>/log``), and whose it is:
    a run is its run id (None without one) and its start, so a log never outlives its
    run into the next one."""

    job_id: str
    run_id: str | None
    started: float | None
    text: str
    updated: float


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Readiness of an engine, for ``/health/deep`` (name ``store``) and ``/metrics``."""

    ok: bool
    detail: str
    #: the data could not be loaded at start and the engine began empty
    fallback: bool = False
    #: when the state was last known to be durable (None: never)
    last_persisted: float | None = None


@runtime_checkable
class Store(Protocol):
    """A state backend (see the module docstring for what every method guarantees)."""

    # -- results and states ----------------------------------------------------------------

    def record(self, results: Sequence[Result], now: float) -> list[Recorded]:
        """Record ``results`` all-or-nothing, in order; one :class:`Recorded` each."""
        ...

    def record_unlogged(self, results: Sequence[Result], now: float) -> list[Recorded] | None:
        """:meth:`record`, unless a finish among ``results`` ends a run whose logged
        output (:meth:`append_output`) is not taken yet: then None, and nothing recorded
        (the caller takes the outputs and records). Checked and recorded in one step,
        so a finish costs one round trip when its run logged nothing (the usual case).
        An engine whose take is cheap may always answer None."""
        ...

    def ensure(self, job_id: str, now: float) -> JobState:
        """The job's state, created at ``now`` if new; attaches a detached job again."""
        ...

    def ensure_many(self, job_ids: Sequence[str], now: float) -> dict[str, JobState]:
        """:meth:`ensure` for many jobs at once (a start with thousands of new jobs): a
        few round trips, not one per job."""
        ...

    def activate(self, job_id: str, now: float) -> JobState:
        """Restart the job's deadlines at ``now`` (``active_since``: it became active)."""
        ...

    def state(self, job_id: str) -> JobState | None:
        """The job's current state, or None for a job the store does not hold."""
        ...

    def states(self, job_ids: Iterable[str] | None = None) -> dict[str, JobState]:
        """Current states of ``job_ids`` (all without) that exist; one round trip."""
        ...

    def ids(self) -> list[str]:
        """Every job id the store holds, detached ones included."""
        ...

    def history(
        self, job_id: str, limit: int | None = None, before: float | None = None
    ) -> list[Result]:
        """The job's retained results stamped before ``before`` (all without), newest
        first, at most ``limit``; empty for an unknown job."""
        ...

    def recent(self, job_ids: Iterable[str] | None, limit: int) -> list[Result]:
        """The ``limit`` newest results across ``job_ids`` (every job without), newest
        first."""
        ...

    def changes(self, cursor: str) -> tuple[list[str], str]:
        """Ids changed after ``cursor`` and the cursor to pass next time."""
        ...

    # -- run output (the execution log) ----------------------------------------------------

    def append_output(
        self, job_id: str, text: str, *, run_id: str | None, limit: int, now: float
    ) -> RunOutput:
        """Append ``text`` to the output of the job's running run (the run ``run_id``
        when given), keeping its last ``limit`` bytes; :class:`~cronmetrics.errors.Conflict`
        when no such run is running or its finish already took the output."""
        ...

    def run_output(self, job_id: str) -> RunOutput | None:
        """What the job's running run has logged so far, or None."""
        ...

    def take_outputs(self, finishes: Sequence[Result]) -> dict[str, RunOutput]:
        """For each of ``finishes`` that ends its job's running run, remove and return the
        output that run logged (by job id); appends to that run are refused from then on."""
        ...

    def restore_output(self, output: RunOutput) -> None:
        """Put a taken output back (recording its finish failed), if its run still runs."""
        ...

    # -- removal ---------------------------------------------------------------------------

    def purge(self, before: float, job_ids: Iterable[str] | None = None) -> int:
        """Delete history entries stamped before ``before`` (of ``job_ids``, or all), for
        real and durably; return how many went."""
        ...

    def detach(self, job_ids: Iterable[str], now: float) -> None:
        """Mark jobs whose definition disappeared (kept until expired, dropped or back)."""
        ...

    def expire_detached(self, before: float) -> list[str]:
        """Drop the jobs detached before ``before``; return their ids."""
        ...

    def drop(self, job_id: str) -> bool:
        """Remove a job at once (state, history, definition); False if it was unknown."""
        ...

    # -- last good definitions -------------------------------------------------------------

    def put_definitions(self, definitions: Mapping[str, Mapping[str, JSONValue]]) -> None:
        """Keep these as the last good definitions of their jobs (others untouched)."""
        ...

    def definitions(self) -> dict[str, dict[str, JSONValue]]:
        """Every job's last good definition, by job id."""
        ...

    # -- runtime records -------------------------------------------------------------------

    def put_record(
        self, kind: str, key: str, value: Mapping[str, JSONValue], now: float
    ) -> RuntimeRecord:
        """Create or replace one record; durable when it returns."""
        ...

    def get_record(self, kind: str, key: str) -> RuntimeRecord | None:
        """One record, or None."""
        ...

    def list_records(self, kind: str) -> list[RuntimeRecord]:
        """Every record of ``kind``, in key order."""
        ...

    def delete_record(self, kind: str, key: str) -> bool:
        """Delete one record; False if there was none."""
        ...

    # -- lifecycle -------------------------------------------------------------------------

    def set_max_results(self, max_results_per_job: int) -> list[str]:
        """A new history limit (a config reload), applied at once: a smaller one cuts every
        job's history now; return the ids whose history was cut. Unchanged: nothing."""
        ...

    def flush(self) -> None:
        """Make everything recorded so far durable (the periodic write); StorageError
        when it cannot (nothing is lost from memory: the next flush tries again)."""
        ...

    def health(self) -> StoreHealth:
        """Readiness; cheap, never raises."""
        ...

    def close(self) -> None:
        """Flush and release the engine's resources (the final write at shutdown)."""
        ...
