"""The embedded engine: states and histories in memory, persisted to ``state.db``.

It implements :class:`~cronmetrics.storage.interface.Store` (read that module's docstring
for what every call guarantees). Reads are served from memory: one
:class:`~cronmetrics.storage.interface.JobState` value per job and one columnar
:class:`~cronmetrics.storage.history.History`. Writes go to
:class:`~cronmetrics.storage.database.Database` in one of two ways:

- ``durable=False`` (``snapshot.journal: false``): :meth:`EmbeddedStore.record` changes
  memory and queues the rows; :meth:`EmbeddedStore.flush` (every ``snapshot.interval``)
  writes the queued rows and the states to write in one transaction. A crash loses at most
  the results since the last flush; a failed flush keeps the queue for the next one.

What a write owes and which states it carries is :mod:`~cronmetrics.storage.pending`'s;
rows beyond a job's history are deleted oldest first (:mod:`~cronmetrics.storage.rowbook`).
:meth:`close` writes everything, then the history cache the next start reads.
- ``durable=True`` (``snapshot.journal: true``): :meth:`~EmbeddedStore.record` returns
  once its results are committed. Concurrent calls share a commit
  (:mod:`~cronmetrics.storage.groupcommit`). Memory changes only after the commit, so a
  failed commit leaves no trace anywhere and fails every batch of the group. A commit
  plans its states before it writes, so changes of a state otherwise than by a result
  (ensure, activate, detach) and of the history limit take the writer lock too: they
  wait for the commit in progress.

Running runs' output (``/ping/.../log``) is :mod:`~cronmetrics.storage.runlog`'s; it
asks the store which run is running and has it write each ``run-output`` record.

Locks, taken in this order and never held around each other's I/O: the run log's order
of changes; ``_writer`` serializes database transactions (a group commit's leader takes
it before it takes its group); ``_lock`` guards memory (held for microseconds per call);
the run log's memory lock. No caller's lock (the monitor's) is ever held during any.

Without a database (``database=None``: tests, tools) the engine is the same, in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cronmetrics.errors import StorageError
from cronmetrics.logs import get_logger
from cronmetrics.storage.columns import loaded_run_id
from cronmetrics.storage.database import Database, Loaded, Writes
from cronmetrics.storage.groupcommit import GroupCommit
from cronmetrics.storage.history import History, Result, check_result, newest
from cronmetrics.storage.interface import (
    JobState,
    Recorded,
    RunOutput,
    RuntimeRecord,
    StoreHealth,
    new_state,
)
from cronmetrics.storage.pending import Pending
from cronmetrics.storage.rowbook import RowBook
from cronmetrics.storage.runlog import OUTPUT_KIND, Run, RunLog, Save, output_of, record_of
from cronmetrics.storage.transitions import advance, ends_run, plan_results

__all__ = ["EmbeddedStore"]

log = get_logger("storage")


def _row_result(row: tuple[Any, ...]) -> Result:
    """A result from a row of ``Loaded.tail`` (its id first)."""
    _, job_id, status, ts, received, host, duration, exit_code, run_id, output, labels = row
    return Result(
        job_id,
        status,
        ts,
        received,
        host,
        duration,
        exit_code,
        loaded_run_id(run_id),
        output,
        json.loads(labels) if labels else {},
    )


@dataclass(frozen=True, slots=True)
class _Batch:
    """The results of one durable record() call, for its group's commit."""

    results: Sequence[Result]
    now: float


class EmbeddedStore:
    """The embedded :class:`~cronmetrics.storage.interface.Store` (module docstring)."""

    def __init__(
        self,
        max_results_per_job: int = 100,
        database: Database | None = None,
        *,
        durable: bool = False,
        loaded: Loaded | None = None,
    ) -> None:
        self.max_results = max_results_per_job
        self.database = database
        self.durable = durable and database is not None
        self._lock = threading.Lock()
        self._writer = threading.Lock()
        self._states: dict[str, JobState] = {}
        self._histories: dict[str, History] = {}
        self._definitions: dict[str, dict[str, Any]] = {}
        self._records: dict[tuple[str, str], RuntimeRecord] = {}
        #: change cursor: id -> sequence number of its last change, oldest first; the
        #: epoch tells this instance's cursors from any other's
        self._epoch = f"{uuid.uuid4().hex[:16]}."
        self._seq = 0
        self._changed: dict[str, int] = {}
        #: what the next write owes the database
        self._pending = Pending()
        #: the database's result rows: each job's, the garbage, the lagging state rows
        self._book = RowBook()
        #: durable record() calls share commits
        self._group: GroupCommit[_Batch, list[Recorded]] = GroupCommit(
            self._commit_batches, serialize=self._writer
        )
        self._log = RunLog(self._running, self._ended, self._writing_outputs)
        self.last_error: str | None = None
        self.last_persisted: float | None = None
        #: called under the writer lock before every database write (the state dir's
        #: guard, :mod:`cronmetrics.storage.persistence`); StorageError refuses the write
        self.before_write: Callable[[], None] | None = None
        if loaded is not None:
            self._load(loaded)

    def _load(self, loaded: Loaded) -> None:
        """Memory from what the database held: cached histories plus the results after
        them; state rows plus the results after them (applied as :meth:`record` did)."""
        self._states = dict(loaded.states)
        self._definitions = dict(loaded.definitions)
        book = self._book = RowBook(loaded.used_upto + 1)
        limit = self.max_results
        for job_id, state in loaded.states.items():
            rows = loaded.tail.get(job_id, ())
            cached = loaded.cached.get(job_id)
            if cached is None:
                since, ids, history = 0, array("q"), None
            else:
                since, ids, history = cached
            newer = rows if not rows or rows[0][0] > since else [r for r in rows if r[0] > since]
            if newer:
                row_ids, *columns = zip(*newer, strict=True)  # ids, then the result columns
                ids.extend(row_ids)
                if len(newer) > limit:
                    columns = [column[-limit:] for column in columns]
                fresh = History.from_rows(job_id, columns, limit)
                if history is None:
                    history = fresh
                else:
                    history.join(fresh)
            if history is not None:
                self._histories[job_id] = history
            upto = loaded.state_upto[job_id]
            folded = state
            if rows and rows[-1][0] > upto:
                for row in rows:
                    if row[0] > upto:
                        folded = advance(folded, _row_result(row))
            if folded is not state:
                self._states[job_id] = folded
                self._pending.stale.add(job_id)
            book.hold(job_id, ids, limit=limit, behind=upto if folded is not state else None)
        book.settle()
        if loaded.cache_problem:  # rewritten at the next clean shutdown
            self._pending.forget_cache = True
        for job_id in self._states:
            self._changed[job_id] = self._seq = self._seq + 1
        if self.database is not None:
            outputs = []
            for record in self.database.records(None):
                if record.kind == OUTPUT_KIND:
                    outputs.append(output_of(record))
                else:
                    self._records[(record.kind, record.key)] = record
            self._log.load(outputs)

    # -- internal --------------------------------------------------------------------------

    def _history(self, job_id: str) -> History:
        history = self._histories.get(job_id)
        if history is None:
            history = self._histories[job_id] = History(job_id, self.max_results)
        return history

    def _mark(self, job_id: str, *, by_results: bool = False, write: bool = True) -> None:
        """Call under ``_lock``: the job changed (cursor); its state is to be written at
        the next write (``by_results``: in its slice; ``write`` False: not at all)."""
        self._seq += 1
        self._changed.pop(job_id, None)
        self._changed[job_id] = self._seq
        if write:
            self._pending.mark(job_id, by_results=by_results)

    def _apply(self, states: dict[str, JobState], appended: dict[str, list[Result]]) -> None:
        """Call under ``_lock``: make a plan real in memory."""
        for job_id, state in states.items():
            if self._states.get(job_id) == state:
                continue
            new = job_id not in self._states
            self._states[job_id] = state
            history = self._history(job_id)
            rows = appended.get(job_id, ())
            for result in rows:
                history.append(result)
            # applying the results again on load gives this state back: no need to
            # write it now, unless it is new or changed otherwise (a duplicate attaching)
            self._mark(job_id, by_results=bool(rows) and not new)

    def _sort_ids(self) -> None:
        """Under ``_writer``, outside ``_lock``: the order of the stale states' slices."""
        self._pending.sort(self._states, len(self._states))

    def _persisted(self, now: float | None) -> None:
        self.last_error = None
        if now is not None:
            self.last_persisted = now

    def _failed(self, exc: StorageError) -> None:
        self.last_error = exc.message

    # -- results and states ----------------------------------------------------------------

    def record(self, results: Sequence[Result], now: float) -> list[Recorded]:
        for result in results:
            try:
                check_result(result)
            except ValueError as exc:
                raise StorageError(f"result for {result.job_id!r} refused: {exc}") from None
        if not self.durable:
            with self._lock:
                states: dict[str, JobState] = {}
                appended: dict[str, list[Result]] = {}
                outcome = plan_results(
                    results, now, self._states, self._histories, states, appended
                )
                self._apply(states, appended)
                self._pending.rows.extend(r for rs in appended.values() for r in rs)
            return outcome
        return self._group.submit(_Batch(results, now))

    def _commit_batches(self, group: Sequence[_Batch]) -> list[list[Recorded]]:
        """The group commit's commit (under ``_writer``): StorageError, recorded as the
        last error, for a commit that failed with a bug too."""
        try:
            return self._commit_group(group, max(b.now for b in group))
        except StorageError:
            raise
        except Exception as exc:  # a bug: the group fails, as a failed commit
            error = StorageError(f"cannot commit results: {exc!r}")
            self._failed(error)
            raise error from None

    def _commit_group(self, group: Sequence[_Batch], now: float) -> list[list[Recorded]]:
        """Call under ``_writer``: commit ``group`` in one transaction (the new rows,
        and the states that loading could not rebuild from them); the outcome of each
        batch, or StorageError with nothing changed."""
        assert self.database is not None
        try:
            self._check()
        except StorageError as exc:
            self._failed(exc)
            raise
        self._sort_ids()
        with self._lock:
            states: dict[str, JobState] = {}
            appended: dict[str, list[Result]] = {}
            current, histories = self._states, self._histories
            plans = [
                plan_results(b.results, b.now, current, histories, states, appended) for b in group
            ]
            owed = self._pending.dirty
            must = {j for j in states if j not in current or j in owed}
            dirty = [current[j] for j in owed if j in current and j not in states]
            cut = self._pending.take_cut()
        rows = [r for rs in appended.values() for r in rs]
        written = [*(states[j] for j in must), *dirty]
        plan = self._book.plan(rows, written, limit=self.max_results, cut=cut, deletes=None)
        try:
            self.database.write(plan.writes())
        except BaseException as exc:
            with self._lock:
                self._pending.cut |= cut
            if isinstance(exc, StorageError):
                self._failed(exc)
            raise
        self._book.applied(plan, limit=self.max_results)
        self._persisted(now)
        with self._lock:
            self._apply(states, appended)
            self._pending.written(s.job_id for s in written)
        return plans

    def _set_state(self, job_id: str, change: dict[str, Any], now: float) -> JobState:
        if not change:
            with self._lock:
                if (known := self._states.get(job_id)) is not None:
                    return known  # nothing to change: no need to wait for a commit
        # journaled: not during a commit, whose states (planned before) would replace it
        with self._writer if self.durable else contextlib.nullcontext(), self._lock:
            state = self._states.get(job_id) or new_state(job_id, now)
            updated = dataclasses.replace(state, **change) if change else state
            if updated is not state or job_id not in self._states:
                if updated is not state:
                    updated = dataclasses.replace(updated, version=state.version + 1)
                self._states[job_id] = updated
                self._history(job_id)
                self._mark(job_id)
            return updated

    def set_max_results(self, max_results_per_job: int) -> list[str]:
        """A new history limit for every job (a config reload); the ids whose history
        was cut to it (their rows in the database are trimmed at the next write).

        A larger limit first deletes the rows already beyond the histories: a load takes
        each job's newest rows up to the limit, and would bring those back."""
        if self.database is None or max_results_per_job == self.max_results:
            return self._set_limit(max_results_per_job)
        with self._writer:  # not in the middle of a journaled commit, planned at the old limit
            if max_results_per_job > self.max_results:
                # at the old limit: every row beyond a history deleted, every state current
                try:
                    self._flush_locked(None, everything=True, all_garbage=True)
                except StorageError as exc:
                    log.warning(
                        "cannot delete the rows beyond the histories before a larger "
                        "history limit; a crash before the next write may bring them back",
                        extra={"error": exc.message},
                    )
            return self._set_limit(max_results_per_job)

    def _set_limit(self, max_results_per_job: int) -> list[str]:
        with self._lock:
            if max_results_per_job == self.max_results:
                return []
            self.max_results = max_results_per_job
            cut = []
            for job_id, history in self._histories.items():
                before = len(history)
                history.limit(max_results_per_job)
                if len(history) != before:
                    cut.append(job_id)
                    self._mark(job_id, write=False)
                    self._pending.cut.add(job_id)
            if cut:
                self._pending.forget_cache = True  # cached histories hold more than the new limit
            return cut

    def ensure(self, job_id: str, now: float) -> JobState:
        state = self.state(job_id)
        change = {"detached_since": None} if state and state.detached_since is not None else {}
        return self._set_state(job_id, change, now)

    def ensure_many(self, job_ids: Sequence[str], now: float) -> dict[str, JobState]:
        return {job_id: self.ensure(job_id, now) for job_id in job_ids}

    def activate(self, job_id: str, now: float) -> JobState:
        return self._set_state(job_id, {"active_since": now, "detached_since": None}, now)

    def state(self, job_id: str) -> JobState | None:
        return self._states.get(job_id)

    def states(self, job_ids: Iterable[str] | None = None) -> dict[str, JobState]:
        with self._lock:
            if job_ids is None:
                return dict(self._states)
            found = self._states
            return {j: s for j in job_ids if (s := found.get(j)) is not None}

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def history(
        self, job_id: str, limit: int | None = None, before: float | None = None
    ) -> list[Result]:
        with self._lock:
            history = self._histories.get(job_id)
            if not history or limit == 0:
                return []
            history = history.copy()  # O(1), copy on write: read outside the lock
        results = newest([history], len(history))
        if before is not None:
            results = [r for r in results if r.timestamp < before]
        return results if limit is None else results[:limit]

    def recent(self, job_ids: Iterable[str] | None, limit: int) -> list[Result]:
        if limit <= 0:
            return []
        with self._lock:
            chosen = self._histories if job_ids is None else dict.fromkeys(job_ids)
            histories = [h.copy() for j in chosen if (h := self._histories.get(j)) is not None]
        return newest(histories, limit)

    def changes(self, cursor: str) -> tuple[list[str], str]:
        """Cursors are ``"<epoch>.<n>"``: ``n`` counts this instance's changes and the
        epoch is random per instance, so a cursor of another instance (another process,
        a restart, another store object that happens to reuse this one's memory or pid)
        never passes for one of ours: it gets every id this instance knows, dropped ones
        included (see the interface's "changes")."""
        prefix = self._epoch
        with self._lock:
            new = f"{prefix}{self._seq}"
            if not cursor.startswith(prefix):
                return list(self._changed), new
            since = int(cursor[len(prefix) :])
            out = []
            for job_id in reversed(self._changed):
                if self._changed[job_id] <= since:
                    break
                out.append(job_id)
            return out, new

    # -- run output (the execution log) ----------------------------------------------------

    def _running(self, job_id: str) -> Run | None:
        """The job's running run (run id, start), or None (the run log's question)."""
        with self._lock:
            state = self._states.get(job_id)
            if state is None or not state.running:
                return None
            return state.run_id, state.run_started

    def _ended(self, finishes: Sequence[Result]) -> dict[str, Run]:
        """The running run of each job one of ``finishes`` ends (the run log's question)."""
        ended: dict[str, Run] = {}
        with self._lock:
            for result in finishes:
                state = self._states.get(result.job_id)
                if result.job_id not in ended and state is not None and ends_run(state, result):
                    ended[result.job_id] = (state.run_id, state.run_started)
        return ended

    @contextlib.contextmanager
    def _writing_outputs(self) -> Iterator[Save]:
        """The run log's writes: under the writer lock, like a drop and a database
        written anew, which thus see an output change whole or not at all."""
        with self._writing() as database:

            def save(outputs: Mapping[str, RunOutput | None]) -> None:
                if database is not None:
                    database.write_records(
                        [record_of(o) for o in outputs.values() if o is not None],
                        [(OUTPUT_KIND, j) for j, o in outputs.items() if o is None],
                    )

            yield save

    def append_output(
        self, job_id: str, text: str, *, run_id: str | None, limit: int, now: float
    ) -> RunOutput:
        return self._log.append(job_id, text, run_id=run_id, limit=limit, now=now)

    def run_output(self, job_id: str) -> RunOutput | None:
        return self._log.current(job_id)

    def record_unlogged(self, results: Sequence[Result], now: float) -> list[Recorded] | None:
        """None: taking a run's output is a lookup in memory here, so the caller takes
        first (under the same locks a log append takes) and then records."""
        return None

    def take_outputs(self, finishes: Sequence[Result]) -> dict[str, RunOutput]:
        return self._log.take(finishes)

    def restore_output(self, output: RunOutput) -> None:
        self._log.restore(output)

    # -- removal ---------------------------------------------------------------------------

    def purge(self, before: float, job_ids: Iterable[str] | None = None) -> int:
        chosen = None if job_ids is None else list(job_ids)
        with self._writer:
            if self.database is not None:
                # queued rows first, so the purge covers them; every state row current,
                # so that none needs a deleted row on load; the rows beyond the histories
                # gone, so that none is left to stand in for a purged one
                self._flush_locked(None, everything=True, all_garbage=True)
            with self._lock:
                removed = 0
                for job_id in self._histories if chosen is None else chosen:
                    history = self._histories.get(job_id)
                    if history is not None and (gone := history.purge_before(before)):
                        removed += gone
                        self._mark(job_id, write=False)
            if self.database is not None:
                self._book.purged(self.database.purge(before, chosen))
            return removed

    def detach(self, job_ids: Iterable[str], now: float) -> None:
        for job_id in job_ids:
            state = self.state(job_id)
            if state is not None and state.detached_since is None:
                self._set_state(job_id, {"detached_since": now}, now)

    def expire_detached(self, before: float) -> list[str]:
        with self._lock:
            expired = [
                j
                for j, s in self._states.items()
                if s.detached_since is not None and s.detached_since < before
            ]
        for job_id in expired:
            self.drop(job_id)
        return expired

    def drop(self, job_id: str) -> bool:
        with self._writing() as database:
            if database is not None:  # first: a failed write leaves the job as it was
                database.write(Writes(drop=[job_id], drop_records=OUTPUT_KIND))
            with self._lock:
                known = self._states.pop(job_id, None) is not None
                self._histories.pop(job_id, None)
                self._definitions.pop(job_id, None)
                self._log.forget(job_id)
                self._pending.forget(job_id)
                self._book.forget(job_id)
                self._seq += 1
                self._changed.pop(job_id, None)
                self._changed[job_id] = self._seq
            return known

    # -- last good definitions -------------------------------------------------------------

    def put_definitions(self, definitions: Mapping[str, Mapping[str, Any]]) -> None:
        with self._lock:
            fresh = {j: dict(d) for j, d in definitions.items() if self._definitions.get(j) != d}
        if not fresh:
            return
        with self._writing() as database:
            if database is not None:
                database.put_definitions(fresh, 0.0)
            with self._lock:
                self._definitions.update(fresh)

    def definitions(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {j: dict(d) for j, d in self._definitions.items()}

    # -- runtime records -------------------------------------------------------------------

    def put_record(
        self, kind: str, key: str, value: Mapping[str, Any], now: float
    ) -> RuntimeRecord:
        record = RuntimeRecord(kind, key, dict(value), now)
        with self._writing() as database:
            if database is not None:
                database.write_records([record], [])
            with self._lock:
                self._records[(kind, key)] = record
        return record

    def get_record(self, kind: str, key: str) -> RuntimeRecord | None:
        return self._records.get((kind, key))

    def list_records(self, kind: str) -> list[RuntimeRecord]:
        with self._lock:
            return sorted((r for (k, _), r in self._records.items() if k == kind), key=_key)

    def delete_record(self, kind: str, key: str) -> bool:
        with self._writing() as database:
            if database is not None:
                database.write_records([], [(kind, key)])
            with self._lock:
                return self._records.pop((kind, key), None) is not None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Database | None]:
        """Under the writer lock, once the before-write check passed: the database to
        write a change to (None: none). Change memory inside the block too, after the
        write: a database written anew (:meth:`replace_database_locked`, under the same
        lock) then has the change whole or not at all."""
        with self._writer:
            if self.database is not None:
                self._check()
            yield self.database

    # -- lifecycle -------------------------------------------------------------------------

    def flush(self, now: float | None = None) -> None:
        if self.database is None:
            return
        with self._writer:
            self._flush_locked(now)

    def _flush_locked(
        self,
        now: float | None,
        *,
        everything: bool = False,
        cache: bool = False,
        all_garbage: bool = False,
    ) -> None:
        """Call under ``_writer``: write the queued rows, the states that must be, a slice
        of the stale ones (``everything``: all of them), then checkpoint the WAL.
        ``cache``: also the history cache, from the same moment (the final write);
        ``all_garbage``: delete every row beyond its history, not only as many as added."""
        assert self.database is not None
        try:
            self._check()
        except StorageError as exc:
            self._failed(exc)
            raise
        self._sort_ids()
        with self._lock:
            taken = self._pending.take(everything=everything)
            rows, cut = taken.rows, taken.cut
            owed = taken.dirty | taken.stale
            states = [s for j in owed if (s := self._states.get(j)) is not None]
            histories = (
                [
                    (j, h.copy() if (h := self._histories.get(j)) else History(j))
                    for j in self._states
                ]
                if cache
                else []
            )
        book = self._book
        idle = not (rows or states or cut or taken.forget_cache or cache or book.unsorted) and not (
            all_garbage and book.garbage
        )
        if idle:
            if self.last_error is not None:  # nothing to write: is the disk back?
                try:
                    self.database.probe()
                except StorageError as exc:
                    self._failed(exc)
                    raise
            self._persisted(now)
            return
        deletes = -1 if cache or all_garbage else len(rows) + book.journaled
        plan = book.plan(rows, states, limit=self.max_results, cut=cut, deletes=deletes)
        try:
            self.database.write(plan.writes(forget_cache=taken.forget_cache))
        except StorageError as exc:
            with self._lock:  # keep everything for the next try, in order
                self._pending.restore(taken)
            self._failed(exc)
            raise
        book.applied(plan, limit=self.max_results)
        self._persisted(now)
        if cache:
            empty = array("q")
            self.database.put_cache(
                ((h, book.ids.get(j, empty)) for j, h in histories), plan.last_id
            )
        else:
            self.database.checkpoint_passive()

    def _check(self) -> None:
        """Call under ``_writer``, before anything of a write is taken from memory."""
        if self.before_write is not None:
            self.before_write()

    def verify(self) -> None:
        """Run the before-write check now (the guard's own schedule, between writes);
        StorageError when it refuses."""
        if self.database is None:
            return
        with self._writer:
            try:
                self._check()
            except StorageError as exc:
                self._failed(exc)
                raise

    def replace_database_locked(self, database: Database) -> tuple[int, int]:
        """Call under ``_writer`` (from :attr:`before_write`): write everything in memory
        to ``database`` (new and empty: the old file was lost while serving) in one
        transaction, and write there from now on; return (jobs, results). On
        StorageError nothing changes: the old database stays in use."""
        with self._lock:
            states = list(self._states.values())
            histories = [(j, h.copy()) for j, h in self._histories.items()]
            definitions = {j: dict(d) for j, d in self._definitions.items()}
            records = [*self._records.values(), *self._log.records()]
            taken = self._pending.take(everything=True)
        book, plan = RowBook.anew(histories, states)
        try:
            database.write_everything(plan.writes(), definitions, records)
        except StorageError:
            with self._lock:  # kept for the next try, in order
                self._pending.restore(taken)
            raise
        self.database = database
        self._book = book
        self.last_error = None
        return len(states), plan.last_id

    def results_held(self) -> int:
        """Results in memory, every job's history together."""
        with self._lock:
            return sum(map(len, self._histories.values()))

    def pending(self) -> int:
        """Results recorded but not yet written."""
        return len(self._pending.rows)

    def health(self) -> StoreHealth:
        db = self.database
        if db is None:
            return StoreHealth(True, "in memory only (no state.db)")
        try:
            moved = db.path.stat().st_ino != db.inode
        except OSError:
            moved = True
        if moved:
            return StoreHealth(
                False,
                f"{db.path} was removed or replaced while the server ran: writes go to a file "
                "nobody will read; restart the server",
                last_persisted=self.last_persisted,
            )
        if self.last_error is not None:
            return StoreHealth(
                False, f"last write failed: {self.last_error}", last_persisted=self.last_persisted
            )
        return StoreHealth(True, f"{db.path} is current", last_persisted=self.last_persisted)

    def close(self) -> None:
        if self.database is None:
            return
        with self._writer:
            try:
                self._flush_locked(None, everything=True, cache=True)
            finally:
                self.database.close()


def _key(record: RuntimeRecord) -> str:
    return record.key
