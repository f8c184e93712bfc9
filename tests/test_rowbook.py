"""The row account on its own, against a model that keeps every row id it ever gave."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from cronmetrics.storage.history import Result
from cronmetrics.storage.interface import new_state
from cronmetrics.storage.rowbook import RowBook

JOBS = [f"job{j}" for j in range(6)]


def result(job_id: str) -> Result:
    return Result(job_id, "success", 1.0, 1.0)


@dataclass
class Model:
    """Every row each job got and the ones it keeps; the rows deleted; the id each
    job's state row is current up to."""

    rows: dict[str, list[int]] = field(default_factory=dict)
    kept: dict[str, list[int]] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    upto: dict[str, int] = field(default_factory=dict)

    def behind(self) -> dict[str, int]:
        return {j: u for j, u in self.upto.items() if self.rows.get(j, [u])[-1] > u}


#: one write: its rows' jobs, the jobs whose state it writes, the history limit, how many
#: of the oldest garbage rows to delete (None: a journaled commit; -1: all)
writes = st.lists(
    st.tuples(
        st.lists(st.sampled_from(JOBS), max_size=12),
        st.sets(st.sampled_from(JOBS), max_size=3),
        st.integers(1, 4),
        st.sampled_from([None, -1, 0, 1, 3, 50]),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(writes)
def test_the_account_keeps_each_jobs_newest_rows_and_deletes_only_what_no_state_needs(
    plan_writes: list[tuple[list[str], set[str], int, int | None]],
) -> None:
    book, model = RowBook(), Model()
    limit = 4
    for jobs, written, new_limit, deletes in plan_writes:
        cut = [j for j in model.kept if new_limit < limit]  # the store: histories cut
        limit = new_limit
        states = [new_state(j, 0.0) for j in sorted(written)]
        plan = book.plan([result(j) for j in jobs], states, limit=limit, cut=cut, deletes=deletes)
        first = book.next_id
        assert [r[0] for r in plan.rows] == list(range(first, first + len(jobs)))
        lagging = model.behind()
        for row_id, r, prev in plan.rows:  # each row names its job's previous one
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
        needed = {i for j, u in model.behind().items() for i in model.rows[j] if i > u}
        assert not set(plan.delete) & needed, "a row a lagging state row needs was deleted"
        if deletes is None:
            assert plan.delete == []
        book.applied(plan, limit=limit)
        model.deleted |= set(plan.delete)
        assert {j: list(a) for j, a in book.ids.items() if a} == {
            j: k for j, k in model.kept.items() if k
        }
        kept = {i for k in model.kept.values() for i in k}
        every = {i for r in model.rows.values() for i in r}
        waiting = set(book.garbage) | set(book.unsorted)
        assert kept | waiting | model.deleted == every, "a row was lost track of"
        assert not kept & (waiting | model.deleted) and not waiting & model.deleted
        assert book.behind == model.behind()
        assert book.lowest == min(model.behind().values(), default=None)
    # a final write (-1) deletes all the garbage that no lagging state row needs
    book.applied(book.plan([], [], limit=limit, deletes=-1), limit=limit)
    assert all(book.lowest is not None and i > book.lowest for i in book.garbage)


def test_a_failed_write_leaves_the_account_as_it_was() -> None:
    book = RowBook()
    book.applied(book.plan([result("a"), result("a")], [], limit=1, deletes=0), limit=1)
    before = ({j: list(a) for j, a in book.ids.items()}, list(book.garbage), book.next_id)
    book.plan([result("a"), result("b")], [new_state("a", 0.0)], limit=1, deletes=-1)
    after = ({j: list(a) for j, a in book.ids.items()}, list(book.garbage), book.next_id)
    assert after == before  # planned, never applied: nothing changed
