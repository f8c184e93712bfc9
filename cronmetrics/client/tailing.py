"""Where a tailed log file was read up to, across rotation and truncation.

``cronmetrics ingest`` resumes a JSONL log where the last run stopped. The position is
the file's identity (device, inode) plus a byte offset and line number, and a digest of
the file's first bytes: logrotate's ``copytruncate`` empties a file in place (same inode)
and a writer may refill it past the old offset before the next run, which only a
changed head reveals. The state file is written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from cronmetrics.errors import CronmetricsError

__all__ = ["HEAD_BYTES", "Offset", "default_state_path", "head_digest", "rotated"]

HEAD_BYTES = 256


@dataclass
class Offset:
    """How far a file has been ingested (and acknowledged by the server)."""

    dev: int = 0
    inode: int = 0
    offset: int = 0
    line: int = 0
    #: sha256 of the file's first bytes (up to HEAD_BYTES of what was read): tells a file
    #: truncated and refilled past the old offset (copytruncate) from the one we read
    head: str = ""

    @classmethod
    def load(cls, path: Path) -> Offset:
        try:
            data = json.loads(path.read_bytes())
            return cls(
                int(data["dev"]),
                int(data["inode"]),
                int(data["offset"]),
                int(data["line"]),
                str(data.get("head", "")),
            )
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CronmetricsError(
                f"state file {path} is unreadable ({exc}); delete it to start over"
            ) from None

    def save(self, path: Path) -> None:
        data = json.dumps({"version": 1, **asdict(self)}).encode() + b"\n"
        try:
            save_atomically(path, data)
        except OSError as exc:
            raise CronmetricsError(
                f"cannot write state file {path}: {exc.strerror or exc} (use --state PATH)"
            ) from None

    def truncated(self, handle: IO[bytes]) -> bool:
        """The open file is smaller than what was read, or different at its start
        (truncated and refilled): read it again from the start."""
        if os.fstat(handle.fileno()).st_size < self.offset:
            return True
        if not self.head:
            return False
        return head_digest(handle, self.offset) != self.head


def save_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file in the same directory:
    a crash leaves the old state or the new one, never half of either. (The server's
    ``cronmetrics.fileio.atomic_write`` does the same; the cron host side is stdlib-only.)
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def head_digest(handle: IO[bytes], size: int) -> str:
    """Fingerprint of the first ``min(size, HEAD_BYTES)`` bytes of an open file."""
    if size <= 0:
        return ""
    data = os.pread(handle.fileno(), min(size, HEAD_BYTES), 0)
    return hashlib.sha256(data).hexdigest()


def default_state_path(path: Path) -> Path:
    return path.parent / f".{path.name}.cronmetrics-offset"


def rotated(path: Path, handle: IO[bytes]) -> bool:
    """True when ``path`` now names another file than the open one (logrotate's create
    mode); a missing ``path`` is not a rotation yet."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    cur = os.fstat(handle.fileno())
    return (st.st_dev, st.st_ino) != (cur.st_dev, cur.st_ino)
