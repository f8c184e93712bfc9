"""State snapshots: every job's state and history, on disk, checksummed, two generations.

The file (``state.snapshot`` in the state dir; the previous one is ``state.snapshot.1``)
is described in :mod:`cronmetrics.storage.snapshot_format`: a checksummed index, then one
checksummed chunk per job; the files and the journal segments they cover are handled by
:mod:`cronmetrics.storage.generations`. This module is the service around them: when to write,
what to encode, how to restore.

Writing is incremental and never blocks submissions for long. The monitor counts changes
to stored states (:meth:`~cronmetrics.monitor.Monitor.mark_changed`); under the monitor
lock a snapshot copies only the jobs changed since the last one (their state values and a
copy-on-write copy of their history, O(1) each) and the list of ids. Outside the lock it
encodes those jobs, keeps every job's chunk in memory (about the file's size), and
assembles the file from the cached chunks: the cost of a snapshot follows what changed,
not the fleet's size, except for writing the bytes. A full disk leaves both generations
untouched. A restored file's chunks seed the cache, so the first snapshot after a
restart is incremental too.

``cronmetrics_snapshot_last_success_timestamp_seconds`` says when the state was last
known to be on disk: set by each write, by each interval where nothing changed since the
last good write, and by a clean restore (the alert ``CronmetricsSnapshotStale`` watches it).

Loading never stops the server: a bad checksum, a truncated file or an unknown format
version falls back to the previous generation, then to empty state, each loudly (error
log, ``cronmetrics_snapshot_restore_fallback`` = 1 and a failing ``snapshot`` check on
``/health/deep`` until a new snapshot has been written). Then the journal (see
:mod:`cronmetrics.storage.journal`) is replayed on top.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from cronmetrics.errors import StorageError
from cronmetrics.logs import get_logger, rfc3339
from cronmetrics.monitor import Monitor
from cronmetrics.storage.generations import PREVIOUS_NAME, SNAPSHOT_NAME, Generations
from cronmetrics.storage.journal import Journal, JournalEntry, replay, segments
from cronmetrics.storage.snapshot_format import (
    FORMAT_VERSION,
    Chunk,
    Copied,
    Decoded,
    SnapshotError,
    assemble,
    decode,
    encode,
    encode_job,
    gc_paused,
    state_values,
)
from cronmetrics.storage.store import Result
from cronmetrics.web.health import Check
from cronmetrics.web.metrics import SelfMetrics

if TYPE_CHECKING:
    from cronmetrics.web.app import Services

__all__ = [
    "FORMAT_VERSION",
    "SNAPSHOT_NAME",
    "Decoded",
    "SnapshotError",
    "Snapshotter",
    "decode",
    "encode",
]

log = get_logger("snapshot")


def copy_states(monitor: Monitor, ids: Iterable[str]) -> list[Copied]:
    """The state values and a copy-on-write copy of the history of ``ids``; call under
    ``monitor.lock``. O(1) per job: no column is copied here.

    The cyclic GC is paused: the new objects of a full copy would otherwise trigger
    collections that walk the whole store while the lock is held."""
    get = monitor.store.get
    out: list[Copied] = []
    with gc_paused():
        for job_id in ids:
            state = get(job_id)
            if state is not None:
                out.append((job_id, state_values(state), state.history.copy()))
    return out


@dataclass(slots=True)
class RestoreReport:
    source: str | None = None  # file the state came from; None = empty
    problems: list[str] = field(default_factory=list)
    jobs: int = 0
    results: int = 0
    journal_entries: int = 0
    seconds: float = 0.0

    @property
    def fallback(self) -> bool:
        return bool(self.problems)


class Snapshotter:
    """Owns the state dir: restore at start, periodic and final snapshots, the journal."""

    def __init__(
        self,
        monitor: Monitor,
        state_dir: Path,
        *,
        clock: Callable[[], float],
        interval: float,
        journal: bool,
        metrics: SelfMetrics,
    ) -> None:
        self.monitor = monitor
        self.state_dir = state_dir
        self.clock = clock
        self.interval = interval
        self.journal_enabled = journal
        self.metrics = metrics
        self.journal: Journal | None = None
        self.files = Generations(state_dir)
        self._write_lock = threading.Lock()
        #: every job's encoded chunk, as of ``monitor.state_seq == _cache_seq``
        self._chunks: dict[str, Chunk] = {}
        self._cache_seq = 0
        #: what state.snapshot holds: the monitor's state_seq and unmanaged jobs (None:
        #: not known to be up to date, so the next tick writes)
        self._written: tuple[int, dict[str, tuple[str, str | None]]] | None = None
        self._seq = 0  # journal_seq for the next snapshot when the journal is off
        self._stopped = False
        self.restore_report: RestoreReport | None = None
        self.last_error: str | None = None
        self.last_success: float | None = None

    # -- start -----------------------------------------------------------------------------

    @classmethod
    def for_services(cls, svc: Services) -> Snapshotter:
        """Restore the state for a new app; call before its first reload, which keeps
        the restored state of every job it (re)defines."""
        config = svc.config
        snapshotter = cls(
            svc.monitor,
            config.state_dir,
            clock=svc.clock,
            interval=config.snapshot.interval,
            journal=config.snapshot.journal,
            metrics=svc.metrics,
        )
        snapshotter.restore()
        svc.extras["snapshotter"] = snapshotter
        svc.extras.setdefault("health_checks", {})["snapshot"] = snapshotter.health
        return snapshotter

    def started(self, svc: Services) -> None:
        """After the first reload: drop orphaned states, apply the age limit, and (when the
        app runs its scheduler) start periodic snapshots, purges and the final snapshot."""
        from cronmetrics.storage.retention import PURGE_EVERY, purge_expired

        report = svc.last_reload
        if report is not None and report.ok:  # an invalid file may still claim its state
            orphans = self.monitor.prune_orphans()
            if orphans:
                log.info(
                    "dropped the state of jobs no longer defined",
                    extra={"jobs": len(orphans), "sample": orphans[:5]},
                )

        def purge() -> None:  # reads the config each time: retention.days reloads
            purge_expired(self.monitor, svc.config.retention.days, self.clock())

        purge()
        if svc.scheduler is not None:
            svc.scheduler.every(self.interval, self.tick, "snapshot")
            svc.scheduler.every(PURGE_EVERY, purge, "retention")
            svc.extras.setdefault("on_stop", []).append(self.stop)

    def restore(self) -> RestoreReport:
        """Load the newest readable generation, replay the journal; never raises."""
        started = time.perf_counter()
        report = RestoreReport()
        try:
            with gc_paused():  # many new objects: see snapshot_format.gc_paused
                self._restore(report)
        except Exception as exc:  # a bug must not keep the exporter down either
            log.exception("state restore failed; starting empty")
            report.problems.append(f"restore failed: {exc}")
            report.source = None
            self._written = None  # whatever was restored, write it at the next tick
        report.seconds = time.perf_counter() - started
        self.restore_report = report
        if report.fallback:
            self.metrics.restore_fallback.set(1)
            what = f"the previous generation {report.source}" if report.source else "EMPTY state"
            log.error(
                f"state snapshot unusable; restored {what}",
                extra={"problems": report.problems, "jobs": report.jobs},
            )
        else:
            self.metrics.restore_fallback.set(0)
            if report.source is not None:  # the state on disk is the state in memory
                self.metrics.snapshot_ts.set(self.clock())
            log.info(
                "state restored" if report.source else "no state snapshot yet; starting empty",
                extra={
                    "jobs": report.jobs,
                    "results": report.results,
                    "journal_entries": report.journal_entries,
                    "seconds": round(report.seconds, 3),
                },
            )
        if self.journal_enabled:
            self.journal = Journal(self.state_dir, self._seq)
            self.monitor.journal = self._journal_append
        return report

    def _restore(self, report: RestoreReport) -> None:
        loaded: Decoded | None = None
        files = self.files
        for path in (files.current, files.previous):
            try:
                loaded = decode(path.read_bytes())
            except (FileNotFoundError, NotADirectoryError):  # no state yet
                if path == files.current and files.previous.exists():
                    report.problems.append(f"{path.name} is missing")
                continue
            except (OSError, SnapshotError) as exc:
                report.problems.append(f"{path.name}: {exc}")
                continue
            report.source = path.name
            break
        now = self.clock()
        unmanaged: dict[str, tuple[str, str | None]] = {}
        if loaded is not None:
            self._apply(loaded, now)
            if report.source == SNAPSHOT_NAME and not report.problems:
                # as of the restored chunks: jobs marked stale by _apply make it outdated
                self._written = (self._cache_seq, dict(loaded.unmanaged))
            unmanaged.update(loaded.unmanaged)
            report.jobs, report.results = len(loaded.jobs), loaded.results
        first = loaded.journal_seq if loaded is not None else 0
        files.restored(report.source, first, clean=not report.problems)
        _, report.journal_entries = replay(
            self.state_dir, first, partial(self._replay_one, now=now, unmanaged=unmanaged)
        )
        existing = segments(self.state_dir)
        self._seq = max(first, existing[-1][0] + 1 if existing else 0)
        if unmanaged:
            self.monitor.restore_unmanaged(unmanaged, now)

    def _apply(self, loaded: Decoded, now: float) -> None:
        """Put the loaded states into the store, and their chunks into the cache where
        they encode exactly what was restored (same field layout, history not cut by a
        smaller ``max_results_per_job``); the other jobs are marked changed."""
        monitor = self.monitor
        store = monitor.store
        with monitor.lock:
            stale = []
            for job_id, (values, history) in loaded.jobs.items():
                whole = store.restore(job_id, values, history, now)
                chunk = loaded.chunks.get(job_id)
                if chunk is not None and whole:
                    self._chunks[job_id] = chunk
                else:
                    stale.append(job_id)
            self._cache_seq = monitor.state_seq
            for job_id in stale:
                monitor.mark_changed(job_id)

    def _replay_one(
        self, entry: JournalEntry, *, now: float, unmanaged: dict[str, tuple[str, str | None]]
    ) -> None:
        result = entry.result
        with self.monitor.lock:
            self.monitor.store.ensure(result.job_id, result.received)
            self.monitor.store.record(result)
            self.monitor.mark_changed(result.job_id)
        if entry.unmanaged is not None:
            unmanaged[result.job_id] = entry.unmanaged

    def _journal_append(self, results: list[Result]) -> Callable[[], None]:
        assert self.journal is not None
        monitor = self.monitor

        def unmanaged(job_id: str) -> tuple[str, str | None] | None:
            if job_id in monitor.definitions and job_id not in monitor.unmanaged:
                return None
            name, _, host = job_id.partition("@")
            return name, host or None

        return self.journal.append(results, unmanaged)

    # -- writing ---------------------------------------------------------------------------

    def write(self, *, force: bool = False) -> bool:
        """Write a snapshot if anything changed (or ``force``); return whether it did.

        When nothing changed since the last good write, the state on disk is current:
        that refreshes the snapshot timestamp metric without writing."""
        with self._write_lock:
            return self._write(force)

    def _write(self, force: bool) -> bool:
        monitor = self.monitor
        with monitor.lock:
            seq = monitor.state_seq
            unmanaged = {
                job_id: (d.job_name, d.host)
                for job_id in monitor.unmanaged
                if (d := monitor.definitions.get(job_id)) is not None
            }
            if not force and self._written == (seq, unmanaged):
                if self.last_error is None:
                    self.metrics.snapshot_ts.set(self.clock())
                return False
            ids = list(monitor.store.ids())
            changed = set(monitor.changed_since(self._cache_seq))
            changed.update(set(ids).difference(self._chunks))  # never cached: a safety net
            # many changes: in the store's order, roughly the order the columns sit
            # in memory (a hash-ordered walk of them is slower)
            many = len(changed) * 4 > len(ids)
            jobs = copy_states(monitor, [i for i in ids if i in changed] if many else changed)
            try:
                journal_seq = self.journal.rotate() if self.journal is not None else self._seq
            except OSError as exc:
                self._failed(exc)
                return False
        now = self.clock()
        self._encode(jobs, seq)
        del jobs
        chunks = self._chunks
        self._chunks = {job_id: chunks[job_id] for job_id in ids}  # forget dropped jobs
        try:
            data = assemble(
                ((job_id, chunks[job_id]) for job_id in ids),
                written_at=now,
                journal_seq=journal_seq,
                unmanaged=unmanaged,
            )
            self.files.publish(data, journal_seq)
        except OSError as exc:
            self._failed(exc)
            return False
        self._succeeded(now, (seq, unmanaged))
        return True

    def _encode(self, jobs: list[Copied], seq: int) -> None:
        """Re-encode the changed jobs into the cache, which then reflects ``seq``."""
        with gc_paused():
            fresh = {job_id: encode_job(values, history) for job_id, values, history in jobs}
        self._chunks.update(fresh)
        self._cache_seq = seq

    def scrub(self) -> None:
        """After a manual purge, take the purged results off the disk too: write the state,
        make it the previous generation as well, and delete the journal segments before it.

        Otherwise the previous generation (and, with the journal, older segments) would
        keep them until two more snapshots happen, which a quiet server may never write.
        Raises :class:`StorageError` when the write fails (the purge holds in memory)."""
        with self._write_lock:
            self._write(force=True)
            if self.last_error is not None:
                raise StorageError(
                    f"purged in memory, but the state on disk could not be rewritten "
                    f"({self.last_error}); it still holds the purged results"
                )
            try:
                self.files.previous_from_current()
            except OSError as exc:
                raise StorageError(
                    f"purged in memory and in {SNAPSHOT_NAME}, but {PREVIOUS_NAME} could not "
                    f"be replaced ({exc}); it still holds the purged results"
                ) from None

    def _failed(self, exc: OSError) -> None:
        self.last_error = f"{rfc3339(self.clock())}: {exc}"
        self.metrics.snapshot_ok.set(0)
        log.error(
            "snapshot write failed; the previous snapshot is kept",
            extra={"error": str(exc), "state_dir": str(self.state_dir)},
        )

    def _succeeded(
        self, now: float, written: tuple[int, dict[str, tuple[str, str | None]]]
    ) -> None:
        self._written = written
        self.last_error = None
        self.last_success = now
        self.metrics.snapshot_ok.set(1)
        self.metrics.snapshot_ts.set(now)

    # -- lifecycle -------------------------------------------------------------------------

    def tick(self) -> None:
        if not self._stopped:
            self.write()

    def stop(self) -> None:
        """Final snapshot (SIGTERM), then close the journal."""
        if self._stopped:
            return
        started = time.perf_counter()
        wrote = self.write()
        self._stopped = True
        where = {"state_dir": str(self.state_dir), "jobs": len(list(self.monitor.store.ids()))}
        if self.last_error is not None:
            log.error("final snapshot failed; the previous one is on disk", extra=where)
        else:
            log.info(
                "final snapshot written" if wrote else "state on disk already current",
                extra={**where, "seconds": round(time.perf_counter() - started, 3)},
            )
        if self.journal is not None:
            self.journal.close()

    def health(self) -> Check:
        """The ``snapshot`` check of ``/health/deep``: a failing write fails readiness (the
        state cannot be persisted); a restore that fell back only warns, since the server
        serves from what it could restore."""
        if self.last_error is not None:
            return Check(
                False, f"last snapshot write failed at {self.last_error}; previous one kept"
            )
        report = self.restore_report
        if report is not None and report.fallback and self.last_success is None:
            what = f"previous generation {report.source}" if report.source else "EMPTY state"
            problems = "; ".join(report.problems)
            return Check(
                False, f"snapshot unusable at start, restored {what}: {problems}", critical=False
            )
        if self.last_success is not None:
            return Check(True, f"last written {rfc3339(self.last_success)}")
        return Check(True, "no snapshot written yet")
