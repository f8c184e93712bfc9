"""The embedded engine in memory: folding results into state, history, counters."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from cronmetrics.storage.interface import JobState, Result, Store
from cronmetrics.storage.store import EmbeddedStore

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z


def result(status: str, at: float, job_id: str = "backup", **extra: Any) -> Result:
    return Result(job_id=job_id, status=status, timestamp=at, received=at, **extra)


def record(store: EmbeddedStore, *results: Result) -> tuple[JobState, bool]:
    outcome = store.record(results, T0)
    return outcome[-1].state, outcome[-1].changed


def test_the_embedded_engine_implements_the_store_interface() -> None:
    assert isinstance(EmbeddedStore(), Store)


def test_late_result_goes_to_history_and_counters_but_does_not_roll_state_back() -> None:
    store = EmbeddedStore()
    store.ensure("backup", T0)
    record(store, result("success", T0 + 100, duration=5))
    state, changed = record(store, result("failure", T0 + 50, duration=9))
    assert [r.timestamp for r in store.history("backup")] == [T0 + 100, T0 + 50]
    assert (state.runs_total, state.failures_total) == (2, 1)
    assert state.last_status == "success"
    assert state.last_report == T0 + 100
    assert state.last_failure is None
    assert state.last_duration == 5
    assert state.consecutive_failures == 0
    assert changed  # the exported counters did change
    assert store.state("backup") == state


def test_late_start_does_not_mark_the_job_running() -> None:
    store = EmbeddedStore()
    record(store, result("success", T0 + 100))
    state, changed = record(store, result("start", T0 + 10))
    assert not changed
    assert not state.running


def test_counters_count_finished_runs_only() -> None:
    store = EmbeddedStore()
    statuses = ["start", "success", "start", "failure", "failure", "success"]
    state, _ = record(store, *(result(s, T0 + i) for i, s in enumerate(statuses)))
    assert (state.runs_total, state.failures_total) == (4, 2)


def test_consecutive_failures_reset_on_success() -> None:
    store = EmbeddedStore()
    state, _ = record(store, *(result("failure", T0 + i, exit_code=1) for i in range(3)))
    assert state.consecutive_failures == 3
    assert state.last_exit_code == 1
    state, _ = record(store, result("success", T0 + 10, exit_code=0))
    assert state.consecutive_failures == 0
    assert (state.last_success, state.last_failure) == (T0 + 10, T0 + 2)


def test_history_keeps_the_last_max_results_per_job() -> None:
    store = EmbeddedStore(max_results_per_job=3)
    record(store, *(result("success", T0 + i) for i in range(5)))
    assert [r.timestamp for r in store.history("backup")] == [T0 + 4, T0 + 3, T0 + 2]


def test_history_is_newest_first_with_a_limit_and_a_before_cursor() -> None:
    store = EmbeddedStore()
    record(store, *(result("success", T0 + i) for i in range(10)))
    assert [r.timestamp for r in store.history("backup", 3)] == [T0 + 9, T0 + 8, T0 + 7]
    page = store.history("backup", 3, before=T0 + 7)
    assert [r.timestamp for r in page] == [T0 + 6, T0 + 5, T0 + 4]


def test_purge_drops_old_history_including_out_of_order_entries() -> None:
    store = EmbeddedStore()
    record(store, *(result("success", at) for at in (T0 + 10, T0 + 30, T0 + 5, T0 + 40)))
    assert store.purge(T0 + 20) == 2
    assert [r.timestamp for r in store.history("backup")] == [T0 + 40, T0 + 30]
    assert store.state("backup").runs_total == 4  # type: ignore[union-attr]


def test_a_returned_state_never_changes_under_its_holder() -> None:
    store = EmbeddedStore()
    first, _ = record(store, result("success", T0))
    record(store, result("failure", T0 + 1))
    assert (first.runs_total, first.last_status) == (1, "success")
    assert store.state("backup").version > first.version  # type: ignore[union-attr]


def test_the_same_run_id_and_status_twice_is_acknowledged_and_counted_once() -> None:
    store = EmbeddedStore()
    first = store.record([result("success", T0, run_id="r1")], T0)
    again = store.record([result("success", T0 + 1, run_id="r1")], T0 + 1)
    assert again[0].duplicate and not again[0].changed
    assert again[0].state == first[0].state
    assert store.state("backup").runs_total == 1  # type: ignore[union-attr]
    assert len(store.history("backup")) == 1
    # the same run id with another status is the next step of that run, not a repeat
    store.record([result("failure", T0 + 2, run_id="r1")], T0 + 2)
    assert store.state("backup").runs_total == 2  # type: ignore[union-attr]


def test_a_repeat_inside_one_batch_counts_once() -> None:
    store = EmbeddedStore()
    outcome = store.record([result("success", T0, run_id="r1")] * 2, T0)
    assert [o.duplicate for o in outcome] == [False, True]
    assert store.state("backup").runs_total == 1  # type: ignore[union-attr]


def test_a_result_the_history_cannot_hold_refuses_the_whole_batch() -> None:
    from cronmetrics.errors import StorageError

    store = EmbeddedStore()
    with pytest.raises(StorageError, match="timestamp"):
        store.record([result("success", T0), result("success", float("nan"))], T0)
    assert store.state("backup") is None


def test_a_detached_job_keeps_everything_and_gets_it_back() -> None:
    store = EmbeddedStore()
    record(store, result("success", T0))
    store.detach(["backup"], T0 + 5)
    assert store.state("backup").detached_since == T0 + 5  # type: ignore[union-attr]
    back = store.ensure("backup", T0 + 10)
    assert (back.detached_since, back.runs_total, back.first_seen) == (None, 1, T0)
    assert len(store.history("backup")) == 1


def test_detached_jobs_expire_after_their_time_and_others_stay() -> None:
    store = EmbeddedStore()
    record(store, result("success", T0), result("success", T0, job_id="other"))
    store.detach(["backup"], T0)
    assert store.expire_detached(T0 - 1) == []
    assert store.expire_detached(T0 + 1) == ["backup"]
    assert store.ids() == ["other"]


def test_drop_forgets_the_job_and_the_change_cursor_says_so() -> None:
    store = EmbeddedStore()
    store.ensure("backup", T0)
    _, cursor = store.changes("")
    assert store.drop("backup")
    assert store.state("backup") is None
    assert store.ids() == []
    ids, cursor = store.changes(cursor)
    assert ids == ["backup"]
    assert store.changes(cursor)[0] == []


def test_an_unknown_cursor_lists_every_job() -> None:
    store = EmbeddedStore()
    store.ensure("a", T0)
    store.ensure("b", T0)
    assert sorted(store.changes("from-another-process.7")[0]) == ["a", "b"]


def test_a_cursor_from_another_process_gets_every_id_never_too_few() -> None:
    """What a second process sees: its cursor (even one that happens to count further
    than ours) is not ours, so it gets every id this store knows."""
    code = (
        "from cronmetrics.storage.store import EmbeddedStore\n"
        "s = EmbeddedStore()\n"
        "for i in range(500): s.ensure(f'j{i}', 0.0)\n"
        "print(s.changes('')[1])\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    store = EmbeddedStore()
    store.ensure("a", T0)
    store.ensure("b", T0)
    _, ours = store.changes("")
    assert other != ours
    assert sorted(store.changes(other)[0]) == ["a", "b"]
    assert store.changes(ours)[0] == []


def test_a_foreign_cursor_lists_the_jobs_dropped_since_the_store_started() -> None:
    store = EmbeddedStore()
    store.ensure("a", T0)
    store.ensure("gone", T0)
    assert store.drop("gone")
    ids, _ = store.changes("cursor-of-another-process")
    assert sorted(ids) == ["a", "gone"]
    assert store.state("gone") is None


def test_runtime_records_round_trip_in_key_order() -> None:
    store = EmbeddedStore()
    store.put_record("window", "b", {"jobs": ["x"]}, T0)
    store.put_record("window", "a", {"jobs": []}, T0 + 1)
    assert [r.key for r in store.list_records("window")] == ["a", "b"]
    assert store.get_record("window", "b").value == {"jobs": ["x"]}  # type: ignore[union-attr]
    assert store.delete_record("window", "b")
    assert not store.delete_record("window", "b")
    assert store.list_records("other") == []


@pytest.mark.parametrize("durable", [False, True])
def test_a_changed_history_limit_keeps_what_a_restart_with_it_keeps(
    tmp_path: Any, durable: bool
) -> None:
    from cronmetrics.monitor import Monitor
    from cronmetrics.storage.persistence import open_store

    def start(limit: int) -> EmbeddedStore:
        store, report = open_store(tmp_path, limit, durable=durable, now=T0)
        assert report.fallback is None and report.unavailable is None
        return store

    def reload(store: EmbeddedStore, limit: int) -> None:
        Monitor(store).reconfigure(
            accept_unknown=False, max_output_bytes=10_000, redact=None, max_results_per_job=limit
        )

    def add(store: EmbeddedStore, first: int, count: int) -> None:
        results = [result("success", T0 + i, run_id=f"r{i}") for i in range(first, first + count)]
        store.record(results, T0)

    def restart(store: EmbeddedStore, limit: int) -> tuple[EmbeddedStore, list[str]]:
        live = store.history("backup")
        store.close()
        again = start(limit)
        assert again.history("backup") == live
        return again, [r.run_id or "" for r in live]

    store = start(10)
    add(store, 0, 12)
    store.flush()
    add(store, 12, 3)  # without the journal: recorded, not yet written
    reload(store, 20)  # longer: the history grows to it from here
    add(store, 15, 5)
    store, kept = restart(store, 20)
    assert kept == [f"r{i}" for i in range(19, 4, -1)]
    reload(store, 4)  # shorter: cut at once
    assert [r.run_id for r in store.history("backup")] == ["r19", "r18", "r17", "r16"]
    store, kept = restart(store, 4)
    reload(store, 20)
    add(store, 20, 2)
    store, kept = restart(store, 20)
    assert kept == ["r21", "r20", "r19", "r18", "r17", "r16"]
    store.close()
