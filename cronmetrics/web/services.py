"""The services one server process runs, typed: what :func:`cronmetrics.web.app.create_app`
builds and every route reaches through :func:`cronmetrics.web.api.current`.

Its own module so that the routes and the request plumbing (:mod:`cronmetrics.web.api`)
can use it without importing the application factory, which imports them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pydantic
from flask import Flask

from cronmetrics.config import Config
from cronmetrics.errors import CronmetricsError
from cronmetrics.jobs.model import JobDefinition
from cronmetrics.jobs.repository import JobFile, JobsDir, ReloadReport
from cronmetrics.jobs.writer import JobWriter
from cronmetrics.logs import get_logger
from cronmetrics.monitor import Monitor
from cronmetrics.scheduler import Scheduler
from cronmetrics.storage.interface import Store
from cronmetrics.storage.persistence import Persistence
from cronmetrics.web.auth import TokenAuth
from cronmetrics.web.exposition import Exposition
from cronmetrics.web.health import Check, as_check
from cronmetrics.web.metrics import SelfMetrics

if TYPE_CHECKING:
    from cronmetrics.jobs.watcher import Watcher
    from cronmetrics.maintenance import Maintenance
    from cronmetrics.web.reconfigure import ConfigReloader
    from cronmetrics.web.reloads import ReloadGuard

__all__ = ["Clock", "HealthCheck", "Services", "services"]

log = get_logger("app")
Clock = Callable[[], float]
#: a readiness check of ``/health/deep``: () -> (ok, detail) or a Check
HealthCheck = Callable[[], "tuple[bool, str] | Check"]


@dataclass
class Services:
    """Everything one app instance owns; reached through :func:`services`."""

    config: Config
    clock: Clock
    monitor: Monitor
    store: Store
    exposition: Exposition
    metrics: SelfMetrics
    jobs_dir: JobsDir
    auth: TokenAuth
    redact: Callable[[str], str] | None
    writer: JobWriter
    #: the embedded engine's periodic write and readiness (None: another engine)
    persistence: Persistence | None = None
    scheduler: Scheduler | None = None
    watcher: Watcher | None = None
    #: SIGHUP and changes of the config file (None: built without a config source)
    config_reloader: ConfigReloader | None = None
    #: runtime maintenance windows (kept as the store's runtime records)
    maintenance: Maintenance | None = None
    #: reload failures and the reload time budget
    reload_guard: ReloadGuard | None = None
    last_reload: ReloadReport | None = None
    last_reload_error: str | None = None
    #: more readiness checks of ``/health/deep``, by name
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    def reload(self, *, full: bool = False) -> ReloadReport:
        """Rescan jobs.d and apply the result; invalid files keep their last good version.

        ``full`` reads every file; otherwise files whose stat is unchanged are trusted.
        """
        guard = self.reload_guard
        with self._reload_lock, guard.running() if guard else contextlib.nullcontext():
            report = self.jobs_dir.reload(full=full)
            now = self.clock()
            definitions = {job_id: jf.definition for job_id, jf in report.jobs.items()}
            diff = self.monitor.apply_definitions(definitions, now)
            self._keep_definitions(report, [*diff.added, *diff.changed])
            self.last_reload = report
            self.metrics.set_definitions(definitions)
            self.metrics.invalid_files.set(len(report.invalid))
            self.metrics.reload_ok.set(1 if report.ok else 0)
            if report.ok:
                self.metrics.reload_ts.set(now)
            for display, problems in report.invalid.items():
                for problem in problems:
                    log.error(
                        "invalid job file",
                        extra={
                            "file": display,
                            "problem": str(problem),
                            "kept": display in report.kept,
                        },
                    )
            if diff:
                log.info(
                    "jobs reloaded",
                    extra={
                        "added": len(diff.added),
                        "removed": len(diff.removed),
                        "changed": len(diff.changed),
                        "jobs": len(report.jobs),
                    },
                )
            return report

    def _keep_definitions(self, report: ReloadReport, ids: list[str]) -> None:
        """Store the definitions now in force as the last good ones (with their file), so
        a restart with a now-invalid file still serves the job."""
        fresh = {}
        for job_id in ids:
            jf = report.jobs.get(job_id)
            if jf is not None:
                fresh[job_id] = {"file": jf.display, **jf.definition.model_dump(mode="json")}
        if fresh:
            try:
                self.store.put_definitions(fresh)
            except CronmetricsError as exc:
                log.error("cannot keep the last good definitions", extra={"error": exc.message})

    def seed_definitions(self) -> int:
        """Before the first reload: offer the stored last good definitions to the jobs
        dir, which keeps them for files that are invalid now; return how many."""
        seeds: list[JobFile] = []
        for job_id, stored in self.store.definitions().items():
            data = dict(stored)
            display = data.pop("file", None)
            if not isinstance(display, str):
                continue
            try:
                definition = JobDefinition.model_validate(data)
            except pydantic.ValidationError:
                continue  # from another version of the schema: the file decides
            seeds.append(
                JobFile(self.config.jobs_dir / display, display, definition, "", None, job_id)
            )
        self.jobs_dir.seed(seeds)
        return len(seeds)

    def shutdown(self) -> None:
        """Stop background work: the watcher, the final write, the scheduler."""
        if self._stopped:
            return
        self._stopped = True
        stops: list[Callable[[], None]] = []
        if self.config_reloader is not None:
            stops.append(self.config_reloader.stop)
        if self.watcher is not None:
            stops.append(self.watcher.stop)
        if self.persistence is not None:
            stops.append(self.persistence.stop)
        else:
            stops.append(self.store.close)
        for stop in stops:
            try:
                stop()
            except Exception:
                log.exception("shutdown hook failed")
        if self.scheduler is not None:
            self.scheduler.shutdown()

    def health(self) -> dict[str, Check]:
        """Readiness checks for ``/health/deep`` (see :mod:`cronmetrics.web.health`)."""
        checks: dict[str, Check] = {}
        root = self.config.jobs_dir
        try:
            with os.scandir(root) as entries:  # really list it: os.access lies to root
                next(entries, None)
            checks["jobs_dir"] = Check(True, f"{root} is readable")
        except OSError as exc:
            checks["jobs_dir"] = Check(False, f"{root} cannot be read: {exc.strerror}")
        state = self.config.state_dir
        writable = state.is_dir() and os.access(state, os.W_OK | os.X_OK)
        checks["state_dir"] = Check(
            writable, f"{state} is writable" if writable else f"{state} is not writable"
        )
        report = self.last_reload
        if report is None:
            checks["reload"] = Check(False, "jobs.d not loaded yet")
        elif report.ok:
            checks["reload"] = Check(True, f"{len(report.jobs)} jobs loaded")
        else:  # the last good definitions stay live: serving, with a warning
            files = ", ".join(sorted(report.invalid)[:5])
            more = f" and {len(report.invalid) - 5} more" if len(report.invalid) > 5 else ""
            checks["reload"] = Check(
                False,
                f"{len(report.invalid)} invalid job files (their last good definitions stay "
                f"live): {files}{more}; {len(report.jobs)} jobs loaded",
                critical=False,
            )
        if self.scheduler is not None:
            alive = self.scheduler.alive
            checks["scheduler"] = Check(alive, "running" if alive else "stopped")
        if self.watcher is not None:
            checks["watcher"] = as_check(self.watcher.health())
        if self.config_reloader is not None:
            checks["config_file"] = as_check(self.config_reloader.health())
        if self.persistence is not None:
            checks["store"] = Check(*self.persistence.health())
        else:
            health = self.store.health()
            checks["store"] = Check(health.ok, health.detail)
        for name, check in self.health_checks.items():
            checks[name] = as_check(check())
        return checks


def services(app: Flask) -> Services:
    svc: Services = app.extensions["cronmetrics"]
    return svc
