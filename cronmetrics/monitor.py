"""The live view of every job: definitions, states and current evaluations.

One lock guards the monitor's own data: the definitions, the newest
:class:`~cronmetrics.storage.interface.JobState` value of each job (as the store last
returned it) and the evaluations. The store is reached only through
:class:`~cronmetrics.storage.interface.Store`, and never while that lock is held: a
submission resolves its jobs under the lock, records through the store without it (the
store may write to disk or a network), then re-evaluates under the lock again, keeping of
two states of a job the one with the higher ``version``. Each evaluation says when it next
changes by itself, and a heap of those times lets :meth:`Monitor.tick` touch only the jobs
whose deadline actually passed, never scanning all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cronmetrics.errors import CronmetricsError, NotFound, Problem, ValidationError
from cronmetrics.evaluator import Evaluation, evaluate
from cronmetrics.jobs.model import JobDefinition, Lifecycle, ResultIn
from cronmetrics.storage.history import tail
from cronmetrics.storage.interface import JobState, Recorded, Result, RunOutput, Store
from cronmetrics.storage.store import EmbeddedStore
from cronmetrics.storage.transitions import running_finishes
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
        store: Store | None = None,
        *,
        accept_unknown: bool = False,
        max_output_bytes: int = 10_000,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.store: Store = store if store is not None else EmbeddedStore()
        self.accept_unknown = accept_unknown
        self.max_output_bytes = max_output_bytes
        self.redact = redact
        self.definitions: dict[str, JobDefinition] = {}
        self.unmanaged: set[str] = set()
        self.evaluations: dict[str, Evaluation] = {}
        #: the newest state of each defined job, as the store returned it
        self._states: dict[str, JobState] = {}
        self._heap: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        self._dirty: set[str] = set()
        #: bumped on every change; lets readers cache cheaply
        self.version = 0
        self._listeners: list[Callable[[], None]] = []
        self._counts_cache: tuple[tuple[int, int], dict[str, Any]] | None = None
        #: where :meth:`sync` left the store's change stream
        self._cursor = ""
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

    # -- internal ------------------------------------------------------------------------

    def _keep(self, state: JobState) -> bool:
        """Take ``state`` unless a newer one of the job is held; call under the lock."""
        held = self._states.get(state.job_id)
        if held is not None and held.version > state.version:
            return False
        self._states[state.job_id] = state
        return True

    def _reevaluate(self, job_id: str, now: float) -> None:
        definition = self.definitions[job_id]
        evaluation = evaluate(
            definition, self._states[job_id], now, self._job_windows.get(job_id, ())
        )
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
        """Swap in a new set of definitions. Jobs that lose theirs are detached in the
        store (kept, not exported, for ``retention.days``); a returning id gets its state
        back. Callers serialize reloads (one at a time)."""
        diff = ReloadDiff()
        with self.lock:
            for job_id in self.definitions:
                if job_id not in definitions and job_id not in self.unmanaged:
                    diff.removed.append(job_id)
            todo: list[tuple[str, JobDefinition, bool]] = []
            for job_id, definition in definitions.items():
                old = self.definitions.get(job_id)
                if old == definition and job_id not in self.unmanaged:
                    continue
                resumed = False
                if old is not None:
                    was = self.evaluations[job_id].lifecycle
                    resumed = was != Lifecycle.ACTIVE and definition.status == Lifecycle.ACTIVE
                todo.append((job_id, definition, resumed))
        # the store, without the lock
        if diff.removed:
            self.store.detach(diff.removed, now)
        states = self.store.ensure_many([job_id for job_id, _, resumed in todo if not resumed], now)
        for job_id, _, resumed in todo:
            if resumed:
                states[job_id] = self.store.activate(job_id, now)
        with self.lock:
            for job_id in diff.removed:
                self._forget(job_id)
            for job_id, definition, _ in todo:
                if job_id in self.definitions and job_id not in self.unmanaged:
                    diff.changed.append(job_id)
                else:
                    diff.added.append(job_id)
                self._keep(states[job_id])
                self.unmanaged.discard(job_id)
                self.definitions[job_id] = definition
                self._match_windows(job_id)
                self._reevaluate(job_id, now)
        if diff:
            self._notify()
        return diff

    def _forget(self, job_id: str) -> None:
        """Stop serving ``job_id`` (its stored state is the store's business)."""
        self.definitions.pop(job_id, None)
        self._job_windows.pop(job_id, None)
        self._matchable.pop(job_id, None)
        self.evaluations.pop(job_id, None)
        self._scheduled.pop(job_id, None)
        self._states.pop(job_id, None)
        self.unmanaged.discard(job_id)
        self._dirty.add(job_id)
        self.version += 1

    def drop(self, job_id: str) -> None:
        """Delete a job at once, state and history (a delete through the API or CLI)."""
        with self.lock:
            if job_id in self.definitions and job_id not in self.unmanaged:
                return  # still defined (a concurrent re-create): keep it
            self._forget(job_id)
        self.store.drop(job_id)

    # -- submissions ---------------------------------------------------------------------

    def reconfigure(
        self,
        *,
        accept_unknown: bool,
        max_output_bytes: int,
        redact: Callable[[str], str] | None,
        max_results_per_job: int,
    ) -> None:
        """Apply a reloaded config's submission policy. A shorter history limit cuts every
        job's history at once."""
        with self.lock:
            self.accept_unknown = accept_unknown
            self.max_output_bytes = max_output_bytes
            self.redact = redact
        self.store.set_max_results(max_results_per_job)

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
        return tail(output, limit)

    def submit(
        self,
        results: Sequence[ResultIn],
        now: float,
        *,
        index_errors: bool = False,
        authorize: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Record results all-or-nothing; return the job id each one went to.

        A result repeating a retained ``(run_id, status)`` of its job (a client's retry)
        is acknowledged like the first and not counted again."""
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
        recorded = self._record_with_output(records, now)  # the store's I/O: no lock held
        with self.lock:
            for outcome, item in zip(recorded, results, strict=True):
                job_id = outcome.result.job_id
                if job_id not in self.definitions:
                    if not self.accept_unknown or self.resolve(item.job_name, item.host):
                        continue  # its definition went meanwhile: stored, not served
                    self.definitions[job_id] = _unmanaged_definition(item.job_name, item.host)
                    self.unmanaged.add(job_id)
                    self._match_windows(job_id)
                if self._keep(outcome.state) or job_id not in self.evaluations:
                    self._reevaluate(job_id, now)
        self._notify()
        return targets

    def _record_with_output(self, records: list[Result], now: float) -> list[Recorded]:
        """Record; a finish that ends a run which logged output (``/ping/.../log``) takes
        that output in front of its own. Recording failed: the output goes back."""
        finishes = running_finishes(records)
        if not finishes:
            return self.store.record(records, now)
        recorded = self.store.record_unlogged(records, now)  # one round trip, usually
        if recorded is not None:
            return recorded
        taken = self.store.take_outputs(finishes)
        if taken:
            pending = dict(taken)
            records = [
                self._joined(r, output)
                if r.status != "start" and (output := pending.pop(r.job_id, None))
                else r
                for r in records
            ]
        try:
            return self.store.record(records, now)
        except BaseException:
            for output in taken.values():
                with contextlib.suppress(CronmetricsError):
                    self.store.restore_output(output)
            raise

    def _joined(self, result: Result, output: RunOutput) -> Result:
        """``result`` with the run's logged output before its own (one line apart),
        redacted again (a secret may straddle two pieces) and cut to the stored tail."""
        text, own = output.text, result.output or ""
        if text and own and not text.endswith("\n"):
            text += "\n"
        return dataclasses.replace(result, output=self._clean_output(text + own) or None)

    def append_output(
        self,
        job_name: str,
        host: str | None,
        text: str,
        *,
        run_id: str | None,
        now: float,
        authorize: Callable[[str], None] | None = None,
    ) -> RunOutput:
        """Append to the output of the job's running run (``/ping/<key>/<id>/log``),
        redacted and bounded like a finish's output; see :meth:`Store.append_output`.

        The store keeps the redaction margin beyond the stored tail: a secret split over
        two appends ("...DB_PASSWORD=" then "hunter2 ...") matches only once they are
        joined, and a cut at exactly the stored limit could fall inside it, leaving
        "SSWORD=hunter2" that no pattern matches any more. The finish and
        :meth:`run_output` redact the joined text, then cut it."""
        with self.lock:
            job_id = self.resolve(job_name, host)
            name = f"{job_name}@{host}" if host else job_name
            if authorize is not None:
                authorize(job_id or name)
            if job_id is None:
                raise NotFound(f"unknown job {name!r}", field="job_name")
            limit, cleaned = self.max_output_bytes + REDACT_MARGIN, self._clean_output(text) or ""
        return self.store.append_output(job_id, cleaned, run_id=run_id, limit=limit, now=now)

    def run_output(self, job_id: str) -> str | None:
        """What the job's running run has logged so far, as its finish would store it:
        redacted as a whole (a secret may straddle two appends) and cut to the tail."""
        logged = self.store.run_output(job_id)
        return None if logged is None else self._clean_output(logged.text)

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
        if window.start >= window.end:
            return
        with self.lock:
            late = [
                j
                for j in self.selected_by(window)
                if (s := self._states.get(j)) is not None and s.active_since < window.end
            ]
        states = [self.store.activate(job_id, window.end) for job_id in late]  # no lock
        with self.lock:
            for state in states:
                if state.job_id in self.definitions:
                    self._keep(state)

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
        """Drop history entries stamped before ``before`` (all jobs, or one, see
        :meth:`purge_job`); count them. Durable when it returns (the store's guarantee)."""
        if job_id is not None:
            return self.purge_job(before, job_id)[0]
        removed = self.store.purge(before)
        if removed:
            with self.lock:
                self.version += 1
        return removed

    def purge_job(self, before: float, job_id: str) -> tuple[int, bool]:
        """Purge one job's history; return (results removed, whether the job was dropped).

        A detached job (its file is gone; the store keeps it only so that a file that
        blinks gets its history back) is dropped whole, state and counters included: an
        operator who purges a job nobody defines wants it gone, and the offline
        ``cronmetrics purge --job`` does the same."""
        state = self.store.state(job_id)
        if state is None:
            raise NotFound(f"job {job_id!r} not found")
        removed = self.store.purge(before, [job_id])
        dropped = False
        if state.detached_since is not None:
            with self.lock:
                gone = job_id not in self.definitions  # not defined again meanwhile
            if gone and (now := self.store.state(job_id)) is not None and now.detached_since:
                dropped = self.store.drop(job_id)
        if removed or dropped:
            with self.lock:
                self.version += 1
        return removed, dropped

    def purge_jobs(self, before: float, job_ids: Iterable[str]) -> int:
        """:meth:`purge_history` of several jobs at once (one durable purge)."""
        removed = self.store.purge(before, list(job_ids))
        if removed:
            with self.lock:
                self.version += 1
        return removed

    def adopt_stored(self, now: float) -> list[str]:
        """After the first reload at start: stored jobs no definition claims. In accept
        mode the ones that reported without a definition are served again (unmanaged);
        the others are detached (kept for ``retention.days``, then expired). Returns the
        ids detached now."""
        states = self.store.states()
        with self.lock:
            orphans = [j for j in states if j not in self.definitions]
            adopt = [j for j in orphans if self.accept_unknown and states[j].detached_since is None]
            for job_id in adopt:
                name, _, host = job_id.partition("@")
                self.definitions[job_id] = _unmanaged_definition(name, host or None)
                self.unmanaged.add(job_id)
                self._keep(states[job_id])
                self._match_windows(job_id)
                self._reevaluate(job_id, now)
        detach = [j for j in orphans if j not in adopt and states[j].detached_since is None]
        self.store.detach(detach, now)
        return detach

    def sync(self, now: float) -> list[str]:
        """Take in the store's changes made elsewhere (another replica); return the ids
        re-evaluated. Cheap when nothing changed.

        Only a store shared with other processes needs it: with Redis, ``create_app``
        calls it on every batch of the change stream and once a second. The embedded
        engine lives in this process (the state dir's lock keeps every other one out)
        and every change of a served job's state goes through this monitor (retention
        only drops jobs nobody serves), so nothing schedules a sync for it."""
        ids, cursor = self.store.changes(self._cursor)
        with self.lock:
            wanted = [j for j in ids if j in self.definitions]
        states = self.store.states(wanted) if wanted else {}
        changed = []
        with self.lock:
            self._cursor = cursor
            for job_id, state in states.items():
                held = self._states.get(job_id)
                if held is not None and held.version >= state.version:
                    continue  # this process's own write, evaluated when it was made
                if job_id in self.definitions and self._keep(state):
                    self._reevaluate(job_id, now)
                    changed.append(job_id)
        return changed

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

    def ids(self) -> list[str]:
        """Every served job id (defined or unmanaged), a copy."""
        with self.lock:
            return list(self.definitions)

    def view(self, job_id: str) -> JobView:
        with self.lock:
            definition = self.definitions.get(job_id)
            state = self._states.get(job_id)
            if definition is None or state is None:
                raise NotFound(f"job {job_id!r} not found")
            return JobView(
                job_id, definition, state, self.evaluations[job_id], job_id in self.unmanaged
            )

    def views(self, ids: Iterable[str] | None = None) -> list[JobView]:
        with self.lock:
            chosen = list(self.definitions) if ids is None else list(ids)
            out = []
            for job_id in chosen:
                definition = self.definitions.get(job_id)
                state = self._states.get(job_id)
                if definition is None or state is None:
                    continue
                out.append(
                    JobView(
                        job_id,
                        definition,
                        state,
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
