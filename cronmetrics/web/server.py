"""``cronmetrics serve``: gunicorn in-process, worker processes with threads.

One worker process on the embedded engine because the state lives in its memory; with a
Redis store (which holds the state) ``--workers N``; threads for concurrency. The
worker is gthread's, made to give its threads only whole requests (:mod:`.worker`), so
idle and slow clients never hold one. The
app (and so the scheduler, watcher and the periodic state write) is created in the worker after the
fork, never in the master. On SIGTERM gunicorn stops accepting, finishes requests, and
the ``worker_exit`` hook runs the app's shutdown (final write of state.db included). SIGHUP reloads
the config in the worker instead of replacing it (:mod:`cronmetrics.web.lifecycle`).
"""

from __future__ import annotations

import gc
from dataclasses import replace
from typing import Any

from gunicorn.app.base import BaseApplication

from cronmetrics.config import Config
from cronmetrics.errors import ConfigError, Conflict
from cronmetrics.storage.statedir import claim_state_dir
from cronmetrics.storeurl import is_sentinel_url
from cronmetrics.web import lifecycle
from cronmetrics.web.reconfigure import ConfigSource, check_auth
from cronmetrics.web.tls import CertificateReloader
from cronmetrics.web.worker import Limits, worker_class

__all__ = ["Server", "check_can_start", "claim"]


#: open connections one worker holds; idle ones cost a descriptor and a small buffer, so
#: this is far above what 64 per address lets one client take (gunicorn's default: 1,000)
MAX_CONNECTIONS = 4096


def connection_capacity() -> int:
    """How many connections a worker may hold: :data:`MAX_CONNECTIONS`, raising the soft
    open-file limit toward the hard one for it (Debian's default soft limit is 1,024),
    or less, with room for the state, job files and logs, where the hard limit is lower."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_CONNECTIONS + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(64, min(MAX_CONNECTIONS, soft - 256))


def check_can_start(config: Config, *, workers: int = 1) -> None:
    """Refuse to run an open server by accident (docs/security.md), or N workers on
    an engine whose state lives in one process's memory, or one that cannot listen where
    it was told to."""
    if workers > 1 and not config.redis:
        raise ConfigError(
            f"--workers {workers} needs a Redis store (store: redis://...): the embedded "
            "engine keeps the state in one process's memory, so it runs one worker; use "
            "--threads for concurrency"
        )
    secrets = {
        "store_password_file": config.store_password_file,
        "store_sentinel_password_file": config.store_sentinel_password_file,
    }
    for key, path in secrets.items():
        if path is None:
            continue
        try:
            path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{key} {path} cannot be read: {exc}") from None
    if config.store_sentinel_password_file is not None and not is_sentinel_url(config.store):
        raise ConfigError(
            "store_sentinel_password_file is set but the store is not redis+sentinel:// "
            "or rediss+sentinel://: the primary's password goes in store_password_file"
        )
    if config.redis:
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ConfigError(
                "store: redis://... needs the Redis client library: "
                "pip install 'cronmetrics[redis]'"
            ) from None
    check_auth(config)
    if config.tls is not None:
        for what, path in (("certificate", config.tls.cert), ("key", config.tls.key)):
            if not path.is_file():
                raise ConfigError(f"TLS {what} {path} does not exist")
    if not config.jobs_dir.is_dir():
        raise ConfigError(f"jobs directory {config.jobs_dir} does not exist")
    lifecycle.check_bind(config)


def claim(config: Config) -> int | None:
    """Claim the state dir for this server, in the gunicorn master (the worker inherits
    the claim, and a restarted worker keeps it); see :func:`claim_state_dir`."""
    try:
        return claim_state_dir(config.state_dir, "cronmetrics serve")
    except Conflict as exc:
        raise Conflict(
            f"{exc.message}: is another server running on it? Each server needs its own state_dir"
        ) from None


def request_threads(config: Config) -> int:
    """The default of ``--threads``. A journaled submission holds its thread until its
    group's commit, and a group is at most as large as the threads waiting: with 8 a
    group averaged 4.5 submissions, and at 64 concurrent clients the journal ran at 81 %
    of the rate without it; with 32, at 90 % (docs/performance.md). Without the journal
    (or on Redis) more threads only contend for the GIL."""
    return 32 if config.snapshot.journal and not config.redis else 8


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(
        self,
        config: Config,
        *,
        threads: int = 8,
        workers: int = 1,
        source: ConfigSource | None = None,
        state_lock: int | None = None,
    ) -> None:
        self.cm_config = config
        self.threads = threads
        self.workers = workers
        self.source = source
        #: the master's claim on the state dir (:func:`claim`), inherited by the worker
        self.state_lock = state_lock
        super().__init__()

    def load_config(self) -> None:
        host, port = self.cm_config.host_port
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        settings: dict[str, Any] = {
            "bind": [bind],
            "workers": self.workers,
            "worker_class": worker_class(self.cm_config),
            "threads": self.threads,
            "keepalive": 75,
            "timeout": 60,
            "graceful_timeout": 20,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "cronmetrics",
            "worker_exit": _worker_exit,
            "post_worker_init": _post_worker_init,
            "on_starting": _scrub_gunicorn_logs,
            "post_fork": lifecycle.post_fork,
            "when_ready": lifecycle.when_ready(self.cm_config),
            "backlog": 2048,
            "worker_connections": connection_capacity(),
        }
        if self.cm_config.tls is not None:
            settings["certfile"] = str(self.cm_config.tls.cert)
            settings["keyfile"] = str(self.cm_config.tls.key)
            settings["ssl_context"] = CertificateReloader(
                self.cm_config.tls.cert, self.cm_config.tls.key
            )
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from cronmetrics.web.app import create_app

        lock = self.state_lock if not self.cm_config.redis else None
        return create_app(self.cm_config, source=self.source, state_lock=lock)

    def run(self) -> None:
        """gunicorn's ``run`` with cronmetrics' master (:class:`lifecycle.Arbiter`)."""
        from cronmetrics.logs import configure

        configure(self.cm_config.log.level, self.cm_config.log.format)  # the master's lines
        lifecycle.Arbiter(self).run()


def _scrub_gunicorn_logs(server: Any) -> None:
    """gunicorn's own log lines ("Error handling request /ping/KEY/...") lose ping keys
    too; the access log stays off (``accesslog: None``)."""
    import logging

    from cronmetrics.logs import ScrubFilter

    for name in ("gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(ScrubFilter())


def _post_worker_init(worker: Any) -> None:
    from cronmetrics.logs import get_logger
    from cronmetrics.web.app import services

    svc = services(worker.wsgi)
    reloader = svc.config_reloader
    lifecycle.worker_ready(worker, reloader.request if reloader is not None else lambda: None)
    if reloader is not None and isinstance(getattr(worker, "limits", None), Limits):

        def body_limit(config: Config) -> None:  # the worker frames requests by it too
            worker.limits = replace(worker.limits, max_body_bytes=config.limits.max_body_bytes)

        reloader.subscribe(body_limit)
    if isinstance(worker.cfg.ssl_context, CertificateReloader):
        svc.health_checks["tls"] = worker.cfg.ssl_context.health
    settle_heap()
    get_logger("server").info("worker ready", extra={"pid": worker.pid})


def settle_heap() -> None:
    """Leave what the worker has built (the store's states and histories: ~17 containers
    a job) out of later garbage collections: it lives as long as the worker, yet each
    full collection walked it all again, with every request thread waiting on the GIL
    (60 ms at 10,000 jobs on a 2-core machine, docs/performance.md). Collect first, so
    no garbage is kept; what is made later is collected as usual. A frozen object is
    still freed when its last reference goes, unless it is in a cycle: frozen cycles are
    never collected (a config reload that replaces jobs leaked none, tested by hand)."""
    gc.collect()
    gc.freeze()


def _worker_exit(server: Any, worker: Any) -> None:
    from cronmetrics.logs import get_logger
    from cronmetrics.web.app import services

    app = getattr(worker, "wsgi", None)
    if app is not None and "cronmetrics" in getattr(app, "extensions", {}):
        left = getattr(worker, "nr_conns", 0)
        get_logger("server").info(
            "drained: in-flight requests answered" if not left else "drain timed out",
            extra={"pid": worker.pid, "connections_cut": left},
        )
        services(app).shutdown()
