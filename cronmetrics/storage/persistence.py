"""Opening the embedded engine on a state dir, and keeping ``state.db`` current.

:func:`open_store` never stops the server: a database that cannot be opened or read
(corrupt, truncated, not a database, from a newer cronmetrics) is renamed aside
(``state.db.corrupt-<time>``) and the server starts empty, saying so in the log, in
``cronmetrics_snapshot_restore_fallback`` and in the ``store`` check of ``/health/deep``;
a state dir that cannot be written (read-only, missing) leaves the engine in memory, with
readiness failing until a restart finds it writable.

While serving, :class:`Persistence` guards the state dir before every write and once a
second (:meth:`Persistence.guard`): a state dir deleted (``rm -rf``) or a ``state.lock``
deleted or replaced is re-created and locked again, and a deleted ``state.db`` is made
anew from what the server holds in memory (every state, the retained history, the last
good definitions, the runtime records), in one transaction, logged as a warning. If
another process holds the new lock (a second server started meanwhile), the state dir
is lost to it: this server writes nothing there any more, fails readiness naming the
state dir and the holder, and reports ``cronmetrics_snapshot_last_write_successful 0``
until it is stopped. A ``state.db`` *replaced* by another file under a running server
(a restore done without stopping it) is not overwritten: writes fail and readiness says
to restart the server.

:class:`Persistence` runs the periodic write (``snapshot.interval``) and keeps the
exporter's own storage metrics (names kept from the snapshot era so dashboards and the
``CronmetricsSnapshotStale`` alert keep working):
``cronmetrics_snapshot_last_success_timestamp_seconds`` (state known durable: written, or
nothing left to write), ``cronmetrics_snapshot_last_write_successful``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Gauge

from cronmetrics.errors import StorageError
from cronmetrics.logs import get_logger, rfc3339
from cronmetrics.storage.database import DB_NAME, Database, Loaded, set_aside
from cronmetrics.storage.statedir import StateDirLock
from cronmetrics.storage.store import EmbeddedStore

__all__ = ["OpenReport", "Persistence", "StorageGauges", "open_store"]

log = get_logger("storage")


@dataclass(slots=True)
class OpenReport:
    """What opening the state dir found."""

    path: Path
    jobs: int = 0
    results: int = 0
    seconds: float = 0.0
    #: jobs whose history came from the cache of the last clean shutdown
    cached: int = 0
    #: the database was unusable and set aside: the server started empty
    fallback: str | None = None
    set_aside: Path | None = None
    #: no database could be opened at all: in memory only
    unavailable: str | None = None
    problems: list[str] = field(default_factory=list)


def open_store(
    state_dir: Path, max_results_per_job: int, *, durable: bool, now: float
) -> tuple[EmbeddedStore, OpenReport]:
    """The embedded engine on ``state_dir/state.db``, loaded; never raises for a bad
    file (see the module docstring)."""
    started = time.perf_counter()
    path = state_dir / DB_NAME
    report = OpenReport(path)
    with _no_collection():
        database, loaded, store = None, None, None
        try:
            database, loaded = _open(path, durable, max_results_per_job)
            # a damaged row (a hand edit) shows when the histories are built from it
            store = EmbeddedStore(max_results_per_job, database, durable=durable, loaded=loaded)
        except (sqlite3.DatabaseError, ValueError, TypeError, AttributeError, OverflowError) as exc:
            if database is not None:
                database.conn.close()
            database, loaded = None, None
            report.fallback = f"{path.name} is unusable ({exc})"
            try:
                report.set_aside = set_aside(path, now)
                database, loaded = _open(path, durable, max_results_per_job)
            except (OSError, sqlite3.Error) as again:
                report.unavailable = f"cannot create a new {path.name}: {again}"
        except OSError as exc:
            report.unavailable = f"cannot open {path}: {exc}"
        if store is None:
            store = EmbeddedStore(max_results_per_job, database, durable=durable, loaded=loaded)
    if loaded is not None and loaded.cache_problem:
        log.warning(
            "history cache unusable; histories read from the results instead",
            extra={"problem": loaded.cache_problem},
        )
    if loaded is not None:
        report.jobs, report.results = len(loaded.states), store.results_held()
        report.cached = len(loaded.cached)
    report.seconds = time.perf_counter() - started
    if report.fallback:
        log.error(
            "state database unusable; set aside, starting with EMPTY state",
            extra={"problem": report.fallback, "set_aside": str(report.set_aside)},
        )
    if report.unavailable:
        log.error(
            "no state database: results are kept in memory only and lost at restart",
            extra={"problem": report.unavailable},
        )
    if not report.fallback and not report.unavailable:
        log.info(
            "state loaded" if report.jobs else "no state yet; starting empty",
            extra={
                "jobs": report.jobs,
                "results": report.results,
                "from_cache": report.cached,
                "seconds": round(report.seconds, 3),
            },
        )
    return store, report


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """No garbage collection while a database loads: it makes ~20 containers per job
    that all survive, so every collection then only walks a growing heap in vain (a
    third of the load time at 10,000 jobs). Opening happens before the server serves
    (or in a one-shot command), with no other thread to collect for; the collector's
    previous state comes back even if loading fails."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _open(path: Path, durable: bool, max_results: int) -> tuple[Database, Loaded]:
    if not path.parent.is_dir():
        raise OSError(f"{path.parent} is not a directory")
    if path.exists() and not os.access(path, os.R_OK):
        raise OSError(f"{path} is not readable")
    database = Database(path, durable=durable)
    try:
        loaded = database.load(max_results)
        for job_id in loaded.tail:  # damaged rows show here rather than at first read
            if job_id not in loaded.states:
                raise sqlite3.DatabaseError(f"results of {job_id!r} without a state row")
    except BaseException:
        database.conn.close()
        raise
    return database, loaded


@dataclass(frozen=True, slots=True)
class StorageGauges:
    """The exporter's own storage metrics (see the module docstring)."""

    last_success: Gauge
    write_ok: Gauge
    restore_fallback: Gauge


class Persistence:
    """The periodic write, the final one, and the ``store`` readiness check."""

    def __init__(
        self,
        store: EmbeddedStore,
        report: OpenReport,
        *,
        clock: Callable[[], float],
        gauges: StorageGauges,
        state_dir: Path,
        lock: StateDirLock | None = None,
    ) -> None:
        self.store = store
        self.report = report
        self.clock = clock
        self.gauges = gauges
        self.state_dir = state_dir
        #: the state dir's lock where one was taken (``cronmetrics serve``)
        self.lock = lock
        self._replaced: str | None = None
        self._stopped = False
        if store.database is not None:
            store.before_write = self._before_write
        gauges.restore_fallback.set(1 if report.fallback or report.unavailable else 0)
        if not report.fallback and not report.unavailable:
            gauges.last_success.set(clock())  # what is on disk is what is in memory
        # the last write of any kind (periodic, journaled commit, purge), read at scrape
        gauges.write_ok.set_function(lambda: 0.0 if self.failing() else 1.0)

    def failing(self) -> bool:
        """Whether the state is not being persisted right now."""
        lost = self.lock is not None and self.lock.lost is not None
        return bool(self.report.unavailable or lost or self._replaced or self.store.last_error)

    def tick(self) -> None:
        """One periodic write; failures are logged and reported, never raised."""
        if self._stopped:
            return
        self.write()

    def guard(self) -> None:
        """Between writes (once a second): notice a lost state dir, lock or database
        and repair what can be repaired (see the module docstring); never raises."""
        if self._stopped:
            return
        with contextlib.suppress(StorageError):  # logged and kept where it was found
            self.store.verify()

    def _before_write(self) -> None:
        """Called by the store under its writer lock before every write."""
        database = self.store.database
        assert database is not None
        if self.lock is not None and not self.lock.ours():
            self.lock.reclaim()  # StorageError: lost, or cannot re-create it (yet)
        path = database.path
        try:
            same = path.stat().st_ino == database.inode
        except OSError:
            same = False
        if same:
            return
        if path.exists():
            if self._replaced is None:
                self._replaced = (
                    f"{path} was replaced by another file while the server ran; it is not "
                    "overwritten and nothing is written any more: restart the server to "
                    "load it (or stop it before restoring a backup)"
                )
                log.error("state database replaced while serving", extra={"path": str(path)})
            raise StorageError(self._replaced)
        self._recreate(database)

    def _recreate(self, lost: Database) -> None:
        """``state.db`` is gone: a new one, filled with everything in memory."""
        path = lost.path
        lost.close()  # first: closing deletes the WAL by its name, the new one's too
        for suffix in ("-wal", "-shm"):  # the lost database's, if they were left
            with contextlib.suppress(FileNotFoundError):
                path.with_name(path.name + suffix).unlink()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            database = Database(path, durable=self.store.durable)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"{path} is gone and cannot be created again: {exc}") from None
        try:
            jobs, results = self.store.replace_database_locked(database)
        except StorageError:
            database.conn.close()
            for suffix in ("", "-wal", "-shm"):  # so that the next try starts afresh
                with contextlib.suppress(FileNotFoundError):
                    path.with_name(path.name + suffix).unlink()
            raise
        log.warning(
            "state.db was deleted while serving; created again from the state in memory",
            extra={"path": str(path), "jobs": jobs, "results": results},
        )

    def write(self) -> bool:
        now = self.clock()
        if self.store.database is None:
            return False
        try:
            self.store.flush(now)
        except StorageError as exc:
            log.error(
                "state write failed; everything stays in memory for the next try",
                extra={"error": exc.message, "pending": self.store.pending()},
            )
            return False
        if self.store.health().ok:
            self.gauges.last_success.set(now)
        return True

    def stop(self) -> None:
        """The final write (SIGTERM), then close the database."""
        if self._stopped:
            return
        self._stopped = True
        started = time.perf_counter()
        where = {"state_dir": str(self.state_dir), "pending": self.store.pending()}
        try:
            self.store.close()
        except (StorageError, sqlite3.Error) as exc:
            log.error(
                "final state write failed; what was written before stays",
                extra={**where, "error": str(exc)},
            )
            return
        if self.store.database is not None:
            log.info(
                "final state write done",
                extra={**where, "seconds": round(time.perf_counter() - started, 3)},
            )

    def health(self) -> tuple[bool, str, bool]:
        """The ``store`` check of ``/health/deep``: (ok, detail, critical). Not being able
        to persist fails readiness; having started empty after setting a damaged database
        aside only warns (the server serves, from what it has)."""
        report = self.report
        if report.unavailable:
            return False, f"in memory only: {report.unavailable}", True
        if self.lock is not None:
            held, detail = self.lock.status()
            if not held:
                return False, detail, True
        if self._replaced is not None:
            return False, self._replaced, True
        health = self.store.health()
        if not health.ok:
            return False, health.detail, True
        if report.fallback and health.last_persisted is None:
            return (
                False,
                (f"{report.fallback}: set aside as {report.set_aside}, started with EMPTY state"),
                False,
            )
        when = health.last_persisted
        return True, f"{health.detail}; last written {rfc3339(when) if when else 'at start'}", True
