"""How state.db is written so that an interval write stays small: results appended,
state rows written a slice at a time (the results after a state row are applied again on
load), rows beyond a history deleted oldest first, histories cached at a clean shutdown.
Each test checks that what a restart (clean or after a crash) gives back is what the
store held."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
from statedb import insert_state, old_database

from cronmetrics.errors import StorageError
from cronmetrics.storage import database as database_mod
from cronmetrics.storage import schema as schema_mod
from cronmetrics.storage.database import Database
from cronmetrics.storage.history import Result
from cronmetrics.storage.interface import JobState
from cronmetrics.storage.persistence import open_store
from cronmetrics.storage.store import EmbeddedStore
from cronmetrics.testing import wait_for

T0 = 1_767_571_200.0


def result(job: int, i: int, status: str = "success", **extra: object) -> Result:
    at = T0 + i * 60
    fields: dict[str, object] = {
        "host": f"h{job % 3}",
        "duration": 1.0 + i % 5,
        "exit_code": 0 if status == "success" else 1,
        "run_id": f"r{job}-{i}",
        "output": f"out {i % 4}",
        **extra,
    }
    return Result(f"job{job:04d}", status, at, at, **fields)  # type: ignore[arg-type]


def fill(store: EmbeddedStore, jobs: int, per_job: int, *, start: int = 0) -> None:
    for i in range(start, start + per_job):
        status = "failure" if i % 7 == 3 else "success"
        store.record([result(j, i, status) for j in range(jobs)], T0 + i * 60)


def crash(store: EmbeddedStore) -> None:
    """What kill -9 leaves: the database as the last write left it, no final write."""
    assert store.database is not None
    store.database.conn.close()


def snapshot(store: EmbeddedStore) -> tuple[dict[str, object], dict[str, list[Result]]]:
    states = store.states()
    return dict(states), {j: store.history(j) for j in sorted(states)}


def reopen(state_dir: Path, limit: int) -> EmbeddedStore:
    store, report = open_store(state_dir, limit, durable=False, now=T0)
    assert report.fallback is None and report.unavailable is None, report
    return store


def db_rows(state_dir: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(state_dir / "state.db") as db:
        return db.execute(sql).fetchall()


def test_state_rows_behind_their_results_are_brought_up_to_date_on_load(tmp_path: Path) -> None:
    """600 jobs changed by results: one write stores only a slice of their state rows,
    yet a crash right after it loses nothing (counters, last run, failures in a row)."""
    store, _ = open_store(tmp_path, 20, durable=False, now=T0)
    fill(store, 600, 3)
    store.flush(T0)
    fill(store, 600, 2, start=3)
    store.flush(T0)
    behind = db_rows(tmp_path, "SELECT count(*) FROM states WHERE runs_total < 5")[0][0]
    assert behind > 300  # most state rows were not written: the test proves the replay
    before = snapshot(store)
    crash(store)
    again = reopen(tmp_path, 20)
    assert snapshot(again) == before


@pytest.mark.parametrize("count", [1, 3, 255, 256, 257, 769])
def test_a_write_stores_every_row_and_state_whatever_the_count(tmp_path: Path, count: int) -> None:
    """Rows go in many to a statement, in chunks (256, 128, ... 1): every count comes
    back whole and in order after a crash, none twice."""
    store, _ = open_store(tmp_path, 20, durable=False, now=T0)
    store.record([result(j % 300, j // 300) for j in range(count)], T0)
    store.flush(T0)
    before = snapshot(store)
    rows = db_rows(tmp_path, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM results")
    assert rows == [(count, count, 1, count)]
    assert db_rows(tmp_path, "SELECT count(*) FROM states")[0][0] == min(count, 300)
    crash(store)
    assert snapshot(reopen(tmp_path, 20)) == before


def written_bytes() -> int:
    """What this process has written so far (the WAL, checkpoints and temporary files)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def test_rows_of_large_outputs_are_written_about_twice_not_more(tmp_path: Path) -> None:
    """Each row reaches the WAL and then the database file once. A many-row statement
    that could abort would also copy the pages it reuses (freed by the deletes before
    it) to a statement journal, a temporary file: twice as many bytes again."""
    store, _ = open_store(tmp_path, 1, durable=False, now=T0)
    output = "x" * 4000
    for i in range(3):  # a history of one: each write deletes the rows of the one before
        store.record([result(j, i, output=f"{output}{j}") for j in range(2000)], T0)
        before = written_bytes()
        store.flush(T0)
        written = written_bytes() - before
    # 2.1 x the outputs' bytes, 3.0 x with a statement journal
    assert written < 2.5 * 2000 * len(output), written


@pytest.mark.parametrize("durable", [False, True], ids=["periodic", "journaled"])
def test_an_operators_trigger_keeps_its_own_conflict_policy(tmp_path: Path, durable: bool) -> None:
    """A statement's ``OR FAIL`` would override the ``OR REPLACE`` inside the triggers it
    fires: every write of a job's second result failed, and kept failing."""
    store, _ = open_store(tmp_path, 10, durable=durable, now=T0)
    store.close()
    with sqlite3.connect(tmp_path / "state.db") as db:  # "the newest result of each job"
        db.execute("CREATE TABLE newest (job_id TEXT PRIMARY KEY, id INTEGER)")
        db.execute(
            "CREATE TRIGGER keep_newest AFTER INSERT ON results BEGIN "
            "INSERT OR REPLACE INTO newest VALUES (NEW.job_id, NEW.id); END"
        )
    store, _ = open_store(tmp_path, 10, durable=durable, now=T0)
    for i in range(3):
        store.record([result(j, i) for j in range(300)], T0 + i)  # > one statement's rows
        store.flush(T0 + i)
    assert store.health().ok
    newest = dict(db_rows(tmp_path, "SELECT job_id, id FROM newest"))
    heads = dict(db_rows(tmp_path, "SELECT job_id, max(id) FROM results GROUP BY job_id"))
    assert len(newest) == 300 and newest == heads


def test_detached_jobs_that_report_again_and_retries_survive_a_crash(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 20, durable=False, now=T0)
    fill(store, 600, 2)
    detached = [f"job{j:04d}" for j in range(0, 600, 7)]
    store.detach(detached, T0 + 500)
    store.flush(T0)
    for _ in range(2):  # the second time, retries: duplicates, counted once
        store.record([result(j, 10) for j in range(600)], T0 + 900)
    store.flush(T0)
    behind = db_rows(tmp_path, "SELECT count(*) FROM states WHERE detached_since IS NOT NULL")
    assert behind[0][0] > 10  # attached again by results whose state rows wait
    before = snapshot(store)
    assert all(store.state(j).detached_since is None for j in detached)  # type: ignore[union-attr]
    crash(store)
    assert snapshot(reopen(tmp_path, 20)) == before


def test_a_clean_shutdown_caches_the_histories_for_the_next_start(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 10, durable=False, now=T0)
    fill(store, 300, 14)
    store.record([result(1, 99, labels={"team": "db"}, duration=None, output=None)], T0)
    before = snapshot(store)
    store.close()
    assert db_rows(tmp_path, "SELECT count(*) FROM history_cache")[0][0] == 300
    again, report = open_store(tmp_path, 10, durable=False, now=T0)
    assert report.cached == 300
    assert snapshot(again) == before
    # after a crash of the next run, the cache (older now) plus the results since
    fill(again, 300, 3, start=20)
    again.flush(T0)
    later = snapshot(again)
    crash(again)
    assert snapshot(reopen(tmp_path, 10)) == later


def test_a_damaged_history_cache_only_slows_the_start(
    tmp_path: Path, package_log: pytest.LogCaptureFixture
) -> None:
    store, _ = open_store(tmp_path, 10, durable=False, now=T0)
    fill(store, 50, 12)
    before = snapshot(store)
    store.close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE history_cache SET history = x'0500000073' WHERE job_id = 'job0003'")
    again, report = open_store(tmp_path, 10, durable=False, now=T0)
    assert report.fallback is None and report.cached == 0
    assert snapshot(again) == before
    assert "history cache unusable" in package_log.text


def test_rows_beyond_a_history_are_deleted_oldest_first_and_all_at_shutdown(
    tmp_path: Path,
) -> None:
    store, _ = open_store(tmp_path, 5, durable=False, now=T0)
    for n in range(10):
        fill(store, 40, 3, start=n * 3)
        store.flush(T0)
        count = db_rows(tmp_path, "SELECT count(*) FROM results")[0][0]
        assert count <= 40 * 5 + 40 * 3  # at most one write's worth beyond the histories
    kept = {j: [r.run_id for r in store.history(j)] for j in store.ids()}
    store.close()
    rows = db_rows(tmp_path, "SELECT job_id, run_id FROM results_view ORDER BY id")
    assert len(rows) == 40 * 5
    for job_id, run_ids in kept.items():
        assert [r for j, r in rows if j == job_id] == run_ids[::-1]


def wal_pages(path: Path) -> list[int]:
    """The page number of every frame in the WAL of ``path``."""
    wal = path.with_name(path.name + "-wal").read_bytes()
    frame = 24 + int.from_bytes(wal[8:12], "big")  # frame header + page size
    return [int.from_bytes(wal[at : at + 4], "big") for at in range(32, len(wal), frame)]


def test_a_write_frees_the_pages_of_old_rows_before_it_fills_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A periodic write deletes old rows first, so that their pages take the new rows,
    each written once; deleting them last wrote every freed page too (40 % of a write)."""
    store, _ = open_store(tmp_path, 5, durable=False, now=T0)
    fill(store, 2000, 5)
    store.flush(T0)
    freed: list[int] = []
    real = Database.checkpoint_passive

    def counting(database: Database) -> None:
        on_trees = {p for (p,) in database.conn.execute("SELECT pageno FROM dbstat")}
        freed.append(sum(p not in on_trees for p in wal_pages(database.path)))
        real(database)

    monkeypatch.setattr(Database, "checkpoint_passive", counting)
    for n in range(3):
        fill(store, 2000, 1, start=5 + n)  # each write deletes 2,000 old rows (~30 pages)
        store.flush(T0)
    assert max(freed) <= 2, freed  # the freelist trunk, at most


def test_results_beyond_a_history_within_one_write_are_deleted_by_it(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 3, durable=False, now=T0)
    fill(store, 2, 2)
    store.flush(T0)
    fill(store, 2, 10, start=2)  # more results than the history holds, in one write
    store.flush(T0)
    rows = db_rows(tmp_path, "SELECT job_id, run_id FROM results_view ORDER BY id")
    assert sorted(rows) == sorted(
        (j, r.run_id) for j in store.ids() for r in store.history(j)
    )  # fmt: skip
    assert len(rows) == 2 * 3


def test_rows_a_lagging_state_row_needs_wait_to_be_deleted_until_it_catches_up(
    tmp_path: Path,
) -> None:
    """With a history of 2 and state rows written a slice per write, a job's rows after
    its state row went beyond its history before the row was written again: deleting
    them lost the results a crash rebuilds the counters from."""
    store, _ = open_store(tmp_path, 2, durable=False, now=T0)
    for i in range(6):
        fill(store, 300, 1, start=i)
        store.flush(T0)
    before = store.states()
    crash(store)
    assert reopen(tmp_path, 2).states() == before


def test_a_purge_leaves_no_row_beyond_a_history_to_stand_in_for_a_purged_one(
    tmp_path: Path,
) -> None:
    store, _ = open_store(tmp_path, 4, durable=False, now=T0)
    stamps = [T0 + 100, T0 + 200, T0 + 10, T0 + 20]  # the last two sent late
    late = [dataclasses.replace(result(1, i), timestamp=at) for i, at in enumerate(stamps)]
    store.record(late, T0)
    store.flush(T0)
    store.set_max_results(2)  # the history: the last two; the first two beyond it
    store.purge(T0 + 50)
    assert store.history("job0001") == []
    crash(store)
    assert reopen(tmp_path, 2).history("job0001") == []


def test_a_drop_whose_write_fails_keeps_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = open_store(tmp_path, 10, durable=True, now=T0)
    store.record([result(1, 0), result(1, 1)], T0)
    kept = store.state("job0001"), store.history("job0001")

    def full(database: Database, writes: object) -> None:
        raise StorageError("database or disk is full")

    monkeypatch.setattr(Database, "write", full)
    with pytest.raises(StorageError):
        store.drop("job0001")
    monkeypatch.undo()
    assert (store.state("job0001"), store.history("job0001")) == kept
    store.close()
    assert reopen(tmp_path, 10).history("job0001") == kept[1]


def test_a_job_that_comes_as_another_leaves_still_gets_its_state_row_written(
    tmp_path: Path,
) -> None:
    """The slices of stale states follow the sorted ids; a job added as another was
    dropped (the same count) was left out of them: its row never caught up, rows after
    it could not be deleted and the file grew with every write."""
    store, _ = open_store(tmp_path, 2, durable=False, now=T0)
    jobs = list(range(300))  # more stale states than a write takes at once
    fill(store, 300, 1)
    store.flush(T0)
    store.drop("job0000")
    jobs[0] = 9999
    for i in range(1, 60):
        store.record([result(j, i) for j in jobs], T0)
        store.flush(T0)
    (upto,) = db_rows(tmp_path, "SELECT results_upto FROM states WHERE job_id = 'job9999'")[0]
    last = db_rows(tmp_path, "SELECT max(id) FROM results")[0][0]
    assert last - upto <= 300 * 25  # within a round of the slices (24 writes)
    rows = db_rows(tmp_path, "SELECT count(*) FROM results")[0][0]
    assert rows <= 300 * (2 + 25)


def test_a_drop_deletes_the_jobs_running_output_in_the_same_transaction(
    tmp_path: Path,
) -> None:
    store, _ = open_store(tmp_path, 10, durable=True, now=T0)
    store.record([result(1, 0, "start")], T0)
    store.append_output("job0001", "half done\n", run_id=None, limit=100, now=T0)
    assert db_rows(tmp_path, "SELECT count(*) FROM records") == [(1,)]
    statements: list[str] = []
    assert store.database is not None
    store.database.conn.set_trace_callback(statements.append)
    store.drop("job0001")
    store.database.conn.set_trace_callback(None)
    assert db_rows(tmp_path, "SELECT count(*) FROM records") == [(0,)]
    assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]


def test_the_history_cache_is_read_after_the_newest_rows_were_dropped(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 10, durable=False, now=T0)
    fill(store, 3, 2)  # job0002 rows are the newest
    store.flush(T0)
    store.drop("job0002")
    store.close()  # the cache is current up to an id no row has any more
    for _ in range(2):  # every restart, not only the first
        database = Database(tmp_path / "state.db", durable=False)
        try:
            loaded = database.load(10)
        finally:
            database.conn.close()
        assert sorted(loaded.cached) == ["job0000", "job0001"]
        assert not loaded.tail
        reopen(tmp_path, 10).close()


def test_a_smaller_history_limit_trims_the_database_and_the_cache(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 10, durable=False, now=T0)
    fill(store, 20, 10)
    store.close()
    smaller = reopen(tmp_path, 10)
    smaller.set_max_results(4)
    smaller.close()
    rows = db_rows(tmp_path, "SELECT job_id, count(*) FROM results GROUP BY job_id")
    assert {n for _, n in rows} == {4}
    again = reopen(tmp_path, 10)
    assert {len(again.history(j)) for j in again.ids()} == {4}


def test_a_purge_with_state_rows_behind_then_a_crash_keeps_the_counters(
    tmp_path: Path,
) -> None:
    store, _ = open_store(tmp_path, 50, durable=False, now=T0)
    fill(store, 400, 6)
    store.flush(T0)
    assert store.purge(T0 + 3 * 60) == 400 * 3
    before = snapshot(store)
    crash(store)
    again = reopen(tmp_path, 50)
    assert snapshot(again) == before
    assert {again.state(j).runs_total for j in again.ids()} == {6}  # type: ignore[union-attr]


def test_a_journaled_store_writes_only_new_states_with_each_commit(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 20, durable=True, now=T0)
    fill(store, 30, 1)
    fill(store, 30, 4, start=1)
    assert db_rows(tmp_path, "SELECT max(runs_total) FROM states")[0][0] == 1
    before = snapshot(store)
    crash(store)
    assert snapshot(reopen(tmp_path, 20)) == before


def test_a_version_1_database_is_migrated_without_counting_twice(tmp_path: Path) -> None:
    with contextlib.closing(old_database(tmp_path / "state.db", 1)) as db, db:
        db.execute(
            "INSERT INTO results (job_id, status, timestamp, received, run_id) "
            "VALUES ('backup', 'success', ?, ?, 'a'), ('backup', 'failure', ?, ?, 'b')",
            (T0, T0, T0 + 60, T0 + 60),
        )
        written = JobState(
            "backup", T0, T0, last_report=T0 + 60, last_run=T0 + 60, last_success=T0,
            last_failure=T0 + 60, last_status="failure", consecutive_failures=1,
            runs_total=2, failures_total=1, version=2,
        )  # fmt: skip
        insert_state(db, written)
    store = reopen(tmp_path, 10)
    assert db_rows(tmp_path, "PRAGMA user_version")[0][0] == schema_mod.SCHEMA_VERSION
    state = store.state("backup")
    assert state is not None
    assert (state.runs_total, state.failures_total, state.version) == (2, 1, 2)
    assert [r.run_id for r in store.history("backup")] == ["b", "a"]
    store.record([result(0, 5, run_id="c")], T0)
    expected = dataclasses.replace(store.state("backup"))  # type: ignore[type-var]
    crash(store)
    assert reopen(tmp_path, 10).state("backup") == expected


def test_a_purge_leaves_nothing_of_rows_deleted_before_it(tmp_path: Path) -> None:
    """Deleting rows does not write zeros over the pages it frees (that would double an
    interval's bytes), so a dropped job's rows stay on free pages; a purge overwrites
    every free page: afterwards the dropped job's secret is in no file of the state dir."""
    store, _ = open_store(tmp_path, 100, durable=False, now=T0)
    secret = "pw=hunter2-" + "x" * 500
    store.record([result(1, i, output=secret) for i in range(40)], T0)
    store.record([result(2, i) for i in range(3)], T0)
    store.flush(T0)
    store.drop("job0001")
    assert any(b"hunter2" in p.read_bytes() for p in tmp_path.iterdir())
    store.purge(T0 + 60, ["job0002"])
    leftovers = [p.name for p in tmp_path.iterdir() if b"hunter2" in p.read_bytes()]
    assert leftovers == []


def waits_in(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is inside ``function`` now (there, blocked on a lock)."""
    frame = sys._current_frames().get(thread.ident or 0)
    return frame is not None and frame.f_code.co_name == function


def hold_first_write(
    monkeypatch: pytest.MonkeyPatch, *, fails: bool = False, sizes: list[int] | None = None
) -> tuple[threading.Event, threading.Event]:
    """The next ``Database.write`` waits (``held`` is set) until ``release`` is set, then
    writes (or, ``fails``, raises StorageError); ``sizes`` gets each write's row count."""
    held, release = threading.Event(), threading.Event()
    write = database_mod.Database.write

    def held_first(self: database_mod.Database, writes: database_mod.Writes) -> None:
        if sizes is not None:
            sizes.append(len(writes.results))
        if not held.is_set():
            held.set()
            release.wait(10)
            if fails:
                raise StorageError("disk full (test)")
        write(self, writes)

    monkeypatch.setattr(database_mod.Database, "write", held_first)
    return held, release


def journaled_calls_during_a_held_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, first_fails: bool
) -> tuple[EmbeddedStore, list[int], dict[int, str]]:
    """Seven journaled record() calls made while the first call's commit is held: the
    row count of each database write, and the error (if any) each call got."""
    store, _ = open_store(tmp_path, 20, durable=True, now=T0)
    sizes: list[int] = []
    held, release = hold_first_write(monkeypatch, fails=first_fails, sizes=sizes)
    errors: dict[int, str] = {}

    def call(job: int) -> None:
        try:
            store.record([result(job, 0)], T0)
        except StorageError as exc:
            errors[job] = exc.message

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert held.wait(10)
    others = [threading.Thread(target=call, args=(j,)) for j in range(1, 8)]
    for t in others:
        t.start()
    # every other call has queued its batch and waits for a commit
    wait_for(lambda: store._group.queued() == 7, "seven queued batches", timeout=10)
    release.set()
    for t in [first, *others]:
        t.join(10)
    return store, sizes, errors


def test_journaled_calls_queued_during_a_commit_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, sizes, errors = journaled_calls_during_a_held_commit(
        tmp_path, monkeypatch, first_fails=False
    )
    assert sizes == [1, 7] and errors == {}
    assert sorted(store.ids()) == [f"job{j:04d}" for j in range(8)]
    before = snapshot(store)
    crash(store)
    assert snapshot(reopen(tmp_path, 20)) == before


def test_a_failed_group_commit_fails_its_own_calls_and_the_next_group_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, sizes, errors = journaled_calls_during_a_held_commit(
        tmp_path, monkeypatch, first_fails=True
    )
    assert sizes == [1, 7]
    assert errors == {0: "disk full (test)"}
    assert sorted(store.ids()) == [f"job{j:04d}" for j in range(1, 8)]
    crash(store)
    assert sorted(reopen(tmp_path, 20).ids()) == [f"job{j:04d}" for j in range(1, 8)]


def record_in_thread(store: EmbeddedStore, job: int, i: int = 0) -> threading.Thread:
    thread = threading.Thread(target=store.record, args=([result(job, i)], T0), daemon=True)
    thread.start()
    return thread


def test_a_commit_failing_with_a_bug_fails_its_group_and_the_next_call_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = open_store(tmp_path, 20, durable=True, now=T0)
    write = database_mod.Database.write
    calls: list[int] = []

    def buggy_once(self: database_mod.Database, writes: database_mod.Writes) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        write(self, writes)

    monkeypatch.setattr(database_mod.Database, "write", buggy_once)
    with pytest.raises(StorageError, match="cannot commit results: RuntimeError"):
        store.record([result(1, 0)], T0)
    after = record_in_thread(store, 2)
    after.join(10)
    assert not after.is_alive(), "the call after a failed commit never returned"
    assert store.ids() == ["job0002"]


def test_an_exit_code_beyond_64_bits_is_refused_whole_naming_the_field(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 20, durable=True, now=T0)
    bad = dataclasses.replace(result(1, 0), exit_code=2**64)
    with pytest.raises(StorageError, match="exit_code 18446744073709551616 does not fit in 64"):
        store.record([result(2, 0), bad], T0)
    assert store.ids() == []
    store.record([result(3, 0)], T0)
    assert store.ids() == ["job0003"]


def test_a_call_interrupted_while_queued_leaves_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    store, _ = open_store(tmp_path, 20, durable=True, now=T0)
    held, release = hold_first_write(monkeypatch)
    leader = record_in_thread(store, 1)
    assert held.wait(10)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            store.record([result(2, 0)], T0)  # queued behind the held commit
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    later = record_in_thread(store, 3)
    wait_for(lambda: store._group.queued() == 1, "the later call queued", timeout=10)
    release.set()
    for thread in (leader, later):
        thread.join(10)
        assert not thread.is_alive(), "a call waited for a lead nobody held"
    assert sorted(store.ids()) == ["job0001", "job0003"]


@pytest.mark.parametrize("durable", [True, False])
@pytest.mark.parametrize("written_between", [True, False])
def test_a_limit_lowered_then_raised_does_not_bring_cut_results_back_after_a_crash(
    tmp_path: Path, durable: bool, written_between: bool
) -> None:
    store, _ = open_store(tmp_path, 30, durable=durable, now=T0)
    for i in range(30):
        store.record([result(1, i)], T0)
    store.flush(T0)
    store.set_max_results(10)
    if written_between:
        store.record([result(1, 30)], T0)
        store.flush(T0)
    store.set_max_results(30)
    store.flush(T0)
    before = snapshot(store)
    crash(store)
    after = snapshot(reopen(tmp_path, 30))
    assert len(after[1]["job0001"]) == len(before[1]["job0001"]) == 10
    assert after == before


@pytest.mark.parametrize("durable", [True, False])
def test_raising_the_limit_keeps_what_a_crash_rebuilds_the_counters_from(
    tmp_path: Path, durable: bool
) -> None:
    store, _ = open_store(tmp_path, 10, durable=durable, now=T0)
    for i in range(10):
        store.record([result(1, i)], T0)
    store.flush(T0)
    for i in range(10, 30):  # journaled: the state row stays behind; else: queued
        store.record([result(1, i)], T0)
    store.set_max_results(20)
    before = snapshot(store)
    crash(store)
    after = snapshot(reopen(tmp_path, 20))
    assert after == before
    assert after[0]["job0001"].runs_total == 30  # type: ignore[attr-defined]
    assert len(after[1]["job0001"]) == 10


def test_a_limit_lowered_during_a_journaled_commit_applies_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = open_store(tmp_path, 10, durable=True, now=T0)
    for i in range(4):
        store.record([result(1, i)], T0)
    held, release = hold_first_write(monkeypatch)
    commit = record_in_thread(store, 1, 4)
    assert held.wait(10)
    lowering = threading.Thread(target=store.set_max_results, args=(4,), daemon=True)
    lowering.start()
    wait_for(lambda: waits_in(lowering, "set_max_results"), "the limit change to wait", timeout=10)
    release.set()
    for thread in (commit, lowering):
        thread.join(10)
    store.set_max_results(20)
    before = snapshot(store)
    assert len(before[1]["job0001"]) == 4
    crash(store)
    assert snapshot(reopen(tmp_path, 20)) == before


def test_a_detach_during_a_journaled_commit_is_kept_and_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = open_store(tmp_path, 10, durable=True, now=T0)
    store.record([result(1, 0)], T0)
    store.record([result(2, 0)], T0)
    held, release = hold_first_write(monkeypatch)
    commit = record_in_thread(store, 1, 1)
    assert held.wait(10)
    detach = threading.Thread(
        target=store.detach, args=(["job0001", "job0002"], T0 + 100), daemon=True
    )
    detach.start()
    wait_for(lambda: waits_in(detach, "_set_state"), "the detach to wait", timeout=10)
    release.set()
    for thread in (commit, detach):
        thread.join(10)
    held_states = store.states()
    assert {j: s.detached_since for j, s in held_states.items()} == {
        "job0001": T0 + 100,
        "job0002": T0 + 100,
    }
    store.close()
    again = reopen(tmp_path, 10)
    assert {j: s.detached_since for j, s in again.states().items()} == {
        "job0001": T0 + 100,
        "job0002": T0 + 100,
    }


@pytest.mark.parametrize("durable", [True, False])
def test_text_that_is_not_utf8_is_refused_and_does_not_block_later_writes(
    tmp_path: Path, durable: bool
) -> None:
    store, _ = open_store(tmp_path, 20, durable=durable, now=T0)
    lone = dataclasses.replace(result(1, 0), output="half a pair: \ud800")
    with pytest.raises(StorageError, match="output is not valid text"):
        store.record([lone], T0)
    bad_label = dataclasses.replace(result(1, 0), labels={"team": "\udfff"})
    with pytest.raises(StorageError, match="label 'team' is not valid text"):
        store.record([bad_label], T0)
    store.record([dataclasses.replace(result(2, 0), output="✓ fertig, 0 Fehler")], T0)
    store.flush(T0)  # not failing on a row queued before
    crash(store)
    again = reopen(tmp_path, 20)
    assert again.ids() == ["job0002"]
    assert again.history("job0002")[0].output == "✓ fertig, 0 Fehler"


HEX_ID = "0123456789abcdef" * 2


def test_a_run_id_of_32_hex_digits_is_stored_as_its_16_bytes_and_read_back(
    tmp_path: Path,
) -> None:
    store, _ = open_store(tmp_path, 20, durable=True, now=T0)
    ids = [HEX_ID, HEX_ID.upper(), "0123-not-hex", None]
    for i, run_id in enumerate(ids):
        store.record([dataclasses.replace(result(1, i), run_id=run_id)], T0)
    stored = db_rows(tmp_path, "SELECT typeof(run_id), length(run_id) FROM results ORDER BY id")
    assert stored == [("blob", 16), ("text", 32), ("text", 12), ("null", None)]
    shown = db_rows(tmp_path, "SELECT run_id FROM results_view ORDER BY id")
    assert [r for (r,) in shown] == ids
    before = snapshot(store)
    crash(store)
    again = reopen(tmp_path, 20)
    assert snapshot(again) == before
    assert [r.run_id for r in again.history("job0001")] == ids[::-1]
    # the same (run id, status) after the reload is known: counted once
    repeated = dataclasses.replace(result(1, 9), run_id=HEX_ID)
    assert not again.record([repeated], T0)[0].changed
    assert again.state("job0001").runs_total == 4  # type: ignore[union-attr]


@pytest.mark.parametrize("durable", [True, False])
def test_a_running_run_replayed_after_a_crash_keeps_its_run_id_and_its_finish_ends_it(
    tmp_path: Path, durable: bool
) -> None:
    store, _ = open_store(tmp_path, 20, durable=durable, now=T0)
    fill(store, 600, 1)
    store.flush(T0)  # the state rows; the starts below are replayed on load
    store.record(
        [dataclasses.replace(result(j, 1, "start"), run_id=f"{j:032x}") for j in range(600)], T0
    )
    store.flush(T0)  # journal off: the results, and a slice of the states only
    crash(store)
    behind = db_rows(tmp_path, "SELECT count(*) FROM states WHERE running = 0")[0][0]
    assert behind > 0  # the test replays starts
    again = reopen(tmp_path, 20)
    for j in range(600):
        state = again.state(f"job{j:04d}")
        assert state is not None and state.running and state.run_id == f"{j:032x}"
    again.record([dataclasses.replace(result(7, 2), run_id=f"{7:032x}")], T0)
    assert again.state("job0007").running is False  # type: ignore[union-attr]


def test_a_version_2_database_with_text_run_ids_is_read_and_gets_the_view(
    tmp_path: Path,
) -> None:
    with contextlib.closing(old_database(tmp_path / "state.db", 2)) as db, db:
        db.execute("CREATE VIEW results_view AS SELECT id FROM results")  # an operator's
        db.execute(
            "INSERT INTO results (id, job_id, status, timestamp, received, run_id) "
            "VALUES (1, 'job0001', 'success', ?, ?, ?)",
            (T0, T0, HEX_ID),
        )
        insert_state(db, JobState("job0001", T0, T0, last_report=T0, runs_total=1))
    again, _ = open_store(tmp_path, 20, durable=True, now=T0)
    assert [r.run_id for r in again.history("job0001")] == [HEX_ID]
    again.record([dataclasses.replace(result(1, 1), run_id=HEX_ID[::-1])], T0)
    assert db_rows(tmp_path, "SELECT typeof(run_id) FROM results ORDER BY id") == [
        ("text",),
        ("blob",),
    ]
    shown = db_rows(tmp_path, "SELECT run_id FROM results_view ORDER BY id")
    assert shown == [(HEX_ID,), (HEX_ID[::-1],)]
    assert db_rows(tmp_path, "PRAGMA user_version") == [(schema_mod.SCHEMA_VERSION,)]


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("run_id = x'0102'", "job0001: a run id blob is not 16 bytes"),
        ("timestamp = 'noon'", "job0001: a time is not a number"),
    ],
)
def test_a_hand_damaged_result_row_sets_the_database_aside_and_starts_empty(
    tmp_path: Path, damage: str, named: str
) -> None:
    store, _ = open_store(tmp_path, 20, durable=False, now=T0)
    store.record([dataclasses.replace(result(1, 0), run_id=HEX_ID)], T0)
    store.flush(T0)
    crash(store)
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute(f"UPDATE results SET {damage}")
    again, report = open_store(tmp_path, 20, durable=False, now=T0)
    assert report.fallback is not None and named in report.fallback
    assert report.set_aside is not None and report.set_aside.exists()
    assert again.ids() == []
    again.record([result(2, 0)], T0)  # and the new database takes writes
    again.flush(T0)
    assert db_rows(tmp_path, "SELECT job_id FROM results") == [("job0002",)]


@pytest.mark.parametrize("durable", [True, False])
def test_a_result_after_a_purge_of_a_whole_history_links_to_no_purged_row(
    tmp_path: Path, durable: bool
) -> None:
    store, _ = open_store(tmp_path, 20, durable=durable, now=T0)
    for i in range(5):
        store.record([result(1, i)], T0)
    store.flush(T0)
    assert store.purge(T0 + 3600) == 5  # every result of the job
    store.record([result(1, 100)], T0)
    store.flush(T0)
    assert db_rows(tmp_path, "SELECT prev FROM results") == [(None,)]
    assert db_rows(tmp_path, "SELECT id FROM job_heads") == db_rows(
        tmp_path, "SELECT id FROM results"
    )
    store.close()
    assert [r.timestamp for r in reopen(tmp_path, 20).history("job0001")] == [T0 + 100 * 60]


def test_rows_beyond_a_lower_limit_at_start_are_deleted_by_the_writes(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path, 20, durable=False, now=T0)
    fill(store, 3, 20)
    store.close()
    smaller = reopen(tmp_path, 5)  # the limit was lowered in the configuration
    assert {len(smaller.history(j)) for j in smaller.ids()} == {5}
    smaller.close()  # the final write deletes every row beyond the histories
    per_job = db_rows(tmp_path, "SELECT job_id, count(*) FROM results GROUP BY job_id")
    assert sorted(per_job) == [(f"job{j:04d}", 5) for j in range(3)]
