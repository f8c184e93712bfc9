"""The state dir's lock: one process at a time uses a state dir.

Two servers on one ``state.db`` would each keep their own memory and overwrite each
other's states; an offline purge under a running server would be invisible to it. The
claim is an exclusive ``flock`` on ``state.lock``, held by the server's master process.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from cronmetrics.errors import Conflict
from cronmetrics.logs import get_logger

__all__ = ["LOCK_NAME", "claim_state_dir", "lock_held"]

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


def lock_held(state_dir: Path) -> tuple[bool, str]:
    """Whether ``state.lock`` still exists and is locked by some process (ours, when we
    claimed it): a state dir deleted or replaced while serving loses its lock, and a
    second server could then claim a new one."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"{path} is gone ({exc.strerror}): the state dir lost its lock"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True, f"{path} is held"
    except OSError:
        return True, f"{path} cannot be locked here (unguarded)"
    finally:
        os.close(fd)
    return False, f"{path} is not locked by anyone: the state dir was replaced while serving"
