"""The live view of every job: definitions, states and current evaluations.

One lock guards it all. Submissions, reloads and the deadline tick change it; the
exposition and the read API look at it. Each evaluation says when it next changes by
itself, and a heap of those times lets :meth:`Monitor.tick` touch only the jobs whose
deadline actually passed, never scanning all of them.
"""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cronmetrics.errors import NotFound, Problem, ValidationError
from cronmetrics.evaluator import Evaluation, evaluate
from cronmetrics.jobs.model import JobDefinition, Lifecycle, ResultIn
from cronmetrics.storage.store import JobState, MemoryStore, Result, ResultStore
from cronmetrics.windows import Window, job_labels

__all__ = ["FUTURE_TOLERANCE", "JobView", "Monitor", "ReloadDiff"]

#: results stamped further in the future than this are rejected (clock skew guard)
FUTURE_TOLERANCE = 300.0
#: characters redacted in front of the stored tail: longer than any secret a default
#: pattern matches (a 4096-bit RSA key in PEM is about 3.3 kB)
REDACT_MARGIN = 16_384


@dataclass(frozen=True, slots=True)
class JobView:
    """A consistent copy of one job, safe to read outside the lock."""

    id: str
    definition: JobDefinition
    state: JobState
    evaluation: Evaluation
    unmanaged: bool = False


@dataclass(slots=True)
class ReloadDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def _unmanaged_definition(job_name: str, host: str | None) -> JobDefinition:
    """A stand-in definition for a job nobody declared (``unknown_jobs: accept``)."""
    return JobDefinition.model_construct(
        job_name=job_name,
        host=host,
        automatic_failure_threshold=None,
        schedule=None,
        timezone="UTC",
        grace=300,
        max_runtime=None,
        labels={},
        status=Lifecycle.ACTIVE,
        maintenance_until=None,
        description="reported without a definition (unknown_jobs: accept)",
    )


class Monitor:
    def __init__(
        self,
        store: ResultStore | None = None,
        *,
        accept_unknown: bool = False,
        max_output_bytes: int = 10_000,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.store: ResultStore = store if store is not None else MemoryStore()
        self.accept_unknown = accept_unknown
        self.max_output_bytes = max_output_bytes
        self.redact = redact
        self.definitions: dict[str, JobDefinition] = {}
        self.unmanaged: set[str] = set()
        self.evaluations: dict[str, Evaluation] = {}
        self._heap: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        self._dirty: set[str] = set()
        #: bumped on every change; lets readers cache cheaply
        self.version = 0
        self._listeners: list[Callable[[], None]] = []
        #: durability hook (:mod:`cronmetrics.storage.journal`): called under the lock with the
        #: validated results before they are recorded (raising refuses the submission);
        #: returns a commit run after the lock is released, before submit() returns
        self.journal: Callable[[list[Result]], Callable[[], None]] | None = None
        self._counts_cache: tuple[tuple[int, int], dict[str, Any]] | None = None
        #: bumped on every change to a stored state or history (not on re-evaluations);
        #: with :meth:`changed_since` it lets snapshots re-encode only the changed jobs
        self.state_seq = 0
        self._state_changes: dict[str, int] = {}  # id -> state_seq of its last change, oldest first
        #: runtime maintenance windows by id, and per job the ones whose matchers select it
        self.windows: dict[str, Window] = {}
        self._job_windows: dict[str, tuple[Window, ...]] = {}
        #: what matchers see of each job, per definition (building it is most of a match)
        self._matchable: dict[str, tuple[JobDefinition, dict[str, str]]] = {}

    # -- change notification -------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (no lock held) after any change; used to wake the scheduler."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    def take_dirty(self) -> set[str]:
        """Ids changed since the last call (removed ones included); for the exposition."""
        with self.lock:
            dirty, self._dirty = self._dirty, set()
            return dirty

    def mark_changed(self, job_id: str) -> None:
        """Record that ``job_id``'s stored state or history changed; call under the lock."""
        self.state_seq += 1
        changes = self._state_changes
        changes.pop(job_id, None)  # re-inserted at the end: the dict stays ordered by change
        changes[job_id] = self.state_seq

    def _dropped(self, job_id: str) -> None:
        self.store.drop(job_id)
        self._state_changes.pop(job_id, None)
        self.state_seq += 1

    def changed_since(self, seq: int) -> list[str]:
        """Ids whose state changed after :attr:`state_seq` was ``seq`` (dropped ones are not
        listed, they are simply gone from the store); call under the lock. Walks only the
        changed jobs, newest first."""
        changes = self._state_changes
        out = []
        for job_id in reversed(changes):
            if changes[job_id] <= seq:
                break
            out.append(job_id)
        return out

    # -- internal ------------------------------------------------------------------------

    def _reevaluate(self, job_id: str, now: float) -> None:
        definition = self.definitions[job_id]
        state = self.store.get(job_id)
        assert state is not None
        evaluation = evaluate(definition, state, now, self._job_windows.get(job_id, ()))
        self.evaluations[job_id] = evaluation
        self._dirty.add(job_id)
        self.version += 1
        when = evaluation.next_change
        if when is not None and self._scheduled.get(job_id) != when:
            self._scheduled[job_id] = when
            heapq.heappush(self._heap, (when, job_id))
            if len(self._heap) > 4 * len(self.definitions) + 64:
                self._compact()
        elif when is None:
            self._scheduled.pop(job_id, None)

    def _compact(self) -> None:
        self._heap = [(t, j) for j, t in self._scheduled.items()]
        heapq.heapify(self._heap)

    # -- definitions ---------------------------------------------------------------------

    def apply_definitions(self, definitions: Mapping[str, JobDefinition], now: float) -> ReloadDiff:
        """Swap in a new set of definitions; states of surviving ids are kept."""
        diff = ReloadDiff()
        with self.lock:
            for job_id in list(self.definitions):
                if job_id not in definitions and job_id not in self.unmanaged:
                    diff.removed.append(job_id)
                    self._forget(job_id)
            for job_id, definition in definitions.items():
                old = self.definitions.get(job_id)
                if old == definition and job_id not in self.unmanaged:
                    continue
                created = self.store.get(job_id) is None
                state = self.store.ensure(job_id, now)
                if created:
                    self.mark_changed(job_id)
                if old is None:
                    diff.added.append(job_id)
                else:
                    diff.changed.append(job_id)
                    was = evaluate(old, state, now).lifecycle
                    if was != Lifecycle.ACTIVE and definition.status == Lifecycle.ACTIVE:
                        state.active_since = now
                        self.mark_changed(job_id)
                self.unmanaged.discard(job_id)
                self.definitions[job_id] = definition
                self._match_windows(job_id)
                self._reevaluate(job_id, now)
        if diff:
            self._notify()
        return diff

    def _forget(self, job_id: str) -> None:
        self.definitions.pop(job_id, None)
        self._job_windows.pop(job_id, None)
        self._matchable.pop(job_id, None)
        self.evaluations.pop(job_id, None)
        self._scheduled.pop(job_id, None)
        self.unmanaged.discard(job_id)
        self._dropped(job_id)
        self._dirty.add(job_id)
        self.version += 1

    # -- submissions ---------------------------------------------------------------------

    def reconfigure(
        self,
        *,
        accept_unknown: bool,
        max_output_bytes: int,
        redact: Callable[[str], str] | None,
        max_results_per_job: int,
    ) -> None:
        """Apply a reloaded config's submission policy. A shorter history limit cuts the
        histories at once (and marks them for the next snapshot)."""
        with self.lock:
            self.accept_unknown = accept_unknown
            self.max_output_bytes = max_output_bytes
            self.redact = redact
            store = self.store
            if isinstance(store, MemoryStore) and store.max_results != max_results_per_job:
                for job_id in store.set_max_results(max_results_per_job):
                    self.mark_changed(job_id)

    def resolve(self, job_name: str, host: str | None) -> str | None:
        """``name@host`` when that is defined, else the host-agnostic ``name``."""
        if host:
            specific = f"{job_name}@{host}"
            if specific in self.definitions:
                return specific
        if job_name in self.definitions and self.definitions[job_name].host is None:
            return job_name
        return None

    def _clean_output(self, output: str | None) -> str | None:
        """Keep the stored tail, redacted. Only the tail plus a margin is redacted: a 1 MB
        output costs what 10 kB does, and a secret straddling the final cut still lies
        whole inside the margin, so it is matched before the cut can halve it."""
        if output is None:
            return None
        limit = self.max_output_bytes
        window = limit + REDACT_MARGIN  # characters: at least as many bytes
        if len(output) > window:
            output = output[-window:]
        if self.redact is not None:
            output = self.redact(output)
        raw = output.encode("utf-8", "replace")
        if len(raw) > limit:
            output = raw[len(raw) - limit :].decode("utf-8", "ignore")
        return output

    def submit(
        self,
        results: Sequence[ResultIn],
        now: float,
        *,
        index_errors: bool = False,
        authorize: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Record results all-or-nothing; return the job id each one went to."""
        problems = []
        for index, item in enumerate(results):
            if item.timestamp is not None and item.timestamp.timestamp() > now + FUTURE_TOLERANCE:
                field = f"[{index}].timestamp" if index_errors else "timestamp"
                problems.append(
                    Problem(
                        "timestamp is more than 5 minutes in the future (check the clock)",
                        field=field,
                    )
                )
        if problems:
            raise ValidationError(problems)
        with self.lock:
            targets: list[str] = []
            for index, item in enumerate(results):
                job_id = self.resolve(item.job_name, item.host)
                if job_id is None:
                    if authorize is not None:  # outside its globs: 403, never a 404 hint
                        authorize(f"{item.job_name}@{item.host}" if item.host else item.job_name)
                    if not self.accept_unknown:
                        where = f" (item {index})" if index_errors else ""
                        name = f"{item.job_name}@{item.host}" if item.host else item.job_name
                        raise NotFound(f"unknown job {name!r}{where}", field="job_name")
                    job_id = f"{item.job_name}@{item.host}" if item.host else item.job_name
                if authorize is not None:
                    authorize(job_id)
                targets.append(job_id)
            records = [
                Result(
                    job_id=job_id,
                    status=str(item.status),
                    timestamp=item.timestamp.timestamp() if item.timestamp is not None else now,
                    received=now,
                    host=item.host,
                    duration=item.duration,
                    exit_code=item.exit_code,
                    run_id=item.run_id,
                    output=self._clean_output(item.output),
                    labels=item.labels,
                )
                for job_id, item in zip(targets, results, strict=True)
            ]
            commit = self.journal(records) if self.journal is not None else None
            for record, item in zip(records, results, strict=True):
                job_id = record.job_id
                if job_id not in self.definitions:
                    self.definitions[job_id] = _unmanaged_definition(item.job_name, item.host)
                    self.unmanaged.add(job_id)
                    self.store.ensure(job_id, now)
                    self._match_windows(job_id)
                self.store.record(record)
                self.mark_changed(job_id)
                self._reevaluate(job_id, now)
        if commit is not None:
            commit()  # fsync outside the lock: concurrent submissions share it
        self._notify()
        return targets

    # -- maintenance windows -------------------------------------------------------------

    def _labels_of(self, job_id: str) -> dict[str, str]:
        definition = self.definitions[job_id]
        cached = self._matchable.get(job_id)
        if cached is None or cached[0] is not definition:
            cached = (definition, job_labels(definition))
            self._matchable[job_id] = cached
        return cached[1]

    def _match_windows(self, job_id: str) -> bool:
        """Recompute which windows select ``job_id``; return whether that changed."""
        labels = self._labels_of(job_id)
        chosen = tuple(w for w in self.windows.values() if w.selects(labels))
        before = self._job_windows.get(job_id, ())
        if chosen:
            self._job_windows[job_id] = chosen
        else:
            self._job_windows.pop(job_id, None)
        return chosen != before

    def set_windows(self, windows: Iterable[Window], now: float) -> list[str]:
        """Make ``windows`` the runtime maintenance windows (pending, active and recently
        expired ones: an expired window still says since when deadlines count); return
        the ids of the jobs whose windows changed (they are re-evaluated at ``now``)."""
        with self.lock:
            fresh = {w.id: w for w in windows}
            if fresh == self.windows:
                return []
            self.windows = fresh
            changed = [j for j in self.definitions if self._match_windows(j)]
            for job_id in changed:
                self._reevaluate(job_id, now)
            if changed:
                self.version += 1
        if changed:
            self._notify()
        return changed

    def settle_window(self, window: Window) -> None:
        """Before an expired window is forgotten: the jobs it covered keep counting their
        deadlines from its end (as if they had been resumed then)."""
        with self.lock:
            if window.start >= window.end:
                return
            for job_id in self.selected_by(window):
                state = self.store.get(job_id)
                if state is not None and state.active_since < window.end:
                    state.active_since = window.end
                    self.mark_changed(job_id)

    def selected_by(self, window: Window) -> list[str]:
        """Ids of the jobs ``window``'s matchers select now, sorted."""
        with self.lock:
            return sorted(j for j in self.definitions if window.selects(self._labels_of(j)))

    def window_counts(self, now: float) -> dict[str, int]:
        """Windows per state at ``now`` (``cronmetrics_maintenance_windows``)."""
        counts = {"active": 0, "pending": 0, "expired": 0}
        with self.lock:
            for window in self.windows.values():
                counts[window.state(now)] += 1
        return counts

    # -- history and durability ----------------------------------------------------------

    def purge_history(self, before: float, job_id: str | None = None) -> int:
        """Drop history entries stamped before ``before`` (all jobs, or one); count them."""
        with self.lock:
            if job_id is not None and self.store.get(job_id) is None:
                raise NotFound(f"job {job_id!r} not found")
            removed = 0
            for jid in [job_id] if job_id is not None else list(self.store.ids()):
                gone = self.store.purge(before, jid)
                if gone:
                    removed += gone
                    self.mark_changed(jid)
            if removed:
                self.version += 1
            return removed

    def restore_unmanaged(self, jobs: Mapping[str, tuple[str, str | None]], now: float) -> None:
        """Re-create restored jobs that were reported without a definition (accept mode)."""
        if not self.accept_unknown:
            return
        with self.lock:
            for job_id, (job_name, host) in jobs.items():
                if job_id in self.definitions or self.store.get(job_id) is None:
                    continue
                self.definitions[job_id] = _unmanaged_definition(job_name, host)
                self.unmanaged.add(job_id)
                self._match_windows(job_id)
                self._reevaluate(job_id, now)

    def prune_orphans(self) -> list[str]:
        """Drop stored states no definition claims (jobs deleted while the server was down)."""
        with self.lock:
            orphans = [j for j in self.store.ids() if j not in self.definitions]
            for job_id in orphans:
                self._dropped(job_id)
            return orphans

    # -- time ----------------------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        with self.lock:
            while self._heap:
                when, job_id = self._heap[0]
                if self._scheduled.get(job_id) == when:
                    return when
                heapq.heappop(self._heap)
            return None

    def tick(self, now: float) -> list[str]:
        """Re-evaluate the jobs whose next change is due; return their ids."""
        changed = []
        with self.lock:
            while self._heap and self._heap[0][0] <= now:
                when, job_id = heapq.heappop(self._heap)
                if self._scheduled.get(job_id) != when or job_id not in self.definitions:
                    continue
                del self._scheduled[job_id]
                before = self.evaluations.get(job_id)
                self._reevaluate(job_id, now)
                if before != self.evaluations[job_id]:
                    changed.append(job_id)
        return changed

    # -- reading -------------------------------------------------------------------------

    def view(self, job_id: str) -> JobView:
        with self.lock:
            definition = self.definitions.get(job_id)
            state = self.store.get(job_id)
            if definition is None or state is None:
                raise NotFound(f"job {job_id!r} not found")
            return JobView(
                job_id,
                definition,
                state.copy(),
                self.evaluations[job_id],
                job_id in self.unmanaged,
            )

    def views(self, ids: Iterable[str] | None = None) -> list[JobView]:
        with self.lock:
            chosen = list(self.definitions) if ids is None else list(ids)
            out = []
            for job_id in chosen:
                definition = self.definitions.get(job_id)
                state = self.store.get(job_id)
                if definition is None or state is None:
                    continue
                shallow = JobState(
                    **{
                        k: getattr(state, k)
                        for k in JobState.__dataclass_fields__
                        if k != "history"
                    }
                )
                out.append(
                    JobView(
                        job_id,
                        definition,
                        shallow,
                        self.evaluations[job_id],
                        job_id in self.unmanaged,
                    )
                )
            return out

    def counts(self) -> dict[str, Any]:
        """Jobs per lifecycle and failing; cached per :attr:`version` (every scrape asks)."""
        with self.lock:
            key = (self.version, len(self.definitions))
            cached = self._counts_cache
            if cached is not None and cached[0] == key:
                return {**cached[1], "by_status": dict(cached[1]["by_status"])}
            by_status: dict[str, int] = {"active": 0, "maintenance": 0, "paused": 0, "retired": 0}
            failing = 0
            tally = Counter((e.lifecycle, e.value) for e in self.evaluations.values())
            for (lifecycle, value), n in tally.items():
                by_status[lifecycle] = by_status.get(lifecycle, 0) + n
                failing += n if value == 0 else 0
            result = {"by_status": by_status, "failing": failing, "jobs": len(self.definitions)}
            self._counts_cache = (key, {**result, "by_status": dict(by_status)})
            return result
