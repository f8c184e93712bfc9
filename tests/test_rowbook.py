"""The row account on its own, against a model that keeps every row id it ever gave."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronmetrics.storage import rowbook
from cronmetrics.storage.history import Result
from cronmetrics.storage.interface import new_state
from cronmetrics.storage.rowbook import RowBook

JOBS = [f"job{j}" for j in range(6)]
#: a backlog small enough for a few jobs to exceed (the engine's is 20,000)
BACKLOG = 5


def result(job_id: str) -> Result:
    return Result(job_id, "success", 1.0, 1.0)


@dataclass
class Model:
    """Every row each job got and the ones it keeps; the rows deleted; the id each
    job's state row is current up to; ``marks.states_upto`` as written; the rows of
    journaled commits since the last periodic write."""

    rows: dict[str, list[int]] = field(default_factory=dict)
    kept: dict[str, list[int]] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    upto: dict[str, int] = field(default_factory=dict)
    marked: int | None = None
    journaled: int = 0
    #: garbage of dropped jobs: the drop deleted them, the account deletes them again
    orphans: set[int] = field(default_factory=set)

    def behind(self) -> dict[str, int]:
        return {j: u for j, u in self.upto.items() if self.rows.get(j, [u])[-1] > u}

    def garbage(self) -> list[int]:
        kept = {i for k in self.kept.values() for i in k}
        every = {i for r in self.rows.values() for i in r} | self.orphans
        return sorted(every - kept - self.deleted)


#: a write: its rows' jobs, the jobs whose state it writes, the history limit, how many
#: garbage rows to delete (None: a journaled commit; -1: all); or a job dropped
writes = st.lists(
    st.one_of(
        st.tuples(
            st.lists(st.sampled_from(JOBS), max_size=12),
            st.sets(st.sampled_from(JOBS), max_size=3),
            st.integers(1, 4),
            st.sampled_from([None, -1, 0, 1, 3, 50]),
        ),
        st.sampled_from(JOBS),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(writes)
def test_the_account_keeps_each_jobs_newest_rows_and_deletes_only_what_no_state_needs(
    steps: list[tuple[list[str], set[str], int, int | None] | str],
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rowbook, "GARBAGE_BACKLOG", BACKLOG)
        run(steps)


def run(steps: list[tuple[list[str], set[str], int, int | None] | str]) -> None:
    book, model = RowBook(), Model()
    limit = 4
    for step in steps:
        if isinstance(step, str):  # dropped: its rows deleted with it, its state row too
            book.forget(step)
            kept = set(model.kept.pop(step, ()))
            model.orphans |= set(model.rows.pop(step, ())) - kept - model.deleted
            model.deleted |= kept
            model.upto.pop(step, None)
            continue
        jobs, written, new_limit, deletes = step
        cut = [j for j in model.kept if new_limit < limit]  # the store: histories cut
        limit = new_limit
        results = [result(j) for j in jobs]
        states = [new_state(j, 0.0) for j in sorted(written)]
        if deletes is not None and deletes >= 0:
            deletes += model.journaled  # as the store asks
        plan = book.plan(results, states, limit=limit, cut=cut, deletes=deletes)
        first = book.next_id
        numbered = list(plan.numbered())
        assert [r[0] for r in numbered] == list(range(first, first + len(jobs)))
        assert all(r[1] is given for r, given in zip(numbered, results, strict=True))
        lagging = model.behind()
        for row_id, r, prev in numbered:  # each row names its job's previous one
            before = model.rows.setdefault(r.job_id, [])
            assert prev == (before[-1] if before else None)
            if r.job_id not in written and r.job_id not in lagging:
                model.upto[r.job_id] = row_id - 1  # current up to its first new row
                lagging[r.job_id] = row_id - 1
            before.append(row_id)
            model.kept.setdefault(r.job_id, []).append(row_id)
        for job_id in {*jobs, *cut}:
            model.kept[job_id] = model.kept[job_id][-limit:]
        for job_id in written:
            model.upto[job_id] = plan.last_id
        for state, newest in plan.states:
            held = model.rows.get(state.job_id)
            assert newest == (held[-1] if held else None)
        lowest = min(model.behind().values(), default=None)
        # the oldest garbage, as many as asked (more past the backlog), none that a
        # lagging state row needs to be rebuilt on load
        if deletes is None:
            expected: list[int] = []
        else:
            garbage = model.garbage()
            count = len(garbage) if deletes < 0 else max(deletes, len(garbage) - BACKLOG)
            expected = garbage[:count]
            if lowest is not None:
                expected = expected[: bisect.bisect_right(expected, lowest)]
        assert plan.delete == expected
        states_upto = plan.last_id if lowest is None else lowest
        assert plan.states_upto == (None if states_upto == model.marked else states_upto)
        book.applied(plan, limit=limit)
        model.deleted |= set(plan.delete)
        model.marked = states_upto
        model.journaled = model.journaled + len(jobs) if deletes is None else 0
        assert {j: list(a) for j, a in book.ids.items() if a} == {
            j: k for j, k in model.kept.items() if k
        }
        assert sorted({*book.garbage, *book.unsorted} - model.deleted) == model.garbage()
        assert book.behind == model.behind()
        assert book.lowest == lowest
        assert book.marked == model.marked
        assert book.journaled == model.journaled
    # a final write (-1) deletes all the garbage that no lagging state row needs
    book.applied(book.plan([], [], limit=limit, deletes=-1), limit=limit)
    assert all(book.lowest is not None and i > book.lowest for i in book.garbage)


def test_a_plan_changes_nothing_until_it_is_applied() -> None:
    book = RowBook()
    book.applied(book.plan([result("a"), result("a")], [], limit=1, deletes=0), limit=1)
    before = ({j: list(a) for j, a in book.ids.items()}, list(book.garbage), book.next_id)
    book.plan([result("a"), result("b")], [new_state("a", 0.0)], limit=1, deletes=-1)
    after = ({j: list(a) for j, a in book.ids.items()}, list(book.garbage), book.next_id)
    assert after == before  # planned, never applied (a failed write): nothing changed
