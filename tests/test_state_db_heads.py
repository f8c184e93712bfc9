"""A job's newest results in ``state.db`` without a per-job index.

Each result row names its job's result before it (``prev``), the ``job_heads`` view names
each job's newest; the query of docs/operations.md follows them. These tests run that
query as the docs print it and compare it with the store's own history, through trims,
lazy state rows, crashes, purges, drops and a re-created database; and they check that
``marks.states_upto`` keeps a job that has been idle for long from making a start read
every result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
import sqlite3
from pathlib import Path

import pytest
from statedb import insert_state, old_database

from cronmetrics.storage import database as database_mod
from cronmetrics.storage import schema as schema_mod
from cronmetrics.storage.database import Database
from cronmetrics.storage.history import Result
from cronmetrics.storage.interface import JobState
from cronmetrics.storage.persistence import open_store
from cronmetrics.storage.store import EmbeddedStore

T0 = 1_767_571_200.0
DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
DOC_JOB = "backup@db1"


def docs_query() -> str:
    """The ``sql`` block of docs/operations.md that reads a job's newest results."""
    blocks = re.findall(r"^```sql\n(.*?)^```", DOCS.read_text(), re.MULTILINE | re.DOTALL)
    (query,) = [b for b in blocks if "job_heads" in b]
    return query


def newest(state_dir: Path, job_id: str) -> list[tuple[str, str | None]]:
    """(status, run id) of a job's newest results, newest first, as the docs read them."""
    query = docs_query().replace(f"'{DOC_JOB}'", "?")
    count = query.count("?")
    with contextlib.closing(sqlite3.connect(state_dir / "state.db")) as db:
        rows = db.execute(query, (job_id,) * count).fetchall()
    return [(row[1], row[4]) for row in rows]


def expected(store: EmbeddedStore, job_id: str) -> list[tuple[str, str | None]]:
    return [(r.status, r.run_id) for r in store.history(job_id, limit=10)]


#: rows linked to a row of another job (each row's ``prev`` must be its own job's)
CROSS_LINKS = (
    "SELECT count(*) FROM results r JOIN results p ON r.prev = p.id WHERE r.job_id <> p.job_id"
)


def assert_newest(state_dir: Path, store: EmbeddedStore, job_id: str) -> None:
    """The documented query starts with the store's history (the database may hold a few
    rows beyond it that wait to be deleted, older than all of it), and no row links to
    another job's."""
    want = expected(store, job_id)
    assert newest(state_dir, job_id)[: len(want)] == want
    assert db_values(state_dir / "state.db", CROSS_LINKS) == [0]


def db_values(path: Path, sql: str) -> list[object]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute(sql)]


def result(job: int, i: int, *, at: float | None = None) -> Result:
    stamp = T0 + i * 60 if at is None else at
    status = "failure" if i % 5 == 2 else "success"
    return Result(f"job{job}", status, stamp, stamp, run_id=f"r{job}-{i}")


def record_rounds(store: EmbeddedStore, jobs: range, rounds: range) -> None:
    """One result per job and round, a periodic write after each round."""
    for i in rounds:
        store.record([result(j, i) for j in jobs], T0 + i * 60)
        store.flush(T0 + i * 60)


@pytest.mark.parametrize("durable", [False, True], ids=["periodic", "journal"])
def test_the_documented_query_reads_each_jobs_newest_results_through_trims_and_crashes(
    tmp_path: Path, durable: bool
) -> None:
    # 400 jobs: more stale states than a write takes at once, so state rows lag behind
    store, _ = open_store(tmp_path, 6, durable=durable, now=T0)
    record_rounds(store, range(400), range(9))  # every history full, rows trimmed
    store.record([result(7, 9)], T0)  # a result not yet in a periodic write
    store.flush(T0)
    behind = database_mod.Database(tmp_path / "state.db", durable=False)
    try:
        lagging = behind.conn.execute(
            "SELECT count(*) FROM states WHERE results_upto < (SELECT max(id) FROM results)"
        ).fetchone()[0]
    finally:
        behind.conn.close()
    assert lagging > 0  # the heads must come from the rows after the state rows
    for job in ("job0", "job7", "job399"):
        assert_newest(tmp_path, store, job)
    assert store.database is not None
    store.database.conn.close()  # kill -9
    again, _ = open_store(tmp_path, 6, durable=durable, now=T0)
    record_rounds(again, range(0, 400, 3), range(9, 12))
    for job in ("job0", "job7", "job398", "job399"):
        assert_newest(tmp_path, again, job)
    again.close()
    assert_newest(tmp_path, again, "job3")


def test_a_purge_of_results_out_of_arrival_order_links_past_the_purged_ones(
    tmp_path: Path,
) -> None:
    store, _ = open_store(tmp_path, 20, durable=False, now=T0)
    # arrival order 0..5; results 2 and 5 are stamped before the others (a backfill)
    stamps = [T0 + 600, T0 + 660, T0, T0 + 720, T0 + 780, T0 + 60]
    for i, stamp in enumerate(stamps):
        store.record([result(1, i, at=stamp), result(2, i)], T0)
    store.flush(T0)
    store.purge(T0 + 300, ["job1"])
    assert [r.run_id for r in store.history("job1")] == ["r1-4", "r1-3", "r1-1", "r1-0"]
    assert_newest(tmp_path, store, "job1")  # past 5 (the head) and 2
    assert_newest(tmp_path, store, "job2")
    store.close()
    assert_newest(tmp_path, store, "job1")


def test_a_dropped_job_that_comes_back_starts_a_new_chain(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 10, durable=True, now=T0)
    record_rounds(store, range(3), range(4))
    store.drop("job1")
    store.record([result(1, 8)], T0)
    assert newest(tmp_path, "job1") == [("success", "r1-8")]
    assert_newest(tmp_path, store, "job2")


def test_a_database_written_anew_from_memory_has_its_links(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 5, durable=False, now=T0)
    record_rounds(store, range(3), range(8))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with store._writer:  # what the state dir's guard does for a deleted state.db
        store.replace_database_locked(Database(fresh / "state.db", durable=False))
    for job in ("job0", "job1", "job2"):  # nothing to delete yet: each chain is whole
        assert newest(fresh, job) == expected(store, job)
    assert db_values(fresh / "state.db", CROSS_LINKS) == [0]
    record_rounds(store, range(2), range(8, 10))
    for job in ("job0", "job2"):
        assert_newest(fresh, store, job)


def test_a_job_idle_for_long_does_not_make_a_start_read_every_result(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 10, durable=False, now=T0)
    store.record([result(99, 0)], T0)
    store.flush(T0)
    record_rounds(store, range(50), range(1, 30))
    store.close()
    database = Database(tmp_path / "state.db", durable=False)
    try:
        loaded = database.load(10)
    finally:
        database.conn.close()
    assert sum(map(len, loaded.tail.values())) == 0  # the cache holds every history
    assert loaded.states_upto == loaded.last_id
    again, _ = open_store(tmp_path, 10, durable=False, now=T0)
    assert [r.run_id for r in again.history("job99")] == ["r99-0"]
    assert again.states() == store.states()


def test_a_version_3_database_gets_its_links_and_heads_on_migration(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with contextlib.closing(old_database(path, 3)) as db, db:
        for row_id, (job, i) in enumerate([(1, 0), (2, 0), (1, 1), (2, 1), (1, 2)], 1):
            r = result(job, i)
            db.execute(
                "INSERT INTO results (id, job_id, status, timestamp, received, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (row_id, r.job_id, r.status, r.timestamp, r.received + row_id % 2, r.run_id),
            )
        for job, runs in (("job1", 3), ("job2", 2)):
            state = JobState(job, T0, T0, last_report=T0, runs_total=runs)
            insert_state(db, state, results_upto=5)
    store, _ = open_store(tmp_path, 10, durable=False, now=T0)
    assert_newest(tmp_path, store, "job1")
    assert len(expected(store, "job1")) == 3
    # received: stored NULL where it was the timestamp, kept where it was not
    assert [r.received - r.timestamp for r in store.history("job1")] == [1.0, 1.0, 1.0]
    assert [r.received - r.timestamp for r in store.history("job2")] == [0.0, 0.0]
    assert db_values(path, "SELECT received IS NULL FROM results ORDER BY id") == [
        0, 1, 0, 1, 0
    ]  # fmt: skip
    store.record([result(2, 2)], T0)
    store.flush(T0)
    assert_newest(tmp_path, store, "job2")
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == schema_mod.SCHEMA_VERSION
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_received_time_is_stored_only_where_it_is_not_the_timestamp(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 10, durable=True, now=T0)
    late = dataclasses.replace(result(1, 1), received=T0 + 90.5)
    store.record([result(1, 0), late], T0)
    assert store.database is not None
    store.database.conn.close()  # kill -9: the rows are read back, not the cache
    again, _ = open_store(tmp_path, 10, durable=True, now=T0)
    assert [r.received for r in again.history("job1")] == [T0 + 90.5, T0]
    path = tmp_path / "state.db"
    assert db_values(path, "SELECT received FROM results ORDER BY id") == [None, T0 + 90.5]
    assert db_values(path, "SELECT received FROM results_view ORDER BY id") == [T0, T0 + 90.5]


def lowest_behind(path: Path) -> int:
    """From the database alone: the id before the first result that some state row lacks
    (the highest id when every state row is current), what ``states_upto`` should say."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        (lacking,) = db.execute(
            "SELECT min(r.id) - 1 FROM results AS r JOIN states AS s USING (job_id) "
            "WHERE r.id > s.results_upto"
        ).fetchone()
        (last,) = db.execute("SELECT coalesce(max(id), 0) FROM results").fetchone()
    return int(last if lacking is None else lacking)


@pytest.mark.parametrize("durable", [False, True], ids=["periodic", "journal"])
def test_the_states_mark_is_the_lowest_state_row_behind_after_every_write(
    tmp_path: Path, durable: bool
) -> None:
    rng = random.Random(14)
    store, _ = open_store(tmp_path, 1000, durable=durable, now=T0)
    path = tmp_path / "state.db"
    jobs = list(range(300))  # more stale states than a write takes at once
    for step in range(150):
        action = rng.random()
        if action < 0.1:  # the job furthest behind, or any
            furthest = db_values(
                path,
                "SELECT job_id FROM results AS r JOIN states AS s USING (job_id) "
                "WHERE r.id > s.results_upto ORDER BY r.id LIMIT 1",
            )
            gone = str(furthest[0]) if furthest else f"job{rng.choice(jobs)}"
            store.drop(gone)
            jobs.remove(int(gone[3:]))
        elif action < 0.15:
            store.activate(f"job{rng.choice(jobs)}", T0)
        picked = rng.sample(jobs, rng.randint(1, 40))
        store.record([result(j, step) for j in picked], T0)  # a write follows: the mark
        if not durable:
            store.flush(T0)
        marked = db_values(path, "SELECT value FROM marks WHERE name = 'states_upto'")
        assert marked == [lowest_behind(path)], step
    store.close()
    assert db_values(path, "SELECT value FROM marks") == [lowest_behind(path)]


def test_ids_are_not_given_again_after_the_newest_rows_were_deleted(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 10, durable=True, now=T0)
    store.record([result(1, 0)], T0)
    store.record([result(1, 1), result(2, 0)], T0)  # job2's row is the newest
    store.drop("job2")
    store.close()  # job1's state row is current up to that deleted row
    again, _ = open_store(tmp_path, 10, durable=True, now=T0)
    again.record([result(1, 2)], T0)
    assert_newest(tmp_path, again, "job1")
    before = again.states()["job1"]
    assert again.database is not None
    again.database.conn.close()  # kill -9
    after, _ = open_store(tmp_path, 10, durable=True, now=T0)
    assert after.states()["job1"] == before  # the journaled result 2 counted once
    assert [r.run_id for r in after.history("job1")] == ["r1-2", "r1-1", "r1-0"]


def test_a_migration_keeps_an_operators_views_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with contextlib.closing(old_database(path, 3)) as db, db:
        db.execute("INSERT INTO results (id, job_id, status, timestamp, received) "
                   "VALUES (1, 'job1', 'failure', ?, ?)", (T0, T0))  # fmt: skip
        state = JobState("job1", T0, T0, last_report=T0, runs_total=1, failures_total=1)
        insert_state(db, state, results_upto=1)
        db.execute("CREATE VIEW failures AS SELECT job_id FROM results_view "
                   "WHERE status = 'failure'")  # fmt: skip
        db.execute("CREATE VIEW hosts AS SELECT DISTINCT host FROM results")
        db.execute("CREATE INDEX mine_by_status ON results (status)")
    store, report = open_store(tmp_path, 10, durable=False, now=T0)
    assert report.fallback is None, report
    assert store.state("job1") == state
    store.record([dataclasses.replace(result(1, 2), host="h1")], T0)
    store.close()
    assert db_values(path, "SELECT job_id FROM failures") == ["job1", "job1"]
    assert db_values(path, "SELECT host FROM hosts ORDER BY host") == [None, "h1"]
    assert db_values(path, "SELECT name FROM sqlite_schema WHERE name = 'mine_by_status'") == [
        "mine_by_status"
    ]


def test_a_migration_of_a_database_whose_view_an_operator_dropped(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with contextlib.closing(old_database(path, 3)) as db, db:
        db.execute("DROP VIEW results_view")
    _, report = open_store(tmp_path, 10, durable=False, now=T0)
    assert report.fallback is None, report
    assert db_values(path, "PRAGMA user_version") == [schema_mod.SCHEMA_VERSION]
