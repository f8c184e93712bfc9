"""The state dir's files: two snapshot generations and the journal segments they cover.

``state.snapshot`` is the newest generation, ``state.snapshot.1`` the one before it (the
fallback when the newest is unreadable). Each records ``journal_seq``, the first journal
segment it does not contain, so a segment can go once *both* generations are past it:
falling back to the previous generation must still replay everything since.

Publishing a generation never leaves a moment without a readable file: the bytes go to a
staging file first (a full disk leaves both generations untouched), the current file is
hard-linked over the previous one, the staging file renamed over the current one, and
the directory fsynced. The encoding of the files is :mod:`cronmetrics.storage.snapshot_format`;
when to write them is :mod:`cronmetrics.storage.snapshot`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from cronmetrics.errors import Conflict
from cronmetrics.fileio import atomic_write, fsync_dir
from cronmetrics.logs import get_logger
from cronmetrics.storage.journal import segments

__all__ = ["LOCK_NAME", "PREVIOUS_NAME", "SNAPSHOT_NAME", "Generations", "claim_state_dir"]

log = get_logger("snapshot")

LOCK_NAME = "state.lock"
SNAPSHOT_NAME = "state.snapshot"
PREVIOUS_NAME = "state.snapshot.1"
_STAGING = ".state.snapshot.new"
_LINKING = ".state.snapshot.1.new"


class Generations:
    """The two generations' paths and journal positions; not thread-safe (the
    snapshotter serializes writes)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.current = state_dir / SNAPSHOT_NAME
        self.previous = state_dir / PREVIOUS_NAME
        #: journal_seq of each generation, when known
        self.current_seq: int | None = None
        self.previous_seq: int | None = None
        #: may the current file become the previous generation? (not if it was unreadable)
        self.current_good = True

    def restored(self, source: str | None, journal_seq: int | None, clean: bool) -> None:
        """Record what a restore found: the file it used (``None``: neither) and whether
        the current file was readable."""
        if source == SNAPSHOT_NAME:
            self.current_seq = journal_seq
        elif source == PREVIOUS_NAME:
            self.previous_seq = journal_seq
        self.current_good = source == SNAPSHOT_NAME or clean

    def publish(self, data: bytes, journal_seq: int) -> None:
        """Make ``data`` the current generation, the current one the previous (unless it
        was unreadable), then drop the journal segments both now cover. OSError from the
        write leaves both generations as they were."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = self.state_dir / _STAGING
        try:
            atomic_write(staging, data, mode=0o600)
            rotated = self.current_good and self.current.exists()
            if rotated:
                self._link_previous()
            staging.replace(self.current)
            fsync_dir(self.state_dir)
        except OSError:
            with contextlib.suppress(OSError):
                staging.unlink()
            raise
        if rotated:
            self.previous_seq = self.current_seq
        self.current_seq = journal_seq
        self.current_good = True
        self.drop_covered_segments()

    def previous_from_current(self) -> None:
        """Make the previous generation a copy of the current one (after a purge, so no
        generation keeps the purged results), and drop the segments it covers."""
        self._link_previous()
        fsync_dir(self.state_dir)
        self.previous_seq = self.current_seq
        self.drop_covered_segments()

    def _link_previous(self) -> None:
        linking = self.state_dir / _LINKING
        with contextlib.suppress(FileNotFoundError):
            linking.unlink()
        linking.hardlink_to(self.current)
        linking.replace(self.previous)

    def drop_covered_segments(self) -> None:
        """Journal segments both generations contain are no longer needed."""
        if self.previous_seq is not None:
            for seq, path in segments(self.state_dir):
                if seq < self.previous_seq:
                    with contextlib.suppress(OSError):
                        path.unlink()


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
