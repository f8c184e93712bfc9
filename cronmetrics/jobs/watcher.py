"""Hot reload of jobs.d: filesystem events are hints, the rescan is the truth.

Files change in many ways: an editor's atomic rename, ``git checkout`` rewriting hundreds
of files, a Kubernetes ConfigMap swapping its ``..data`` symlink (the events name only
dot-entries), git-sync flipping the symlink the jobs dir points through, NFS where inotify
sees nothing. Rather than interpret each event, the watcher waits for a burst of events to
go quiet and then asks for one rescan, which diffs by stat and content hash (see
:meth:`repository.JobsDir.reload`); a periodic full rescan (scheduled by the app) catches
whatever events missed.

Two checks keep it cheap: a batch made only of our own lock/temp files and of job files
whose bytes the last scan already saw (an API write that was applied at once) causes no
rescan, and the resolved path of the jobs dir is checked every second, so a swapped
symlink target is re-watched and reloaded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchfiles._rust_notify import RustNotify

from cronmetrics.fileio import LOCK_NAME, TEMP_PREFIX
from cronmetrics.logs import get_logger

__all__ = ["NETWORK_FILESYSTEMS", "Watcher", "needs_polling"]

log = get_logger("watcher")

#: filesystems where inotify does not see changes made by other machines
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "fuse.rclone", "afs", "ceph"}
)
#: how often (ms) the watch loop wakes without events, to notice a swapped symlink target
CHECK_MS = 1000
#: watchfiles' code for a deletion (``watchfiles.Change.deleted``)
DELETED = 3


def _mount_type(path: str) -> str | None:
    """The filesystem type of the mount holding ``path`` (longest mount point prefix)."""
    best, kind = "", None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                point = parts[1].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, parts[2]
    except OSError:
        return None
    return kind


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)  # noqa: PTH116
    except OSError:
        return None
    return st.st_dev, st.st_ino


def needs_polling(path: str) -> bool:
    """Whether ``path`` lives on a network filesystem, where only polling sees changes."""
    return _mount_type(path) in NETWORK_FILESYSTEMS


class Watcher:
    """A daemon thread that turns event bursts under ``root`` into calls of ``reload``."""

    def __init__(
        self,
        root: Path,
        reload: Callable[[], object],
        *,
        is_current: Callable[[Path], bool] | None = None,
        poll: bool | None = None,
        poll_interval: float = 1.0,
        debounce: float = 0.2,
        max_batch: float = 2.0,
    ) -> None:
        self.root = root
        self._reload = reload
        self._is_current = is_current
        self.poll = poll
        self.poll_interval = poll_interval
        self.debounce = debounce
        self.max_batch = max(max_batch, debounce)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        #: event batches seen / rescans asked for / batches recognised as already applied
        self.batches = 0
        self.reloads = 0
        self.skipped = 0
        #: the directory actually watched (``root`` with symlinks resolved)
        self.watching: str | None = None
        #: True while the watch is set up and waiting for events
        self.ready = threading.Event()
        self.polling = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jobs-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds, re-checking after every reload (for tests)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    def health(self) -> tuple[bool, str]:
        if not self.alive:
            return False, "watcher thread is not running"
        mode = "polling" if self.polling else "inotify"
        return True, f"watching {self.watching} ({mode}); {self.reloads} reloads"

    # -- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            real = os.path.realpath(self.root)
            polling = self.poll if self.poll is not None else needs_polling(real)
            try:
                self._watch(real, polling)
                failures = 0
                continue  # stopped, or re-watch where the jobs dir resolves now
            except Exception as exc:
                self.ready.clear()
                failures += 1
                if not polling and self.poll is None and Path(real).is_dir():
                    log.warning(
                        "file events unavailable, falling back to polling",
                        extra={"dir": real, "error": str(exc)},
                    )
                    self.poll = True
                    continue
                log.error("cannot watch the jobs directory", extra={"dir": real, "error": str(exc)})
            # the directory vanished or could not be watched: retry, and rescan meanwhile
            if self._stop.wait(min(float(failures), 10.0)):
                return
            self._apply()

    def _watch(self, real: str, polling: bool) -> None:
        """Watch ``real`` until stopped or until the jobs dir resolves elsewhere.

        Uses watchfiles' ``RustNotify`` directly (what ``watchfiles.watch`` wraps) so the
        watch is known to be in place before the catch-up rescan and before ``ready``.
        """
        with RustNotify(
            [real], False, polling, int(self.poll_interval * 1000), True, True
        ) as notify:
            self.watching = real
            self.polling = polling
            identity = _identity(real)
            self._apply()  # catch up with whatever changed before the watch was in place
            self.ready.set()
            log.info("watching jobs directory", extra={"dir": real, "polling": polling})
            while not self._stop.is_set():
                raw = notify.watch(
                    int(self.max_batch * 1000),
                    max(1, int(self.debounce * 1000)),
                    CHECK_MS,
                    self._stop,
                )
                if raw == "stop" or self._stop.is_set():
                    return
                changes: set[tuple[int, str]] = raw if isinstance(raw, set) else set()
                gone = any(path == real and kind == DELETED for kind, path in changes)
                if gone or os.path.realpath(self.root) != real or _identity(real) != identity:
                    # a swapped symlink, or the directory deleted/recreated: watch again
                    # (at once; the new watch starts with a catch-up rescan)
                    log.info("jobs directory changed identity; re-watching", extra={"was": real})
                    self.ready.clear()
                    if identity is not None and _identity(real) is None:
                        raise FileNotFoundError(f"{real} is gone")
                    return
                if changes:
                    self.batches += 1
                    if self._all_applied(real, (path for _, path in changes)):
                        self.skipped += 1
                        self._notify()
                    else:
                        self._apply()

    def _all_applied(self, real: str, paths: Iterable[str]) -> bool:
        """True if every changed path is ours or already reflected by the last rescan."""
        if self._is_current is None:
            return False
        for path in paths:
            name = path.rpartition(os.sep)[2]
            if name == LOCK_NAME or name.startswith(TEMP_PREFIX):
                continue
            rel = os.path.relpath(path, real)
            if rel == os.pardir or rel.startswith(os.pardir + os.sep):
                return False
            if not self._is_current(self.root / rel):
                return False
        return True

    def _apply(self) -> None:
        try:
            self._reload()
        except Exception:
            log.exception("reload after file change failed")
        self.reloads += 1
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()
