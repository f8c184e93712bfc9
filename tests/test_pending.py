"""What the embedded engine owes its next write, and planning a batch of results."""

from __future__ import annotations

from cronmetrics.storage.history import History, Result
from cronmetrics.storage.interface import JobState, new_state
from cronmetrics.storage.pending import SLICES, Pending
from cronmetrics.storage.transitions import plan_results

T0 = 1_700_000_000.0


def result(job_id: str, status: str = "success", run_id: str | None = None) -> Result:
    return Result(job_id, status, T0, T0, run_id=run_id)


def test_a_state_changed_only_by_results_waits_for_its_slice() -> None:
    pending = Pending()
    pending.mark("a", by_results=True)
    pending.mark("b", by_results=False)
    assert pending.stale == {"a"}
    assert pending.dirty == {"b"}


def test_a_state_changed_otherwise_is_written_next_even_after_results() -> None:
    pending = Pending()
    pending.mark("a", by_results=False)
    pending.mark("a", by_results=True)  # still owed at once: the other change is unwritten
    pending.mark("b", by_results=True)
    pending.mark("b", by_results=False)
    assert pending.dirty == {"a", "b"}
    assert pending.stale == set()


def test_many_stale_states_go_round_in_slices_and_none_is_left_behind() -> None:
    ids = [f"job{i:05d}" for i in range(3_000)]
    pending = Pending()
    pending.sort(ids, len(ids))
    for job_id in ids:
        pending.mark(job_id, by_results=True)
    seen: list[set[str]] = []
    for _ in range(SLICES):
        taken = pending.take()
        assert len(taken.stale) < len(ids) // 10  # a slice, not everything
        seen.append(taken.stale)
    assert set().union(*seen) == set(ids)
    assert sum(map(len, seen)) == len(ids)  # each written once
    assert pending.stale == set()


def test_a_few_stale_states_and_everything_are_taken_at_once() -> None:
    pending = Pending()
    for i in range(10):
        pending.mark(f"job{i}", by_results=True)
    assert len(pending.take().stale) == 10
    ids = [f"job{i}" for i in range(2_000)]
    pending.sort(ids, len(ids))
    for job_id in ids:
        pending.mark(job_id, by_results=True)
    assert pending.take(everything=True).stale == set(ids)


def test_a_failed_write_gives_back_everything_its_rows_before_newer_ones() -> None:
    pending = Pending(rows=[result("a")], forget_cache=True)
    pending.mark("a", by_results=False)
    pending.mark("s", by_results=True)
    pending.cut.add("c")
    taken = pending.take()
    assert (pending.rows, pending.dirty, pending.stale, pending.cut) == ([], set(), set(), set())
    assert not pending.forget_cache
    newer = result("b")
    pending.rows.append(newer)
    pending.mark("s", by_results=False)  # changed otherwise while the write failed
    pending.restore(taken)
    assert [r.job_id for r in pending.rows] == ["a", "b"]
    assert pending.dirty == {"a", "s"}
    assert pending.stale == set()  # owed at once now, so not in its slice too
    assert pending.cut == {"c"}
    assert pending.forget_cache


def test_a_dropped_job_owes_nothing() -> None:
    pending = Pending(rows=[result("gone"), result("kept"), result("gone")])
    pending.mark("gone", by_results=False)
    pending.cut.add("gone")
    pending.forget("gone")
    taken = pending.take()
    assert [r.job_id for r in taken.rows] == ["kept"]
    assert "gone" not in taken.dirty | taken.stale | taken.cut


def test_a_dropped_job_resorts_the_slices_though_as_many_jobs_came() -> None:
    pending = Pending()
    ids = [f"job{i:04d}" for i in range(1_000)]
    pending.sort(ids, len(ids))
    pending.forget("job0000")
    ids = [*ids[1:], "zzz"]
    pending.sort(ids, len(ids))  # same count, another set
    for job_id in ids:
        pending.mark(job_id, by_results=True)
    picked: set[str] = set()
    for _ in range(SLICES):
        picked |= pending.take().stale
    assert "zzz" in picked
    assert pending.stale == set()


def plan(
    batches: list[list[Result]],
    current: dict[str, JobState] | None = None,
    histories: dict[str, History] | None = None,
) -> tuple[list[list[bool]], dict[str, JobState], dict[str, list[Result]]]:
    states: dict[str, JobState] = {}
    appended: dict[str, list[Result]] = {}
    outcomes = [
        plan_results(b, T0, current or {}, histories or {}, states, appended) for b in batches
    ]
    return [[r.duplicate for r in o] for o in outcomes], states, appended


def test_a_retry_in_another_batch_of_the_same_group_counts_once() -> None:
    first = result("a", run_id="r1")
    duplicates, states, appended = plan([[first], [first]])
    assert duplicates == [[False], [True]]
    assert states["a"].runs_total == 1
    assert appended == {"a": [first]}


def test_a_retry_of_a_retained_result_is_acknowledged_and_not_counted() -> None:
    history = History("a", 10)
    history.append(result("a", run_id="r1"))
    current = {"a": new_state("a", T0)}
    duplicates, states, appended = plan(
        [[result("a", run_id="r1"), result("a", "failure", run_id="r1")]], current, {"a": history}
    )
    assert duplicates == [[True, False]]  # same run id, another status: a new result
    assert states["a"].failures_total == 1
    assert [r.status for r in appended["a"]] == ["failure"]


def test_a_duplicate_reports_the_state_after_the_whole_batch() -> None:
    history = History("a", 10)
    history.append(result("a", run_id="r1"))
    outcome = plan_results(
        [result("a", run_id="r1"), result("a", "failure")],
        T0,
        {"a": new_state("a", T0)},
        {"a": history},
        {},
        {},
    )
    assert outcome[0].duplicate
    assert outcome[0].state == outcome[1].state
    assert outcome[0].state.consecutive_failures == 1


def test_planning_changes_neither_the_current_states_nor_the_histories() -> None:
    current = {"a": new_state("a", T0)}
    history = History("a", 10)
    plan([[result("a"), result("b")]], current, {"a": history})
    assert current == {"a": new_state("a", T0)}
    assert len(history) == 0
