"""``state.db``: the embedded engine's SQLite database in the state dir.

Standard SQLite in WAL mode, so an operator can query it (``sqlite3 state.db``), back it
up (``cronmetrics backup``, SQLite's online backup) and check it (``PRAGMA
integrity_check``) with standard tools. The schema (:mod:`~cronmetrics.storage.schema`
brings an older file up to date at open)::

    results(id INTEGER PRIMARY KEY, job_id, status, timestamp, received, duration,
            exit_code, run_id, host, output, labels,   -- one row per result, arrival order
            prev)                  -- the job's result before it; received NULL: timestamp
    results_view                     -- the same, run ids as text (32 hex digits: a blob)
    states(job_id PRIMARY KEY, first_seen, active_since, last_..., runs_total, ...,
           results_upto,                               -- current up to result results_upto
           last_result)                                -- the job's newest result up to it
    marks(name PRIMARY KEY, value)   -- 'states_upto': every state row is current up to it
    job_heads(job_id, id)            -- each job's newest result (view)
    definitions(job_id PRIMARY KEY, definition JSON, updated)  -- last good definitions
    records(kind, key, value JSON, updated, PRIMARY KEY (kind, key))  -- runtime records
    history_cache(job_id PRIMARY KEY, results_upto, ids, history)  -- at clean shutdown

Writes are shaped so that one interval's write touches few pages: result ids only grow
(:mod:`~cronmetrics.storage.rowbook` assigns them), so new rows fill the last pages of
``results``, which has no per-job index; a state row may be older than the results (the
store writes it in a slice of neighbouring rows, see
:class:`~cronmetrics.storage.store.EmbeddedStore`) and loading
applies the results after its ``results_upto`` again (only those after
``marks.states_upto`` can be missing from a state row, so a job idle for weeks does not
make a start read the whole table); rows are deleted by id, the oldest together, before
the new rows go in (the pages they free take the new rows, each page written once;
deleted after, the freed pages were written too: 40 % of a write). A job's
newest results are found without a per-job index (whose random page per result would
cost ten times the bytes of a write): follow ``prev`` from its ``job_heads`` row, a
primary-key lookup per result; a purge that takes rows from the middle of a chain links
past them. :meth:`Database.load` reads the ``history_cache`` of the last clean shutdown
(one row per job) and only the results after it; a damaged cache is read around.

Every write is one transaction (:meth:`Database.write`): a failure (full disk, EIO)
rolls all of it back, so a batch is on disk whole or not at all. ``secure_delete`` is
``FAST`` (deleted rows are zeroed in their pages; pages that become free keep their
bytes until reused); a purge runs with it ``ON``, overwrites every free page and ends
with a truncating WAL checkpoint: purged output, and whatever older deletes left on free
pages, is overwritten in the database file and gone from the WAL before the purge
answers; a purge also deletes the cached histories of the jobs it touches.

Only one thread uses a :class:`Database` at a time (the store's writer lock); the
connection is opened with ``check_same_thread=False`` for that reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import operator
import os
import sqlite3
import time
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

from cronmetrics.errors import StorageError
from cronmetrics.storage.columns import stored_run_id
from cronmetrics.storage.history import COLUMNS, LITTLE_ENDIAN, History, Result
from cronmetrics.storage.interface import JobState, RuntimeRecord
from cronmetrics.storage.schema import migrate

__all__ = ["DB_NAME", "Database", "Loaded", "backup"]

DB_NAME = "state.db"
STATE_FIELDS = tuple(f.name for f in dataclasses.fields(JobState))

#: the ``marks`` row: every state row includes every result up to this id (the
#: ``job_heads`` view of migration 4 names it too)
_STATES_UPTO = "states_upto"

#: ``FAST`` zeroes deleted rows within the pages a write touches anyway, but does not
#: write zeros over a page that becomes free (half the bytes of an interval's write, whose
#: deleted rows are the oldest: whole pages); a purge turns it ``ON`` and overwrites the
#: free pages (:meth:`Database.purge`)
_SECURE_DELETE = "FAST"

_RESULT_COLUMNS = ("job_id", *COLUMNS)
# column names are constants of this module, never input: S608 does not apply
_INSERT_RESULTS = f"INSERT INTO results (id, {', '.join(_RESULT_COLUMNS)}, prev) VALUES "  # noqa: S608
_RESULT_WIDTH = 2 + len(_RESULT_COLUMNS)
_UPSERT_STATE = (
    f"INSERT OR REPLACE INTO states ({', '.join(STATE_FIELDS)}, results_upto, "  # noqa: S608
    f"last_result) VALUES ({', '.join('?' * (2 + len(STATE_FIELDS)))})"
)
_state_values = operator.attrgetter(*STATE_FIELDS)
#: rows one INSERT of results binds at most (SQLite allows 32,766 values a statement): a
#: write binds many rows a statement instead of stepping one statement per row, a third
#: less time for an interval's 5,000 rows. Such a statement keeps the old contents of the
#: pages it changes (the ones the deletes just freed) in a statement journal, so that it
#: can abort alone; past 64 KiB that spills to a temporary file (twice the bytes with 4 KB
#: outputs, and a full /tmp failed the write) unless temporary files are kept in memory,
#: as ``_setup`` has it (``temp_store=MEMORY``). Not ``OR FAIL`` to do without the journal:
#: a statement's conflict policy overrides the ones inside the triggers it fires, and an
#: operator's trigger with ``INSERT OR REPLACE`` then failed every write. States stay one
#: row a statement (a many-row ``OR REPLACE`` was measured with the journal on disk only)
_ROWS_AT_ONCE = 256
_SELECT_STATES = f"SELECT {', '.join(STATE_FIELDS)}, results_upto FROM states"  # noqa: S608
#: ``received`` is stored NULL when it is the timestamp
_STORED_COLUMNS = tuple(
    "coalesce(received, timestamp)" if c == "received" else c for c in _RESULT_COLUMNS
)
_SELECT_TAIL = f"SELECT id, {', '.join(_STORED_COLUMNS)} FROM results WHERE id > ? ORDER BY id"  # noqa: S608
#: one statement for every id: a JSON array
_DELETE_ROWS = "DELETE FROM results WHERE id IN (SELECT value FROM json_each(?))"
_DROP = (
    "DELETE FROM results WHERE job_id IN (SELECT value FROM json_each(?))",
    "DELETE FROM states WHERE job_id IN (SELECT value FROM json_each(?))",
    "DELETE FROM definitions WHERE job_id IN (SELECT value FROM json_each(?))",
    "DELETE FROM history_cache WHERE job_id IN (SELECT value FROM json_each(?))",
)


def _result_row(row_id: int, r: Result, prev: int | None) -> tuple[Any, ...]:
    labels = json.dumps(r.labels, ensure_ascii=False, sort_keys=True) if r.labels else None
    return (
        row_id,
        r.job_id,
        r.status,
        r.timestamp,
        None if r.received == r.timestamp else r.received,
        r.host,
        r.duration,
        r.exit_code,
        stored_run_id(r.run_id),
        r.output,
        labels,
        prev,
    )


def _insert_results(c: sqlite3.Connection, values: list[Any]) -> None:
    """Insert the result rows laid end to end in ``values``: at most
    :data:`_ROWS_AT_ONCE` rows a statement, in chunks of powers of two so that a few
    statement texts serve every count (the connection caches them)."""
    rows, rest = divmod(len(values), _RESULT_WIDTH)
    assert not rest, "values are whole rows"
    start = 0
    while rows:
        size = min(_ROWS_AT_ONCE, 1 << (rows.bit_length() - 1))
        end = start + size * _RESULT_WIDTH
        c.execute(_insert_statement(size), values[start:end])
        rows, start = rows - size, end


@functools.cache
def _insert_statement(rows: int) -> str:
    row = f"({', '.join('?' * _RESULT_WIDTH)})"
    return _INSERT_RESULTS + ", ".join([row] * rows)


def _put_records(c: sqlite3.Connection, records: Iterable[RuntimeRecord]) -> None:
    """Write runtime records (replacing those of the same kind and key)."""
    c.executemany(
        "INSERT OR REPLACE INTO records (kind, key, value, updated) VALUES (?, ?, ?, ?)",
        ((r.kind, r.key, json.dumps(dict(r.value)), r.updated) for r in records),
    )


def _put(c: sqlite3.Connection, writes: Writes) -> None:
    """Insert ``writes.results`` (each linked to its job's result before it) and upsert
    ``writes.states`` (each naming its job's newest result), in the open transaction."""
    if writes.results:
        values: list[Any] = []
        first = writes.first_id
        numbers = range(first, first + len(writes.results))
        for row_id, result, prev in zip(numbers, writes.results, writes.prevs, strict=True):
            values += _result_row(row_id, result, prev or None)
        _insert_results(c, values)
    if writes.states:
        upto = writes.upto
        c.executemany(
            _UPSERT_STATE,
            ((*_state_values(s), upto, newest) for s, newest in writes.states),
        )
    if writes.states_upto is not None:
        c.execute(
            "INSERT OR REPLACE INTO marks (name, value) VALUES (?, ?)",
            (_STATES_UPTO, writes.states_upto),
        )


def _ids_blob(ids: array[int]) -> bytes:
    """Row ids (ascending) as compressed little-endian differences: a few bytes each."""
    deltas = array("q", (b - a for a, b in zip(chain((0,), ids), ids, strict=False)))
    if not LITTLE_ENDIAN:
        deltas.byteswap()
    return zlib.compress(deltas.tobytes(), 1)


def _ids_from(blob: bytes) -> array[int]:
    deltas = array("q")
    try:
        deltas.frombytes(zlib.decompress(blob))
    except (zlib.error, ValueError) as exc:
        raise ValueError(f"cached row ids are damaged ({exc})") from None
    if not LITTLE_ENDIAN:
        deltas.byteswap()
    return array("q", accumulate(deltas))


@dataclass(slots=True)
class Loaded:
    """What a database held at open.

    ``states`` are current: a state row says up to which result it is (``results_upto``)
    and the results after it are applied on load (``tail``, a row id before each result
    row). ``histories`` come from the cache of the last clean shutdown, ``tail`` adds the
    results after it; ``ids`` are the row ids of each job's results in the database."""

    states: dict[str, JobState] = field(default_factory=dict)
    #: job id -> the last result id its state row includes
    state_upto: dict[str, int] = field(default_factory=dict)
    #: job id -> (the last result id its cached history includes, row ids, history)
    cached: dict[str, tuple[int, array[int], History]] = field(default_factory=dict)
    #: the results after the oldest of those points, in arrival order, per job
    tail: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the highest result id in the database (0: none)
    last_id: int = 0
    #: every state row includes every result up to this id (0: not known)
    states_upto: int = 0
    #: the highest result id the database names anywhere (rows, state rows, the mark,
    #: the cache): new rows are numbered above it, so that no id is used twice (after
    #: the newest rows were deleted, a reused id would be one a state row includes)
    used_upto: int = 0
    #: why the history cache was not used (None: it was, or there was none)
    cache_problem: str | None = None


@dataclass(frozen=True, slots=True)
class Writes:
    """One transaction's worth of changes."""

    #: new results, numbered from ``first_id`` up (above every id in the database), and
    #: each one's previous row of the same job (0: none)
    results: Sequence[Result] = ()
    prevs: Sequence[int] = ()
    first_id: int = 1
    #: states, each current up to result id ``upto``, with its job's newest row id
    states: Sequence[tuple[JobState, int | None]] = ()
    upto: int = 0
    #: every state row, once written, includes every result up to this id (None: as is)
    states_upto: int | None = None
    #: jobs to delete whole (states, results, definitions, cache), with their runtime
    #: records of this kind (keyed by job id)
    drop: Sequence[str] = ()
    drop_records: str | None = None
    #: result rows to delete (histories trimmed to their limit)
    delete: Sequence[int] = ()
    #: forget every cached history (the history limit changed)
    forget_cache: bool = False


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
        c.execute(f"PRAGMA secure_delete={_SECURE_DELETE}")
        c.execute("PRAGMA temp_store=MEMORY")  # statement journals too: _ROWS_AT_ONCE
        c.execute("PRAGMA foreign_keys=OFF")
        migrate(c, self.path.name)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()

    # -- reading ---------------------------------------------------------------------------

    def load(self, max_results: int) -> Loaded:
        """Everything, for the memory of the embedded engine (sqlite3.DatabaseError for
        a damaged file: a bad page shows up while reading it). A damaged history cache is
        only a slower start: the histories are read from the results instead."""
        c = self.conn
        loaded = Loaded()
        running = STATE_FIELDS.index("running")
        for row in c.execute(_SELECT_STATES):
            values = list(row[:-1])
            values[running] = bool(values[running])
            state = JobState(*values)
            loaded.states[state.job_id] = state
            loaded.state_upto[state.job_id] = row[-1]
        loaded.last_id = c.execute("SELECT coalesce(max(id), 0) FROM results").fetchone()[0]
        mark = c.execute("SELECT value FROM marks WHERE name = ?", (_STATES_UPTO,)).fetchone()
        states_upto = loaded.states_upto = mark[0] if mark else 0
        # a cache beyond every id named elsewhere is not the one the state rows were
        # written with (after the newest rows were deleted, the same as state rows')
        named = max(loaded.last_id, states_upto, max(loaded.state_upto.values(), default=0))
        loaded.used_upto = max(
            named,
            c.execute("SELECT coalesce(max(results_upto), 0) FROM history_cache").fetchone()[0],
        )
        try:
            for job_id, upto, ids, packed in c.execute(
                "SELECT job_id, results_upto, ids, history FROM history_cache"
            ):
                if job_id in loaded.states and upto <= named:
                    history = History.unpack(job_id, packed, max_results)
                    loaded.cached[job_id] = (upto, _ids_from(ids), history)
        except (ValueError, TypeError) as exc:
            loaded.cached, loaded.cache_problem = {}, str(exc)
        cached = loaded.cached
        # a state needs the results after its row (none of its job's up to states_upto:
        # a job idle for weeks does not make every start read the whole table), a cached
        # history those after it, any other history all of its job's
        start = min(
            (
                min(max(upto, states_upto), cached[j][0] if j in cached else 0)
                for j, upto in loaded.state_upto.items()
            ),
            default=0,
        )
        tail = loaded.tail
        cursor = c.execute(_SELECT_TAIL, (start,))
        while rows := cursor.fetchmany(65_536):
            for row in rows:
                job = tail.get(row[1])
                if job is None:
                    tail[row[1]] = job = []
                job.append(row)
        for job_id, text in c.execute("SELECT job_id, definition FROM definitions"):
            loaded.definitions[job_id] = json.loads(text)
        return loaded

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
        """Apply ``writes`` in one transaction: results are appended (their ids only
        grow, so they fill the last pages of the table), trimmed rows deleted by id."""
        with self.transaction() as c:
            if writes.drop:
                dropped = (json.dumps(list(writes.drop)),)
                for statement in _DROP:
                    c.execute(statement, dropped)
                if writes.drop_records is not None:
                    c.execute(
                        "DELETE FROM records WHERE kind = ? AND key IN "
                        "(SELECT value FROM json_each(?))",
                        (writes.drop_records, *dropped),
                    )
            if writes.forget_cache:
                c.execute("DELETE FROM history_cache")
            # the old rows first: the pages they free are then filled by the new rows,
            # each written once, instead of written freed and other pages filled
            first = writes.first_id if writes.results else math.inf
            old = [i for i in writes.delete if i < first]
            if old:
                c.execute(_DELETE_ROWS, (json.dumps(old),))
            _put(c, writes)
            if new := [i for i in writes.delete if i >= first]:  # beyond a history already
                c.execute(_DELETE_ROWS, (json.dumps(new),))

    def checkpoint_passive(self) -> None:
        """Copy the WAL into the database now, without waiting for readers: each write's
        pages reach the database file once, and the WAL restarts from its beginning
        instead of growing to the auto-checkpoint size."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def put_cache(self, histories: Iterable[tuple[History, array[int]]], upto: int) -> None:
        """Replace the history cache by ``histories`` (each with its rows' ids), all
        current up to result id ``upto``: the next start reads one row per job."""
        with self.transaction() as c:
            c.execute("DELETE FROM history_cache")
            c.executemany(
                "INSERT INTO history_cache (job_id, results_upto, ids, history) "
                "VALUES (?, ?, ?, ?)",
                ((h.job_id, upto, _ids_blob(ids), h.pack()) for h, ids in histories),
            )

    def put_definitions(self, definitions: Mapping[str, Mapping[str, Any]], now: float) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO definitions (job_id, definition, updated) VALUES (?, ?, ?)",
                (
                    (job_id, json.dumps(d, ensure_ascii=False, sort_keys=True), now)
                    for job_id, d in definitions.items()
                ),
            )

    def write_records(
        self, put: Sequence[RuntimeRecord], delete: Sequence[tuple[str, str]]
    ) -> None:
        """Runtime records written and (kind, key) ones deleted, in one transaction."""
        with self.transaction() as c:
            _put_records(c, put)
            c.executemany("DELETE FROM records WHERE kind = ? AND key = ?", delete)

    def write_everything(
        self,
        writes: Writes,
        definitions: Mapping[str, Mapping[str, Any]],
        records: Sequence[RuntimeRecord],
    ) -> None:
        """Fill a new database with a whole state (numbered results, states current up
        to ``writes.upto``, definitions, records) in one transaction: the state dir was
        lost while serving and the server writes what it holds in memory anew."""
        with self.transaction() as c:
            _put(c, writes)
            c.executemany(
                "INSERT OR REPLACE INTO definitions (job_id, definition, updated) VALUES (?, ?, ?)",
                (
                    (job_id, json.dumps(d, ensure_ascii=False, sort_keys=True), 0.0)
                    for job_id, d in definitions.items()
                ),
            )
            _put_records(c, records)

    def probe(self) -> None:
        """A write that changes nothing but has to reach the disk (a row added and
        removed in one transaction): after a failed write, whether writing works again."""
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO records VALUES ('.probe', '', '{}', 0)")
            c.execute("DELETE FROM records WHERE kind = '.probe'")

    def purge(self, before: float, job_ids: Iterable[str] | None) -> list[tuple[str, int]]:
        """Delete results stamped before ``before`` and the cached histories of the jobs
        that lost some, with ``secure_delete=ON``; overwrite every free page (what rows
        deleted earlier left there); then take it all out of the WAL too. Return the
        (job id, row id) of every deleted row."""
        self.conn.execute("PRAGMA secure_delete=ON")
        try:
            gone = self._purge(before, job_ids)
        finally:
            self.conn.execute(f"PRAGMA secure_delete={_SECURE_DELETE}")
        self.checkpoint()
        return gone

    def _purge(self, before: float, job_ids: Iterable[str] | None) -> list[tuple[str, int]]:
        with self.transaction() as c:
            if job_ids is None:
                deleted = c.execute(
                    "DELETE FROM results WHERE timestamp < ? RETURNING job_id, id, prev",
                    (before,),
                ).fetchall()
            else:
                deleted = c.execute(
                    "DELETE FROM results WHERE timestamp < ? AND job_id IN "
                    "(SELECT value FROM json_each(?)) "
                    "RETURNING job_id, id, prev",
                    (before, json.dumps(list(job_ids))),
                ).fetchall()
            gone = [(job_id, row_id) for job_id, row_id, _ in deleted]
            _relink(c, {row_id: prev for _, row_id, prev in deleted})
            if gone:
                c.execute(
                    "DELETE FROM history_cache WHERE job_id IN (SELECT value FROM json_each(?))",
                    (json.dumps(sorted({job_id for job_id, _ in gone})),),
                )
            if free := c.execute("PRAGMA freelist_count").fetchone()[0]:
                # a zero blob as long as the free pages takes them all as its overflow
                # pages and writes zeros over them; dropped, they are free (and zero) again
                size = c.execute("PRAGMA page_size").fetchone()[0]
                c.execute("CREATE TABLE purge_scrub (zeros BLOB)")
                c.execute("INSERT INTO purge_scrub VALUES (zeroblob(?))", (free * size,))
                c.execute("DROP TABLE purge_scrub")
        return gone

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


def _relink(c: sqlite3.Connection, deleted: Mapping[int, int | None]) -> None:
    """Link past ``deleted`` rows (row id -> its ``prev``): the results and states that
    named one name the newest older row of their job that is left. Usually there is none
    (a purge by age takes each job's oldest rows), so nothing is done; a job whose
    timestamps are out of arrival order may lose a row in the middle of its chain."""
    past: dict[int, int] = {}
    for row_id, prev in deleted.items():
        while prev is not None and prev in deleted:
            prev = deleted[prev]
        if prev is not None:
            past[row_id] = prev
    if not past:
        return
    c.execute("CREATE TEMP TABLE relink (gone INTEGER PRIMARY KEY, prev INTEGER NOT NULL)")
    try:
        c.executemany("INSERT INTO relink VALUES (?, ?)", past.items())
        c.execute(
            "UPDATE results SET prev = relink.prev FROM relink WHERE results.prev = relink.gone"
        )
        c.execute(
            "UPDATE states SET last_result = relink.prev FROM relink "
            "WHERE states.last_result = relink.gone"
        )
    finally:
        c.execute("DROP TABLE temp.relink")


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
