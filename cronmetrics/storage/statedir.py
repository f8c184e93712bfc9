"""The state dir's lock: one process at a time uses a state dir.

Two servers on one ``state.db`` would each keep their own memory and overwrite each
other's states; an offline purge under a running server would be invisible to it. The
claim is an exclusive ``flock`` on ``state.lock``, held by the server's master process.

A lock is a lock on a *file*: ``rm -rf`` of the state dir, or deleting or replacing
``state.lock``, leaves the server holding a lock nobody sees, and a second server could
claim a new one. :class:`StateDirLock` is the serving process's view of its claim:
:meth:`~StateDirLock.ours` tells in one ``stat`` whether the file at the path is still
the one it holds (then nobody else can hold it), and :meth:`~StateDirLock.reclaim`
re-creates the dir and takes a new lock when it is not. If another process holds the
new file, the state dir is **lost** to it for good: this server must not write there any
more (it would share the files with the other), and says so until it is restarted.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from cronmetrics.errors import Conflict, StorageError
from cronmetrics.logs import get_logger

__all__ = ["LOCK_NAME", "StateDirLock", "claim_state_dir"]

log = get_logger("statedir")

LOCK_NAME = "state.lock"


def claim_state_dir(state_dir: Path, what: str) -> int | None:
    """Make this process the only one using ``state_dir``; return the file descriptor
    that holds the claim (closing it, or the process ending, releases it), or None where
    the filesystem cannot lock (some NFS mounts): then it runs unguarded, with a warning.

    Two servers on one state dir would overwrite each other's snapshots and interleave
    their journals, and an offline purge under a running server would be undone by its
    next snapshot. An exclusive ``flock`` on ``state.lock``, taken without waiting,
    refuses the second one with :class:`Conflict` naming the holder (``what`` and pid,
    written into the file)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise Conflict(f"the state dir {state_dir} is in use by {holder}") from None
    except OSError as exc:
        os.close(fd)
        log.warning(
            "cannot lock the state dir; nothing stops a second server from using it",
            extra={"state_dir": str(state_dir), "error": str(exc)},
        )
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{what} (pid {os.getpid()})\n".encode(), 0)
    return fd


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class StateDirLock:
    """The serving process's claim on its state dir, taken again when it is lost.

    ``fd`` is the descriptor :func:`claim_state_dir` returned (in gunicorn's master; the
    worker inherits it). Not thread-safe: the store calls it under its writer lock."""

    def __init__(self, state_dir: Path, fd: int, what: str = "cronmetrics serve") -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self.what = what
        self._fd = fd
        self._identity = _identity(fd)
        self._own_fd = False  # the first one is the master's: never ours to close
        #: set when another process took the state dir: final until a restart
        self.lost: str | None = None

    def ours(self) -> bool:
        """Whether ``state.lock`` at its path is still the file this process locks (one
        ``stat``: while it is, no other process can hold a lock on it)."""
        try:
            st = self.path.stat()
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def reclaim(self) -> str | None:
        """Make sure this process holds ``state.lock`` again; return what was wrong (None
        when nothing was). Re-creates a deleted state dir. Raises StorageError when it
        cannot: the dir cannot be made (try again later), or another process holds the
        new lock (:attr:`lost` is set: final)."""
        if self.lost is not None:
            raise StorageError(self.lost)
        if self.ours():
            return None
        problem = (
            f"{self.state_dir} was deleted"
            if not self.state_dir.exists()
            else f"{self.path} was deleted"
            if not self.path.exists()
            else f"{self.path} was replaced"
        )
        try:
            fd = claim_state_dir(self.state_dir, self.what)
        except Conflict as exc:
            self.lost = (
                f"{problem} while serving and {exc.message.removeprefix('the ')} now: this "
                "server no longer writes its state there (it would share it); stop it"
            )
            log.error("state dir lost to another process", extra={"problem": self.lost})
            raise StorageError(self.lost) from None
        except OSError as exc:
            raise StorageError(f"{problem} and cannot be re-created: {exc}") from None
        if fd is None:  # the filesystem stopped locking: nothing to guard any more
            raise StorageError(f"{problem} and the new {LOCK_NAME} cannot be locked")
        if self._own_fd:
            os.close(self._fd)
        self._fd, self._identity, self._own_fd = fd, _identity(fd), True
        log.warning(
            "state dir lock lost while serving; re-created and locked again",
            extra={"problem": problem, "state_dir": str(self.state_dir)},
        )
        return problem

    def status(self) -> tuple[bool, str]:
        """For readiness: (ok, detail)."""
        if self.lost is not None:
            return False, self.lost
        if not self.ours():
            return False, f"{self.path} is not this server's lock any more; re-locking"
        return True, f"{self.path} is held"
