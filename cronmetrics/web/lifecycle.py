"""The server process's life under gunicorn: start, SIGHUP, shutdown.

- Before gunicorn starts, :func:`check_bind` tries the address once, so a busy port is
  one line naming ``--bind`` and exit 2 at once (gunicorn itself retries five times over
  five seconds and prints its own lines).
- At start the master logs the address and scheme it serves (``listening``); at shutdown
  it logs that it stopped accepting, the worker that it drained its connections and wrote
  the final state write, and the master that it stopped: JSON lines like every other.
- SIGHUP: gunicorn's default answer is to start new workers and stop the old ones, which
  would cut in-flight requests and throw away the worker's in-memory state. Here the
  master forwards the signal to its worker, and the worker asks its
  :class:`~cronmetrics.web.reconfigure.ConfigReloader` to read the config again, in a
  thread, while it keeps serving. The worker blocks SIGHUP from its fork until its
  handler is in place (gunicorn resets handlers to the default, which would kill it), so a
  SIGHUP that arrives while the app loads is delivered, not fatal.
"""

from __future__ import annotations

import errno
import signal
import socket
import time
from typing import Any

from gunicorn.arbiter import Arbiter as GunicornArbiter

from cronmetrics.config import Config
from cronmetrics.errors import ConfigError
from cronmetrics.logs import get_logger

__all__ = ["Arbiter", "check_bind", "post_fork", "serve_url", "when_ready", "worker_ready"]

log = get_logger("server")

_WHY = {
    errno.EADDRINUSE: "the address is already in use (is another server running there?)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "no network interface of this host has that address",
}


def serve_url(config: Config) -> str:
    """``http(s)://HOST:PORT`` as clients on this host would reach the server."""
    host, port = config.host_port
    scheme = "https" if config.tls is not None else "http"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def check_bind(config: Config) -> None:
    """Raise :class:`ConfigError` naming ``--bind`` if the address cannot be listened on.

    Binds the way gunicorn will (``SO_REUSEADDR``) and lets go at once; a server that
    takes the port in between still meets gunicorn's own error.
    """
    host, port = config.host_port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"cannot listen on {config.bind}: {exc.strerror}; "
            "choose another address with --bind HOST:PORT (or bind: in the config)"
        ) from None
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        why = _WHY.get(exc.errno or 0, exc.strerror or str(exc))
        raise ConfigError(
            f"cannot listen on {config.bind}: {why}; "
            "choose another address with --bind HOST:PORT (or bind: in the config)"
        ) from None


class Arbiter(GunicornArbiter):  # type: ignore[misc]
    """gunicorn's master with cronmetrics' SIGHUP and shutdown behaviour."""

    _stopping = False

    def handle_hup(self) -> None:
        """Forward to the worker, which reloads its config live (never a restart)."""
        log.info(
            "SIGHUP: reloading the configuration (no restart)",
            extra={"workers": sorted(self.WORKERS)},
        )
        self.kill_workers(signal.SIGHUP)

    def stop(self, graceful: bool = True) -> None:
        first = not self._stopping
        self._stopping = True
        started = time.monotonic()
        if first:
            log.info(
                "shutting down: stopped accepting connections, draining in-flight requests",
                extra={"graceful": graceful, "drain_timeout": self.cfg.graceful_timeout},
            )
        super().stop(graceful)
        if first:
            log.info(
                "stopped",
                extra={
                    "seconds": round(time.monotonic() - started, 3),
                    "workers_killed": len(self.WORKERS),
                },
            )


def when_ready(config: Config) -> Any:
    """gunicorn's ``when_ready`` hook (master, listening): say where and how it serves,
    and which jobs dir and state dir it found (two servers never share a state dir)."""

    def ready(arbiter: Any) -> None:
        log.info(
            f"listening on {serve_url(config)}",
            extra={
                "url": serve_url(config),
                "scheme": "https" if config.tls is not None else "http",
                "bind": config.bind,
                "jobs_dir": str(config.jobs_dir.resolve()),
                "state_dir": str(config.state_dir),
                "pid": arbiter.pid,
            },
        )

    return ready


def post_fork(arbiter: Any, worker: Any) -> None:
    """In the new worker: hold SIGHUP back until :func:`worker_ready` can handle it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})


def worker_ready(worker: Any, reload: Any) -> None:
    """In the worker, its app loaded: SIGHUP now asks ``reload()`` (a thread does the
    work; the handler only sets a flag), then let a held-back SIGHUP through."""

    def on_hup(signum: int, frame: Any) -> None:
        reload()

    signal.signal(signal.SIGHUP, on_hup)
    signal.siginterrupt(signal.SIGHUP, False)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
