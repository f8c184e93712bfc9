"""Live configuration: SIGHUP or a change of the config file applies it without a restart.

Rotating a token or tightening a limit must not drop an in-flight report, so the server
never restarts for it: the config is read again (file < environment < flags, exactly as at
start), checked, and what can change at run time is swapped in, each piece as one
attribute assignment that requests in flight read either before or after:

- ``auth`` (tokens, scopes, job globs, the failed-authentication rate limit; the limiter
  keeps its counts unless its own settings changed), ``redact``, ``retention``,
  ``limits``, ``unknown_jobs``, ``log`` (level and format) and ``maintenance`` (the
  bounds of the next window asked for): :data:`RELOADABLE`;
- everything else (``bind``, ``jobs_dir``, ``state_dir``, ``tls`` on/off and its paths,
  ``snapshot``, ``watch``, ``trusted_proxy_hops``, ``job_writes``, ``no_auth``, and any key
  not listed there) needs a restart: a change is refused with one log line naming the
  key, the running value stays, and the rest of the file still applies.

An invalid file (a YAML error, an unknown key, a bad value, no token left) changes
nothing: the running config stays in force, every problem is logged with ``file:line``,
and ``cronmetrics_config_file_last_reload_successful`` and ``/health/deep`` say so (as a
warning: the server still serves, on the old config).

The file is watched by polling its stat once a second, not by inotify: it is one file,
often a symlink that a ConfigMap or a secret manager swaps (``..data``), where an inotify
watch stays on the old inode, and on NFS events never come. TLS certificate files are
re-read by :mod:`cronmetrics.web.tls` whenever they change, whatever the config says.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cronmetrics.config import Config, load_config
from cronmetrics.errors import ConfigError
from cronmetrics.logs import configure as configure_logging
from cronmetrics.logs import get_logger, rfc3339
from cronmetrics.web.auth import TokenAuth
from cronmetrics.web.health import Check
from cronmetrics.web.redaction import make_redactor

if TYPE_CHECKING:
    from cronmetrics.web.services import Services

__all__ = ["RELOADABLE", "ConfigReloader", "ConfigSource", "ReloadOutcome", "check_auth"]

log = get_logger("config")

#: top-level config keys applied at run time; every other key needs a restart
RELOADABLE = frozenset(
    {"auth", "redact", "retention", "limits", "unknown_jobs", "log", "maintenance"}
)


def check_auth(config: Config) -> None:
    """Refuse to run an open server by accident (at start and at every reload)."""
    if not config.auth.tokens and not config.no_auth:
        raise ConfigError(
            "no API tokens are configured, so the server would accept anything from anyone; "
            "create one with 'cronmetrics token new --scope admin' and add the printed line "
            "under auth.tokens in the config, or pass --no-auth to run without authentication "
            "deliberately"
        )


@dataclass(frozen=True)
class ConfigSource:
    """Where the running config came from (the file and the flags), to read it again."""

    path: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Config:
        config = load_config(self.path, **self.overrides)
        check_auth(config)
        return config


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload did: ``problems`` empty means the file was valid."""

    ok: bool
    changed: tuple[str, ...] = ()
    restart_required: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def _problems(exc: ConfigError) -> tuple[str, ...]:
    """One entry per problem (``load_config`` joins several under a header line)."""
    lines = [line.strip() for line in exc.message.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0] == "invalid configuration:":
        lines = lines[1:]
    return tuple(lines)


def _shown(config: Config, key: str) -> Any:
    return config.redacted().get(key)


class ConfigReloader:
    """Reads the config again on :meth:`request` (SIGHUP) or when its file changes."""

    def __init__(
        self,
        svc: Services,
        source: ConfigSource,
        *,
        interval: float = 1.0,
    ) -> None:
        self.svc = svc
        self.source = source
        self._listeners: list[Callable[[Config], None]] = []
        self.interval = interval
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._requested = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signature = self._stat()
        self._digest = self._read_digest()
        self.reloads = 0
        self.last: ReloadOutcome | None = None
        self.last_success: float | None = None
        svc.metrics.config_file_ok.set(1)

    def subscribe(self, applied: Callable[[Config], None]) -> None:
        """Call ``applied(config)`` after each reload that changed something: for what
        lives outside the services (Flask's body limit, the gunicorn worker's framing)."""
        self._listeners.append(applied)

    # -- what changed on disk ------------------------------------------------------------

    def _stat(self) -> tuple[Any, ...] | None:
        path = self.source.path
        if path is None:
            return None
        try:
            st = path.stat()  # follows the symlinks a ConfigMap swaps
        except OSError:
            return ("missing",)
        return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _read_digest(self) -> str | None:
        if self.source.path is None:
            return None
        try:
            return hashlib.sha256(self.source.path.read_bytes()).hexdigest()
        except OSError:
            return None

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="config-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request(self) -> None:
        """Ask for a reload soon (safe from a signal handler: it only sets flags)."""
        self._requested = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._check()
            except Exception:  # never let the watcher die of one bad reload
                log.exception("config reload failed")

    def _check(self) -> None:
        requested, self._requested = self._requested, False
        signature = self._stat()
        if not requested and signature == self._signature:
            return
        self._signature = signature
        digest = self._read_digest()
        if not requested and digest is not None and digest == self._digest:
            return  # touched, or rewritten with the same bytes
        self._digest = digest
        self.reload("SIGHUP" if requested else "file changed")

    # -- the reload ------------------------------------------------------------------------

    def reload(self, reason: str = "requested") -> ReloadOutcome:
        """Read the config again and apply what can change; the old one stays on error."""
        with self._lock:
            outcome = self._reload(reason)
            self.reloads += 1
            self.last = outcome
            return outcome

    def _reload(self, reason: str) -> ReloadOutcome:
        svc, metrics = self.svc, self.svc.metrics
        shown = str(self.source.path) if self.source.path else "the environment and flags"
        try:
            new = self.source.load()
        except ConfigError as exc:
            problems = _problems(exc)
            for problem in problems:
                log.error(
                    f"invalid config, the running one stays in force: {problem}",
                    extra={"file": shown, "problem": problem, "reason": reason},
                )
            metrics.config_file_ok.set(0)
            return ReloadOutcome(ok=False, problems=problems)
        old = svc.config
        changed: list[str] = []
        restart: list[str] = []
        for key in type(old).model_fields:
            if getattr(old, key) == getattr(new, key):
                continue
            (changed if key in RELOADABLE else restart).append(key)
        for key in restart:
            log.warning(
                f"config key {key!r} changed in {shown} but needs a restart; "
                f"keeping {_shown(old, key)!r} until then",
                extra={"key": key, "running": _shown(old, key), "file": shown},
            )
        effective = new.model_copy(update={k: getattr(old, k) for k in restart})
        if changed:
            self._apply(old, effective, changed)
        now = svc.clock()
        self.last_success = now
        metrics.config_file_ok.set(1)
        metrics.config_file_ts.set(now)
        metrics.config_file_restart.set(1 if restart else 0)
        log.info(
            "config reloaded" if changed else "config reloaded: nothing to change",
            extra={"file": shown, "reason": reason, "changed": changed, "needs_restart": restart},
        )
        return ReloadOutcome(ok=True, changed=tuple(changed), restart_required=tuple(restart))

    def _apply(self, old: Config, new: Config, changed: list[str]) -> None:
        """Swap each piece in; the config itself last, so that a request that already sees
        the new limits also sees the new tokens."""
        svc = self.svc
        if "auth" in changed:
            auth = TokenAuth.from_config(new)
            if new.auth.failure_limit == old.auth.failure_limit:
                auth.limiter = svc.auth.limiter  # keep who failed how often
            svc.auth = auth
        redact = make_redactor(new.redact) if "redact" in changed else svc.redact
        svc.redact = redact
        svc.monitor.reconfigure(
            accept_unknown=new.unknown_jobs == "accept",
            max_output_bytes=new.limits.max_output_bytes,
            redact=redact,
            max_results_per_job=new.retention.max_results_per_job,
        )
        if "log" in changed:
            configure_logging(new.log.level, new.log.format)
        if "maintenance" in changed and svc.maintenance is not None:
            # the next window asked for, and the next expiry sweep, use the new bounds
            svc.maintenance.max_duration = new.maintenance.max_duration
            svc.maintenance.keep_expired = new.maintenance.keep_expired
        svc.config = new
        if new.retention.days < old.retention.days:  # purge now, not at the next round
            from cronmetrics.storage.retention import purge_expired

            purge_expired(svc.store, new.retention.days, svc.clock())
        for applied in self._listeners:
            applied(new)

    # -- health ----------------------------------------------------------------------------

    def health(self) -> Check:
        """The ``config_file`` check: critical only if the watcher died; an invalid file or
        a key waiting for a restart only warn (the running config is sound)."""
        if self._thread is not None and not self.alive:
            return Check(False, "the config file watcher thread is not running")
        last = self.last
        where = str(self.source.path) if self.source.path else "no config file"
        if last is None:
            return Check(True, f"{where}: loaded at start")
        if not last.ok:
            return Check(
                False,
                f"{where} is invalid, the previous config stays in force: "
                + "; ".join(last.problems[:5]),
                critical=False,
            )
        when = rfc3339(self.last_success) if self.last_success is not None else "?"
        if last.restart_required:
            keys = ", ".join(last.restart_required)
            return Check(False, f"{where}: reloaded {when}; needs a restart for {keys}", False)
        return Check(True, f"{where}: reloaded {when}")
