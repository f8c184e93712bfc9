"""Durable file writes: every file cronmetrics writes goes through here.

A reader (the watcher, ``git``, a human with ``cat``) must only ever see the old bytes or
the new bytes, and a crash or power cut must not leave an empty file behind. So a write
goes to a temporary file in the same directory (same filesystem, so the rename is atomic),
is fsynced, renamed over the target with :func:`os.replace`, and the directory is fsynced
so the rename itself is durable. The temporary name starts with ``.cronmetrics-tmp-`` so
the jobs.d scanner (which skips dot files) never reads a half-written job and the watcher
can recognise its own temporary files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "LOCK_NAME",
    "TEMP_PREFIX",
    "atomic_write",
    "current_umask",
    "fsync_dir",
    "is_read_only_error",
    "locked",
    "remove",
]

TEMP_PREFIX = ".cronmetrics-tmp-"
LOCK_NAME = ".cronmetrics.lock"
#: errno values that mean "this filesystem/directory does not take writes"
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def is_read_only_error(exc: OSError) -> bool:
    return exc.errno in READ_ONLY_ERRNOS


def current_umask() -> int:
    """The process umask without the racy ``os.umask`` set-and-restore (threads!)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def fsync_dir(path: Path) -> None:
    """Make a rename/creation/unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    The existing file's permission bits (and, when running as root, its owner) are kept;
    ``mode`` applies to a new file (default: ``0o666`` minus the umask, like ``open``). A
    symlinked target is written through the link, so the link itself survives.
    """
    if path.is_symlink():
        path = path.resolve()
    directory = path.parent
    try:
        old: os.stat_result | None = path.stat()
    except FileNotFoundError:
        old = None
    if old is not None:
        perms = stat.S_IMODE(old.st_mode)
    elif mode is not None:
        perms = mode
    else:
        perms = 0o666 & ~current_umask()
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), perms)
            if old is not None and os.geteuid() == 0:
                os.fchown(handle.fileno(), old.st_uid, old.st_gid)
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(directory)


def remove(path: Path) -> None:
    """Delete ``path`` durably (the unlink is fsynced in its directory)."""
    path.unlink()
    fsync_dir(path.parent)


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def locked(directory: Path, name: str = LOCK_NAME) -> Iterator[None]:
    """Hold an exclusive lock on ``directory/name`` (``flock``) for the block.

    The lock lives in its own file, never in the file being replaced: ``os.replace``
    swaps inodes, so a lock on the target would be lost with the old inode. ``flock``
    serializes writers across processes (the server and ``cronmetrics job --jobs-dir``);
    a per-path thread lock in front of it keeps threads of one process orderly as well.
    """
    key = str(directory.resolve() / name)
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(key, threading.Lock())
    with thread_lock:
        fd = os.open(key, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
