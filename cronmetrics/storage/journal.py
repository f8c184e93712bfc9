"""The append-only result journal (``snapshot.journal: true``).

A snapshot loses whatever arrived since the last one when the process is killed. The
journal closes that gap: every accepted result is appended here *before* the submission is
answered, so ``kill -9`` at any moment loses nothing that was acknowledged.

Layout: segment files ``journal.00000007`` in the state dir. A snapshot records the first
segment it does *not* contain (``journal_seq``); taking a snapshot rotates to a new segment
under the monitor lock, so every result is in exactly one of "the snapshot" or "a segment
at or after its ``journal_seq``". Segments are deleted only once two snapshot generations
cover them, so falling back to the previous snapshot still replays everything.

One line per result: ``<crc32 hex> <json>\\n``. A line without its newline or with a bad
checksum at the end of a segment is a torn write from a crash and is dropped quietly; a bad
line in the middle is reported and skipped (the rest of the segment is still good).

Durability without serializing every request behind ``fsync``: lines are written with
``os.write`` under the monitor lock (cheap, keeps the order), and the ``fsync`` happens
after the lock is released. Concurrent requests share fsyncs (group commit): one ``fsync``
makes every line written before it durable, so a request whose lines were already covered
by another thread's ``fsync`` returns at once. A batch is one write and one ``fsync``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from cronmetrics.errors import StorageError
from cronmetrics.fileio import fsync_dir
from cronmetrics.logs import get_logger
from cronmetrics.storage.history import check_result
from cronmetrics.storage.store import Result

__all__ = ["Journal", "JournalEntry", "read_segment", "replay", "segments"]

log = get_logger("journal")
PREFIX = "journal."
_NAME = re.compile(r"^journal\.(\d{8})$")
_RESULT_FIELDS = tuple(Result.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    result: Result
    #: ``(job_name, host)`` when the job had no definition (``unknown_jobs: accept``)
    unmanaged: tuple[str, str | None] | None


def segment_path(state_dir: Path, seq: int) -> Path:
    return state_dir / f"{PREFIX}{seq:08d}"


def segments(state_dir: Path) -> list[tuple[int, Path]]:
    """Existing segments, oldest first."""
    try:
        paths = list(state_dir.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [(int(m.group(1)), p) for p in paths if (m := _NAME.match(p.name))]
    return sorted(found)


def encode(result: Result, unmanaged: tuple[str, str | None] | None) -> bytes:
    body = orjson.dumps({"r": result, "u": unmanaged})
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _decode(line: bytes) -> JournalEntry:
    crc, _, body = line.partition(b" ")
    if len(crc) != 8 or int(crc, 16) != zlib.crc32(body):
        raise ValueError("checksum mismatch")
    data = orjson.loads(body)
    raw = data["r"]
    result = Result(**{k: raw[k] for k in _RESULT_FIELDS if k in raw})
    check_result(result)  # a wrong type skips this line, not the whole restore
    unmanaged = data.get("u")
    return JournalEntry(result, (unmanaged[0], unmanaged[1]) if unmanaged else None)


def read_segment(path: Path) -> Iterator[JournalEntry]:
    """The good entries of one segment; a torn tail is dropped, bad lines are logged."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else a torn write
    if tail:
        log.warning(
            "journal ends with a torn write (a crash mid-append); dropped it",
            extra={"file": path.name, "bytes": len(tail)},
        )
    for number, line in enumerate(lines, 1):
        try:
            entry = _decode(line)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            last = number == len(lines) and not tail
            log.log(
                logging.WARNING if last else logging.ERROR,
                "journal line unreadable; skipped",
                extra={"file": path.name, "line": number, "error": str(exc), "torn_tail": last},
            )
            continue
        yield entry


class Journal:
    """Appends results to the current segment; :meth:`rotate` starts the next one."""

    def __init__(self, state_dir: Path, seq: int) -> None:
        self.state_dir = state_dir
        self.seq = seq
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = 0  # lines written so far (a ticket is this count after a write)
        self._synced = 0  # lines known durable
        self._lost = 0  # lines whose fsync failed during a rotation (never durable)
        self._fd = self._open(seq)

    def _open(self, seq: int) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = segment_path(self.state_dir, seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fsync_dir(self.state_dir)
        except OSError:
            os.close(fd)
            raise
        return fd

    def append(
        self, results: Sequence[Result], unmanaged: Callable[[str], tuple[str, str | None] | None]
    ) -> Callable[[], None]:
        """Write ``results`` (call under the monitor lock); return the commit to call after.

        Raises :class:`StorageError` when the write fails, so the submission is refused
        and nothing is recorded.
        """
        data = b"".join(encode(r, unmanaged(r.job_id)) for r in results)
        with self._write_lock:
            try:
                _write_all(self._fd, data)
            except OSError as exc:
                log.error("journal write failed", extra={"error": str(exc)})
                raise StorageError(f"could not write the result journal: {exc}") from None
            self._written += len(results)
            ticket = self._written
        return lambda: self.sync(ticket)

    def sync(self, ticket: int) -> None:
        """Make every line up to ``ticket`` durable (shared with concurrent callers)."""
        if self._synced >= ticket:
            return
        with self._sync_lock:
            if self._synced >= ticket:
                return
            if ticket <= self._lost:
                raise StorageError("could not make the result journal durable (fsync failed)")
            with self._write_lock:
                target, fd = self._written, self._fd
            try:
                os.fsync(fd)
            except OSError as exc:
                log.error("journal fsync failed", extra={"error": str(exc)})
                raise StorageError(f"could not make the result journal durable: {exc}") from None
            self._synced = max(self._synced, target)

    def rotate(self) -> int:
        """Start the next segment (call under the monitor lock); return its number."""
        with self._sync_lock:
            fd = self._open(self.seq + 1)
            with self._write_lock:
                old, self._fd = self._fd, fd
                self.seq += 1
                pending = self._written
            try:
                os.fsync(old)
                self._synced = max(self._synced, pending)
            except OSError as exc:
                log.error("journal fsync failed at rotation", extra={"error": str(exc)})
                self._lost = pending
            finally:
                os.close(old)
        return self.seq

    def close(self) -> None:
        with self._sync_lock, self._write_lock:
            if self._fd >= 0:
                try:
                    os.fsync(self._fd)
                finally:
                    os.close(self._fd)
                    self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def replay(state_dir: Path, first: int, apply: Callable[[JournalEntry], Any]) -> tuple[int, int]:
    """Feed every entry of segments ``>= first`` to ``apply``; return (segments, entries)."""
    count = files = 0
    for seq, path in segments(state_dir):
        if seq < first:
            continue
        files += 1
        try:
            for entry in read_segment(path):
                apply(entry)
                count += 1
        except OSError as exc:
            log.error("journal segment unreadable", extra={"file": path.name, "error": str(exc)})
    return files, count
