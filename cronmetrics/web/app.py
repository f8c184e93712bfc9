"""The Flask application factory.

Nothing here is global: :func:`create_app` opens the store, builds a monitor, an
exposition, the jobs directory and (with ``start_background``) the scheduler and watcher,
keeps them in a :class:`~cronmetrics.web.services.Services` on
``app.extensions["cronmetrics"]`` and registers the blueprints. Under gunicorn the app is
created in the worker, so background threads never run in the master.
"""

from __future__ import annotations

import contextlib
import time

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from cronmetrics.config import Config
from cronmetrics.errors import CronmetricsError, StorageError, StoreUnavailable
from cronmetrics.jobs.repository import JobsDir
from cronmetrics.jobs.writer import JobWriter
from cronmetrics.logs import configure as configure_logging
from cronmetrics.logs import get_logger
from cronmetrics.maintenance import Maintenance
from cronmetrics.monitor import Monitor
from cronmetrics.scheduler import Scheduler
from cronmetrics.storage.interface import Store
from cronmetrics.storage.persistence import OpenReport, Persistence, StorageGauges, open_store
from cronmetrics.storage.retention import PURGE_EVERY, purge_expired
from cronmetrics.storage.statedir import StateDirLock
from cronmetrics.storage.store import EmbeddedStore
from cronmetrics.web import (
    api,
    dashboard,
    routes_client,
    routes_history,
    routes_jobs,
    routes_maintenance,
    routes_ping,
    routes_results,
    routes_system,
    sessions,
)
from cronmetrics.web.auth import TokenAuth
from cronmetrics.web.exposition import Exposition
from cronmetrics.web.metrics import SelfMetrics
from cronmetrics.web.reconfigure import ConfigReloader, ConfigSource
from cronmetrics.web.redaction import make_redactor
from cronmetrics.web.reloads import ReloadGuard
from cronmetrics.web.services import Clock, Services, services

__all__ = ["Services", "create_app", "make_redactor", "register_routes", "services"]

log = get_logger("app")


def register_routes(app: Flask) -> None:
    """The error handlers, request hooks and every blueprint."""
    app.register_error_handler(CronmetricsError, api.handle_error)
    app.register_error_handler(HTTPException, api.http_error)
    app.register_error_handler(Exception, api.unexpected_error)
    app.before_request(api.before_request)
    app.after_request(api.after_request)
    app.teardown_request(api.teardown_request)
    app.register_blueprint(routes_system.bp)
    app.register_blueprint(routes_results.bp)
    app.register_blueprint(routes_jobs.bp)
    app.register_blueprint(routes_history.bp)
    app.register_blueprint(routes_maintenance.bp)
    app.register_blueprint(routes_client.bp)
    app.register_blueprint(routes_ping.bp)
    dashboard.init_app(app)


def create_app(
    config: Config,
    *,
    clock: Clock = time.time,
    start_background: bool = True,
    source: ConfigSource | None = None,
    state_lock: int | None = None,
) -> Flask:
    """Build the app. ``start_background=False`` leaves time to the caller (tests).

    With ``source`` (where ``config`` was read from), SIGHUP and changes of the config
    file apply what can change at run time (:mod:`cronmetrics.web.reconfigure`). With
    ``state_lock`` (the descriptor of the server's claim on the state dir), a lost state
    dir or lock is noticed and taken again (:mod:`cronmetrics.storage.persistence`).
    """
    configure_logging(config.log.level, config.log.format)
    redact = make_redactor(config.redact)
    try:  # a first start (the README's command) has no state dir yet
        config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:  # /health/deep reports it; results still work in memory
        log.error(
            "cannot create the state dir", extra={"dir": str(config.state_dir), "error": str(exc)}
        )
    store: Store
    embedded: tuple[EmbeddedStore, OpenReport] | None = None
    if config.redis:  # replicas: Redis holds the state, the state dir only the lock
        from cronmetrics.storage.redisstore import open_redis_store

        store = open_redis_store(config)
    else:
        embedded = open_store(
            config.state_dir,
            config.retention.max_results_per_job,
            durable=config.snapshot.journal,
            now=clock(),
        )
        store = embedded[0]
    monitor = Monitor(
        store,
        accept_unknown=config.unknown_jobs == "accept",
        max_output_bytes=config.limits.max_output_bytes,
        redact=redact,
    )
    metrics = SelfMetrics(monitor.counts, lambda: monitor.window_counts(clock()))
    gauges = StorageGauges(metrics.snapshot_ts, metrics.snapshot_ok, metrics.restore_fallback)
    jobs_dir = JobsDir(config.jobs_dir, follow_external_symlinks=config.follow_external_symlinks)
    svc = Services(
        config=config,
        clock=clock,
        monitor=monitor,
        store=store,
        exposition=Exposition(monitor, metrics.render),
        metrics=metrics,
        jobs_dir=jobs_dir,
        auth=TokenAuth.from_config(config),
        redact=redact,
        writer=JobWriter(config.jobs_dir, jobs=jobs_dir, writes=config.job_writes),
        persistence=None
        if embedded is None
        else Persistence(
            *embedded,
            clock=clock,
            gauges=gauges,
            state_dir=config.state_dir,
            lock=None if state_lock is None else StateDirLock(config.state_dir, state_lock),
        ),
    )
    app = Flask("cronmetrics", static_folder=None)  # the dashboard serves its own static/
    app.config["MAX_CONTENT_LENGTH"] = config.limits.max_body_bytes
    if config.trusted_proxy_hops:  # the client address from X-Forwarded-For, hops deep
        hops = config.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops)  # type: ignore[method-assign]
    app.extensions["cronmetrics"] = svc
    register_routes(app)
    sessions.install(app, config)  # the dashboard's login cookie
    if (refused := svc.writer.refusal()) is not None:
        log.info("API and CLI job writes are refused here", extra={"reason": refused.message})
    svc.reload_guard = ReloadGuard(metrics, config.watch.reload_budget)
    svc.health_checks["reload_budget"] = svc.reload_guard.health
    maintenance = svc.maintenance = Maintenance(
        store,  # windows are runtime records: in state.db, shared by replicas on Redis
        monitor,
        clock,
        max_duration=config.maintenance.max_duration,
        keep_expired=config.maintenance.keep_expired,
    )
    svc.seed_definitions()  # before the first reload: a file invalid now keeps its job
    svc.reload()

    def sync_windows() -> None:
        # Redis down: the store logs it; the next sync catches up
        with contextlib.suppress(StoreUnavailable):
            maintenance.sync()

    sync_windows()
    detached = monitor.adopt_stored(clock())
    if detached:
        log.info(
            "kept the state of jobs no longer defined (dropped after retention.days)",
            extra={"jobs": len(detached), "sample": detached[:5]},
        )

    def purge() -> None:  # reads the config each time: retention.days reloads
        try:
            purge_expired(store, svc.config.retention.days, clock())
        except StorageError as exc:  # Redis unreachable: the next scheduled purge catches up
            log.error("cannot purge expired history", extra={"error": exc.message})

    purge()
    if config.redis:
        _follow_replicas(svc)
    if start_background:
        svc.scheduler = Scheduler(monitor, clock)
        svc.scheduler.start()
        svc.scheduler.every(1.0, sync_windows, "maintenance-sync")  # other replicas
        # keep the scraped bodies warm so a scrape renders only the last second's changes
        svc.scheduler.every(0.25, lambda: svc.exposition.prepare(clock()), "metrics-prepare")
        if svc.persistence is not None:
            svc.scheduler.every(config.snapshot.interval, svc.persistence.tick, "snapshot")
            svc.scheduler.every(1.0, svc.persistence.guard, "state-dir-guard")
        else:  # behind the change stream's callbacks: cheap when nothing changed
            svc.scheduler.every(1.0, lambda: monitor.sync(clock()), "store-sync")
        svc.scheduler.every(PURGE_EVERY, purge, "retention")
        if config.watch.enabled:
            _start_watcher(svc)
    if source is not None:
        _start_config_reloader(svc, app, source, start_background=start_background)
    return app


def _follow_replicas(svc: Services) -> None:
    """Redis: take in what other replicas record as the change stream brings it (within
    a second), wake the deadline scheduler for it, and export the store's reachability."""
    from cronmetrics.storage.redisstore import RedisStore

    store = svc.store
    assert isinstance(store, RedisStore)
    monitor, clock = svc.monitor, svc.clock

    def changed() -> None:
        if monitor.sync(clock()) and svc.scheduler is not None:
            svc.scheduler.poke()

    store.mirror.subscribe(changed)
    changed()  # what arrived between the first reload and now
    svc.metrics.store_up.set_function(lambda: 1.0 if store.health().ok else 0.0)


def _start_config_reloader(
    svc: Services, app: Flask, source: ConfigSource, *, start_background: bool
) -> None:
    def body_limit(config: Config) -> None:  # werkzeug reads it per request
        app.config["MAX_CONTENT_LENGTH"] = config.limits.max_body_bytes

    reloader = ConfigReloader(svc, source)
    reloader.subscribe(body_limit)
    svc.config_reloader = reloader
    if start_background:
        reloader.start()


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
    svc.watcher = watcher
    if svc.scheduler is not None:
        # behind the events: a walk that trusts unchanged stats (cheap: ~0.1 s for 10,000
        # files), and every tenth time a rescan that re-reads and re-hashes every file
        svc.scheduler.every(watch.rescan_interval, svc.reload, "jobs-rescan")
        svc.scheduler.every(
            watch.rescan_interval * 10, lambda: svc.reload(full=True), "jobs-rescan-full"
        )
