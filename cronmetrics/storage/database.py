"""``state.db``: the embedded engine's SQLite database in the state dir.

Standard SQLite in WAL mode, so an operator can query it (``sqlite3 state.db``), back it
up (``cronmetrics backup``, SQLite's online backup) and check it (``PRAGMA
integrity_check``) with standard tools. The schema (version in ``PRAGMA user_version``;
:data:`MIGRATIONS` brings an older file up to date at open)::

    results(id INTEGER PRIMARY KEY, job_id, status, timestamp, received, duration,
            exit_code, run_id, host, output, labels)   -- one row per result, arrival order
    results_by_job ON results(job_id)                  -- (job_id, id): a job's newest rows
    states(job_id PRIMARY KEY, first_seen, active_since, last_..., runs_total, ...)
    definitions(job_id PRIMARY KEY, definition JSON, updated)  -- last good definitions
    records(kind, key, value JSON, updated, PRIMARY KEY (kind, key))  -- runtime records

Every write is one transaction (:meth:`Database.write`): a failure (full disk, EIO)
rolls all of it back, so a batch is on disk whole or not at all. ``secure_delete`` is on
and a purge ends with a truncating WAL checkpoint: deleted output is overwritten in the
database file and gone from the WAL before the purge answers.

Only one thread uses a :class:`Database` at a time (the store's writer lock); the
connection is opened with ``check_same_thread=False`` for that reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cronmetrics.errors import StorageError
from cronmetrics.storage.history import COLUMNS, Result
from cronmetrics.storage.interface import JobState, RuntimeRecord

__all__ = ["DB_NAME", "SCHEMA_VERSION", "Database", "Loaded", "backup"]

DB_NAME = "state.db"
SCHEMA_VERSION = 1
STATE_FIELDS = tuple(f.name for f in dataclasses.fields(JobState))
_STATE_VALUES = tuple(f for f in STATE_FIELDS if f != "job_id")

#: schema version -> the statements that bring a database of the version before to it
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE results (
            id INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('start', 'success', 'failure')),
            timestamp REAL NOT NULL,
            received REAL NOT NULL,
            host TEXT,
            duration REAL,
            exit_code INTEGER,
            run_id TEXT,
            output TEXT,
            labels TEXT
        )""",
        "CREATE INDEX results_by_job ON results (job_id)",
        """CREATE TABLE states (
            job_id TEXT PRIMARY KEY,
            first_seen REAL NOT NULL,
            active_since REAL NOT NULL,
            last_report REAL,
            last_run REAL,
            last_success REAL,
            last_failure REAL,
            last_status TEXT,
            last_duration REAL,
            last_exit_code INTEGER,
            running INTEGER NOT NULL,
            run_started REAL,
            run_id TEXT,
            consecutive_failures INTEGER NOT NULL,
            runs_total INTEGER NOT NULL,
            failures_total INTEGER NOT NULL,
            detached_since REAL,
            version INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE definitions (
            job_id TEXT PRIMARY KEY,
            definition TEXT NOT NULL,
            updated REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE records (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            updated REAL NOT NULL,
            PRIMARY KEY (kind, key)
        ) WITHOUT ROWID""",
    ),
}
assert max(MIGRATIONS) == SCHEMA_VERSION

_RESULT_COLUMNS = ("job_id", *COLUMNS)
# column names are constants of this module, never input: S608 does not apply
_INSERT_RESULT = (
    f"INSERT INTO results ({', '.join(_RESULT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(_RESULT_COLUMNS))})"
)
_UPSERT_STATE = (
    f"INSERT OR REPLACE INTO states ({', '.join(STATE_FIELDS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(STATE_FIELDS))})"
)
_SELECT_STATES = f"SELECT {', '.join(STATE_FIELDS)} FROM states"  # noqa: S608
_SELECT_RESULTS = f"SELECT {', '.join(_RESULT_COLUMNS)} FROM results ORDER BY id"  # noqa: S608
_SELECT_NEWEST = (
    f"SELECT {', '.join(_RESULT_COLUMNS)} FROM results "  # noqa: S608
    "WHERE job_id = ? ORDER BY id DESC LIMIT ?"
)


def _result_row(r: Result) -> tuple[Any, ...]:
    labels = json.dumps(r.labels, ensure_ascii=False, sort_keys=True) if r.labels else None
    return (
        r.job_id,
        r.status,
        r.timestamp,
        r.received,
        r.host,
        r.duration,
        r.exit_code,
        r.run_id,
        r.output,
        labels,
    )


def _state_row(s: JobState) -> tuple[Any, ...]:
    return tuple(getattr(s, name) for name in STATE_FIELDS)


@dataclass(slots=True)
class Loaded:
    """What a database held at open: states, each job's results (arrival order, as
    columns of :class:`~cronmetrics.storage.history.History`), definitions."""

    states: dict[str, JobState] = field(default_factory=dict)
    results: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: int = 0


@dataclass(frozen=True, slots=True)
class Writes:
    """One transaction's worth of changes."""

    results: Sequence[Result] = ()
    states: Sequence[JobState] = ()
    #: jobs to delete whole (states, results, definitions)
    drop: Sequence[str] = ()
    #: job id -> how many of its newest rows to keep (older ones deleted)
    trim: Mapping[str, int] = field(default_factory=dict)


class Database:
    """One open ``state.db``; see the module docstring."""

    def __init__(self, path: Path, *, durable: bool) -> None:
        """Open (creating or migrating) the database. ``durable`` commits with
        ``synchronous=FULL`` (every commit fsynced: the journal mode); otherwise
        ``NORMAL`` (WAL: nothing is lost to a crashed process, a power cut may lose the
        last commits). Raises sqlite3.DatabaseError / OSError for an unusable file."""
        self.path = path
        self.conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        try:
            self._setup(durable)
        except BaseException:
            self.conn.close()
            raise
        self.inode = path.stat().st_ino

    def _setup(self, durable: bool) -> None:
        c = self.conn
        self.path.chmod(0o600)
        mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.DatabaseError(f"cannot switch {self.path.name} to WAL (got {mode})")
        c.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        c.execute("PRAGMA secure_delete=ON")
        c.execute("PRAGMA foreign_keys=OFF")
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"{self.path.name} has schema version {version}, newer than this "
                f"cronmetrics knows ({SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            c.execute("BEGIN IMMEDIATE")
            try:
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[step]:
                        c.execute(statement)
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()

    # -- reading ---------------------------------------------------------------------------

    def load(self) -> Loaded:
        """Everything, for the memory of the embedded engine (sqlite3.DatabaseError for
        a damaged file: a bad page shows up while reading it)."""
        c = self.conn
        loaded = Loaded()
        for row in c.execute(_SELECT_STATES):
            state = JobState(*row)
            loaded.states[state.job_id] = dataclasses.replace(state, running=bool(state.running))
        per_job = loaded.results
        cursor = c.execute(_SELECT_RESULTS)
        while rows := cursor.fetchmany(65_536):
            loaded.rows += len(rows)
            for row in rows:
                job = per_job.get(row[0])
                if job is None:
                    per_job[row[0]] = job = []
                job.append(row)
        for job_id, text in c.execute("SELECT job_id, definition FROM definitions"):
            loaded.definitions[job_id] = json.loads(text)
        return loaded

    def newest_rows(self, job_id: str, limit: int) -> list[tuple[Any, ...]]:
        """The job's ``limit`` newest result rows, oldest first, as :meth:`load` reads
        them (a raised history limit brings back what the database still holds)."""
        rows = self.conn.execute(_SELECT_NEWEST, (job_id, limit)).fetchall()
        rows.reverse()
        return rows

    def integrity(self) -> str:
        """``PRAGMA quick_check``: "ok" or the first problem."""
        return str(self.conn.execute("PRAGMA quick_check(1)").fetchone()[0])

    def records(self, kind: str | None) -> list[RuntimeRecord]:
        """The runtime records of ``kind`` (every kind without), in (kind, key) order."""
        sql = "SELECT kind, key, value, updated FROM records"
        args: tuple[str, ...] = ()
        if kind is not None:
            sql, args = sql + " WHERE kind = ?", (kind,)
        rows = self.conn.execute(sql + " ORDER BY kind, key", args).fetchall()
        return [RuntimeRecord(k, key_, json.loads(v), u) for k, key_, v, u in rows]

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; StorageError (rolled back) when it fails."""
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
                c.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot write {self.path}: {exc}") from None

    def write(self, writes: Writes) -> None:
        """Apply ``writes`` in one transaction."""
        with self.transaction() as c:
            for job_id in writes.drop:
                c.execute("DELETE FROM results WHERE job_id = ?", (job_id,))
                c.execute("DELETE FROM states WHERE job_id = ?", (job_id,))
                c.execute("DELETE FROM definitions WHERE job_id = ?", (job_id,))
            if writes.results:
                c.executemany(_INSERT_RESULT, map(_result_row, writes.results))
            if writes.states:
                c.executemany(_UPSERT_STATE, map(_state_row, writes.states))
            for job_id, keep in writes.trim.items():
                c.execute(
                    "DELETE FROM results WHERE job_id = ?1 AND id <= (SELECT id FROM results "
                    "WHERE job_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                    (job_id, keep),
                )

    def put_definitions(self, definitions: Mapping[str, Mapping[str, Any]], now: float) -> None:
        with self.transaction() as c:
            _insert_definitions(c, definitions, now)

    def put_record(self, record: RuntimeRecord) -> None:
        with self.transaction() as c:
            _insert_records(c, [record])

    def write_everything(
        self,
        writes: Writes,
        definitions: Mapping[str, Mapping[str, Any]],
        records: Sequence[RuntimeRecord],
    ) -> None:
        """Fill a new database with a whole state (results in arrival order per job,
        states, definitions, records) in one transaction: the state dir was lost while
        serving and the server writes what it holds in memory anew."""
        with self.transaction() as c:
            c.executemany(_INSERT_RESULT, map(_result_row, writes.results))
            c.executemany(_UPSERT_STATE, map(_state_row, writes.states))
            _insert_definitions(c, definitions, 0.0)
            _insert_records(c, records)

    def probe(self) -> None:
        """A write that changes nothing but has to reach the disk (a row added and
        removed in one transaction): after a failed write, whether writing works again."""
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO records VALUES ('.probe', '', '{}', 0)")
            c.execute("DELETE FROM records WHERE kind = '.probe'")

    def delete_record(self, kind: str, key: str) -> bool:
        with self.transaction() as c:
            gone = c.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
            return gone.rowcount > 0

    def purge(self, before: float, job_ids: Iterable[str] | None) -> None:
        """Delete results stamped before ``before``, then take them out of the WAL too."""
        with self.transaction() as c:
            if job_ids is None:
                c.execute("DELETE FROM results WHERE timestamp < ?", (before,))
            else:
                c.executemany(
                    "DELETE FROM results WHERE job_id = ? AND timestamp < ?",
                    ((job_id, before) for job_id in job_ids),
                )
        self.checkpoint()

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it to zero bytes; StorageError if
        a reader kept it from completing (the WAL would still hold deleted rows)."""
        try:
            busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot checkpoint {self.path}: {exc}") from None
        if busy:
            raise StorageError(
                f"cannot checkpoint {self.path}: a reader holds it (a backup or a sqlite3 "
                "shell?); the purged rows are deleted but may remain in the WAL file"
            )


def _insert_definitions(
    c: sqlite3.Connection, definitions: Mapping[str, Mapping[str, Any]], now: float
) -> None:
    c.executemany(
        "INSERT OR REPLACE INTO definitions (job_id, definition, updated) VALUES (?, ?, ?)",
        (
            (job_id, json.dumps(d, ensure_ascii=False, sort_keys=True), now)
            for job_id, d in definitions.items()
        ),
    )


def _insert_records(c: sqlite3.Connection, records: Iterable[RuntimeRecord]) -> None:
    c.executemany(
        "INSERT OR REPLACE INTO records (kind, key, value, updated) VALUES (?, ?, ?, ?)",
        ((r.kind, r.key, json.dumps(dict(r.value)), r.updated) for r in records),
    )


def backup(source: Path, target: Path) -> int:
    """Copy the database at ``source`` to ``target`` consistently while a server may be
    writing it (SQLite's online backup); return the size of the copy in bytes. The copy
    goes to a temporary file first, so ``target`` is either the old file or a whole one."""
    if not source.is_file():
        raise StorageError(f"no database at {source}")
    partial = target.with_name(f".{target.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=10.0)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst, pages=1024, sleep=0.001)
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        partial.chmod(0o600)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        partial.replace(target)
    except (sqlite3.Error, OSError) as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise StorageError(f"backup of {source} to {target} failed: {exc}") from None
    return target.stat().st_size


def set_aside(path: Path, now: float | None = None) -> Path:
    """Rename a damaged database (and its WAL and shm files) out of the way, keeping it
    for a post-mortem; return the new name of the main file."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.replace(aside.with_name(aside.name + suffix))
    return aside
