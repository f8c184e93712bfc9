"""``state.db``'s schema, and the migrations that bring an older file up to it.

The version is ``PRAGMA user_version``; :data:`MIGRATIONS` holds, per version, the
statements that bring a database of the version before to it, and :func:`migrate` runs
the missing ones at open, in one transaction (a failure leaves the file as it was). A
file from a newer cronmetrics is refused, never written. Operators may add their own
views, indexes and triggers: a migration that makes a table anew makes an operator's
indexes and triggers on it again, and renames with ``legacy_alter_table`` so that an
operator's view over the table does not fail it. What each table holds is drawn in
:mod:`cronmetrics.storage.database`.
"""

from __future__ import annotations

import sqlite3

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

SCHEMA_VERSION = 4

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
    # 2: interval writes append only. The per-job index touched a random page per result
    # (28 MB per write of 5,000 results); state rows are written lazily and say up to
    # which result they are current; each job's history is cached at a clean shutdown.
    2: (
        "DROP INDEX results_by_job",
        "ALTER TABLE states ADD COLUMN results_upto INTEGER NOT NULL DEFAULT 0",
        "UPDATE states SET results_upto = (SELECT coalesce(max(id), 0) FROM results)",
        """CREATE TABLE history_cache (
            job_id TEXT PRIMARY KEY,
            results_upto INTEGER NOT NULL,
            ids BLOB NOT NULL,
            history BLOB NOT NULL
        )""",
    ),
    # 3: run ids of 32 hex digits are stored as their 16 bytes (older rows keep their
    # text: both are read); the view shows every row with its run id as text
    3: (
        "DROP VIEW IF EXISTS results_view",  # one an operator made: ours replaces it
        """CREATE VIEW results_view AS SELECT id, job_id, status, timestamp, received,
            host, duration, exit_code,
            CASE typeof(run_id) WHEN 'blob' THEN lower(hex(run_id)) ELSE run_id END
                AS run_id,
            output, labels
        FROM results""",
    ),
    # 4: a job's newest results without a per-job index: each result names the job's
    # result before it (``prev``), each state row the job's newest result, and ``marks``
    # says up to which result id every state row is current (the rows after it, few, are
    # searched for newer ones: the ``job_heads`` view). ``received`` is NULL when it is
    # the timestamp (a result without a timestamp of its own: most), 8 bytes less a row.
    # The table is made anew for the NULL (SQLite cannot drop a NOT NULL).
    4: (
        "DROP VIEW IF EXISTS results_view",
        """CREATE TABLE results_4 (
            id INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('start', 'success', 'failure')),
            timestamp REAL NOT NULL,
            received REAL,
            host TEXT,
            duration REAL,
            exit_code INTEGER,
            run_id TEXT,
            output TEXT,
            labels TEXT,
            prev INTEGER
        )""",
        """INSERT INTO results_4 SELECT id, job_id, status, timestamp,
            nullif(received, timestamp), host, duration, exit_code, run_id, output, labels,
            lag(id) OVER (PARTITION BY job_id ORDER BY id)
        FROM results ORDER BY id""",
        "DROP TABLE results",
        "ALTER TABLE results_4 RENAME TO results",
        "ALTER TABLE states ADD COLUMN last_result INTEGER",
        """UPDATE states SET last_result = newest.id
        FROM (SELECT job_id, max(id) AS id FROM results GROUP BY job_id) AS newest
        WHERE states.job_id = newest.job_id""",
        """CREATE TABLE marks (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE VIEW results_view AS SELECT id, job_id, status, timestamp,
            coalesce(received, timestamp) AS received, host, duration, exit_code,
            CASE typeof(run_id) WHEN 'blob' THEN lower(hex(run_id)) ELSE run_id END
                AS run_id,
            output, labels, prev
        FROM results""",
        """CREATE VIEW job_heads AS SELECT job_id, coalesce(
            (SELECT max(r.id) FROM results AS r
             WHERE r.id > max(s.results_upto, coalesce(
                 (SELECT value FROM marks WHERE name = 'states_upto'), 0))
               AND r.job_id = s.job_id),
            s.last_result) AS id
        FROM states AS s""",
    ),
}
assert max(MIGRATIONS) == SCHEMA_VERSION
#: schema version -> the table its migration makes anew (and drops the old one)
_MADE_ANEW = {4: "results"}


def _added_to(c: sqlite3.Connection, table: str | None) -> list[str]:
    """The indexes and triggers on ``table`` (an operator's: ours are in the migrations),
    to make again on the table that replaces it."""
    if table is None:
        return []
    rows = c.execute(
        "SELECT sql FROM sqlite_schema WHERE tbl_name = ? AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL",
        (table,),
    )
    return [sql for (sql,) in rows]


def migrate(c: sqlite3.Connection, name: str) -> None:
    """Bring the database on ``c`` (its file named ``name``, for the message) up to
    :data:`SCHEMA_VERSION`; sqlite3.DatabaseError for one newer than that."""
    version = c.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"{name} has schema version {version}, newer than this "
            f"cronmetrics knows ({SCHEMA_VERSION})"
        )
    if version == SCHEMA_VERSION:
        return
    # a rename does not check the views (an operator's, over a table made anew, would
    # fail it: they name the new table once it has the old name)
    c.execute("PRAGMA legacy_alter_table=ON")
    c.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version + 1, SCHEMA_VERSION + 1):
            kept = _added_to(c, _MADE_ANEW.get(step))
            for statement in MIGRATIONS[step]:
                c.execute(statement)
            for statement in kept:
                c.execute(statement)
        c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise
    finally:
        c.execute("PRAGMA legacy_alter_table=OFF")
