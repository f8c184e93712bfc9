"""The in-memory result store: folding results into state, history, counters."""

from __future__ import annotations

from typing import Any

from cronmetrics.storage.store import JobState, MemoryStore, Result

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z


def result(status: str, at: float, job_id: str = "backup", **extra: Any) -> Result:
    return Result(job_id=job_id, status=status, timestamp=at, received=at, **extra)


def test_late_result_goes_to_history_and_counters_but_does_not_roll_state_back() -> None:
    store = MemoryStore()
    state = store.ensure("backup", T0)
    store.record(result("success", T0 + 100, duration=5))
    changed = store.record(result("failure", T0 + 50, duration=9))
    assert [r.timestamp for r in store.history("backup")] == [T0 + 100, T0 + 50]
    assert (state.runs_total, state.failures_total) == (2, 1)
    assert state.last_status == "success"
    assert state.last_report == T0 + 100
    assert state.last_failure is None
    assert state.last_duration == 5
    assert state.consecutive_failures == 0
    assert changed  # the exported counters did change


def test_late_start_does_not_mark_the_job_running() -> None:
    store = MemoryStore()
    state = store.ensure("backup", T0)
    store.record(result("success", T0 + 100))
    assert not store.record(result("start", T0 + 10))
    assert not state.running


def test_counters_count_finished_runs_only() -> None:
    store = MemoryStore()
    state = store.ensure("backup", T0)
    for i, status in enumerate(["start", "success", "start", "failure", "failure", "success"]):
        store.record(result(status, T0 + i))
    assert (state.runs_total, state.failures_total) == (4, 2)


def test_consecutive_failures_reset_on_success() -> None:
    store = MemoryStore()
    state = store.ensure("backup", T0)
    for i in range(3):
        store.record(result("failure", T0 + i, exit_code=1))
    assert state.consecutive_failures == 3
    assert state.last_exit_code == 1
    store.record(result("success", T0 + 10, exit_code=0))
    assert state.consecutive_failures == 0
    assert (state.last_success, state.last_failure) == (T0 + 10, T0 + 2)


def test_history_keeps_the_last_max_results_per_job() -> None:
    store = MemoryStore(max_results_per_job=3)
    store.ensure("backup", T0)
    for i in range(5):
        store.record(result("success", T0 + i))
    assert [r.timestamp for r in store.history("backup")] == [T0 + 2, T0 + 3, T0 + 4]


def test_purge_drops_old_history_including_out_of_order_entries() -> None:
    store = MemoryStore()
    store.ensure("backup", T0)
    for at in (T0 + 10, T0 + 30, T0 + 5, T0 + 40):
        store.record(result("success", at))
    assert store.purge(T0 + 20) == 2
    assert [r.timestamp for r in store.history("backup")] == [T0 + 30, T0 + 40]


def test_state_copy_is_independent() -> None:
    state = JobState(first_seen=T0, active_since=T0)
    state.history.append(result("success", T0))
    clone = state.copy()
    clone.history.append(result("success", T0 + 1))
    assert len(state.history) == 1


def test_drop_forgets_the_job() -> None:
    store = MemoryStore()
    store.ensure("backup", T0)
    store.drop("backup")
    assert store.get("backup") is None
    assert list(store.ids()) == []
