"""The Flask application factory and the services one server process runs.

Nothing here is global: :func:`create_app` builds a monitor, an exposition, the jobs
directory and (with ``start_background``) the scheduler and watcher, and keeps them on
``app.extensions["cronmetrics"]``. Under gunicorn the app is created in the worker, so
background threads never run in the master.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from cronmetrics.config import Config
from cronmetrics.jobs.repository import JobsDir, ReloadReport
from cronmetrics.jobs.writer import JobWriter
from cronmetrics.logs import configure as configure_logging
from cronmetrics.logs import get_logger
from cronmetrics.maintenance import Maintenance, MemoryRecords
from cronmetrics.monitor import Monitor
from cronmetrics.scheduler import Scheduler
from cronmetrics.storage.snapshot import Snapshotter
from cronmetrics.storage.store import MemoryStore
from cronmetrics.web.auth import TokenAuth
from cronmetrics.web.exposition import Exposition
from cronmetrics.web.health import Check, as_check
from cronmetrics.web.metrics import SelfMetrics
from cronmetrics.web.reconfigure import ConfigReloader, ConfigSource
from cronmetrics.web.reloads import ReloadGuard

__all__ = ["Services", "create_app", "services"]

log = get_logger("app")
Clock = Callable[[], float]


def make_redactor(patterns: list[str]) -> Callable[[str], str] | None:
    """Replace every match with ``[REDACTED]``; only the ``(?P<secret>...)`` group if the
    pattern has one, so ``DB_PASSWORD=[REDACTED]`` still says what was hidden."""
    if not patterns:
        return None
    compiled = [re.compile(p) for p in patterns]

    def hide(match: re.Match[str]) -> str:
        if "secret" not in match.re.groupindex or match.start("secret") < 0:
            return "[REDACTED]"
        text, base = match.group(0), match.start()
        start, end = match.span("secret")
        return text[: start - base] + "[REDACTED]" + text[end - base :]

    def redact(text: str) -> str:
        for regex in compiled:
            text = regex.sub(hide, text)
        return text

    return redact


@dataclass
class Services:
    """Everything one app instance owns; reached through :func:`services`."""

    config: Config
    clock: Clock
    monitor: Monitor
    exposition: Exposition
    metrics: SelfMetrics
    jobs_dir: JobsDir
    auth: TokenAuth
    redact: Callable[[str], str] | None
    maintenance: Maintenance | None = None
    scheduler: Scheduler | None = None
    #: SIGHUP and changes of the config file (None: built without a config source)
    config_reloader: ConfigReloader | None = None
    last_reload: ReloadReport | None = None
    last_reload_error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    def reload(self, *, full: bool = False) -> ReloadReport:
        """Rescan jobs.d and apply the result; invalid files keep their last good version.

        ``full`` reads every file; otherwise files whose stat is unchanged are trusted.
        """
        guard = self.extras.get("reload_guard")
        with self._reload_lock, guard.running() if guard else contextlib.nullcontext():
            report = self.jobs_dir.reload(full=full)
            now = self.clock()
            definitions = {job_id: jf.definition for job_id, jf in report.jobs.items()}
            diff = self.monitor.apply_definitions(definitions, now)
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

    def shutdown(self) -> None:
        """Stop background work; hooks registered in ``extras['on_shutdown']`` run last."""
        if self._stopped:
            return
        self._stopped = True
        for stop in self.extras.get("on_stop", []):
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
        for name, check in self.extras.get("health_checks", {}).items():
            checks[name] = as_check(check())
        return checks


def services(app: Flask) -> Services:
    svc: Services = app.extensions["cronmetrics"]
    return svc


def create_app(
    config: Config,
    *,
    clock: Clock = time.time,
    start_background: bool = True,
    source: ConfigSource | None = None,
) -> Flask:
    """Build the app. ``start_background=False`` leaves time to the caller (tests).

    With ``source`` (where ``config`` was read from), SIGHUP and changes of the config
    file apply what can change at run time (:mod:`cronmetrics.web.reconfigure`).
    """
    from cronmetrics.web import api

    configure_logging(config.log.level, config.log.format)
    redact = make_redactor(config.redact)
    monitor = Monitor(
        MemoryStore(config.retention.max_results_per_job),
        accept_unknown=config.unknown_jobs == "accept",
        max_output_bytes=config.limits.max_output_bytes,
        redact=redact,
    )
    metrics = SelfMetrics(monitor.counts, lambda: monitor.window_counts(clock()))
    svc = Services(
        config=config,
        clock=clock,
        monitor=monitor,
        exposition=Exposition(monitor, metrics.render),
        metrics=metrics,
        jobs_dir=JobsDir(config.jobs_dir, follow_external_symlinks=config.follow_external_symlinks),
        auth=TokenAuth.from_config(config),
        redact=redact,
    )
    app = Flask("cronmetrics")
    app.config["MAX_CONTENT_LENGTH"] = config.limits.max_body_bytes
    if config.trusted_proxy_hops:  # the client address from X-Forwarded-For, hops deep
        hops = config.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops)  # type: ignore[method-assign]
    app.extensions["cronmetrics"] = svc
    api.register(app)

    try:  # a first start (the README's command) has no state dir yet
        config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:  # /health/deep reports it; results still work in memory
        log.error(
            "cannot create the state dir", extra={"dir": str(config.state_dir), "error": str(exc)}
        )
    writer = JobWriter(config.jobs_dir, jobs=svc.jobs_dir, writes=config.job_writes)
    svc.extras["job_writer"] = writer
    if (refused := writer.refusal()) is not None:
        log.info("API and CLI job writes are refused here", extra={"reason": refused.message})
    guard = svc.extras["reload_guard"] = ReloadGuard(metrics, config.watch.reload_budget)
    svc.extras.setdefault("health_checks", {})["reload_budget"] = guard.health
    snapshotter = Snapshotter.for_services(svc)  # before the first reload, which keeps states
    svc.maintenance = Maintenance(
        MemoryRecords(),
        monitor,
        clock,
        max_duration=config.maintenance.max_duration,
        keep_expired=config.maintenance.keep_expired,
    )
    svc.reload()
    svc.maintenance.sync()
    if start_background:
        svc.scheduler = Scheduler(monitor, clock)
        svc.scheduler.start()
        svc.scheduler.every(1.0, svc.maintenance.sync, "maintenance-sync")  # other replicas
        # keep the scraped bodies warm so a scrape renders only the last second's changes
        svc.scheduler.every(0.25, lambda: svc.exposition.prepare(clock()), "metrics-prepare")
        if config.watch.enabled:
            _start_watcher(svc)
    snapshotter.started(svc)
    if source is not None:
        _start_config_reloader(svc, app, source, start_background=start_background)
    return app


def _start_config_reloader(
    svc: Services, app: Flask, source: ConfigSource, *, start_background: bool
) -> None:
    def body_limit(config: Config) -> None:  # werkzeug reads it per request
        app.config["MAX_CONTENT_LENGTH"] = config.limits.max_body_bytes

    reloader = ConfigReloader(svc, source)
    reloader.subscribe(body_limit)
    svc.config_reloader = reloader
    svc.extras.setdefault("health_checks", {})["config_file"] = reloader.health
    if start_background:
        reloader.start()
        svc.extras.setdefault("on_stop", []).append(reloader.stop)


def _start_watcher(svc: Services) -> None:
    """Hot reload (issue #4): a watcher thread plus a periodic full rescan behind it."""
    from cronmetrics.jobs.watcher import Watcher

    watch = svc.config.watch
    watcher = Watcher(
        svc.config.jobs_dir,
        svc.reload,
        is_current=svc.jobs_dir.is_current,
        poll=watch.poll,
        poll_interval=watch.poll_interval,
        debounce=watch.debounce,
    )
    watcher.start()
    svc.extras["watcher"] = watcher
    svc.extras.setdefault("on_stop", []).append(watcher.stop)
    svc.extras.setdefault("health_checks", {})["watcher"] = watcher.health
    if svc.scheduler is not None:
        # behind the events: a walk that trusts unchanged stats (cheap: ~0.1 s for 10,000
        # files), and every tenth time a rescan that re-reads and re-hashes every file
        svc.scheduler.every(watch.rescan_interval, svc.reload, "jobs-rescan")
        svc.scheduler.every(
            watch.rescan_interval * 10, lambda: svc.reload(full=True), "jobs-rescan-full"
        )
