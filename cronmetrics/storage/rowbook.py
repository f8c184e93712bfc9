"""The embedded store's account of ``state.db``'s result rows, and what a write does to it.

The store holds results in memory; the database holds them as rows. :class:`RowBook`
keeps what the store must know about those rows to write only what changed:

- ``ids``: each job's row ids, oldest first, at most its history's limit. A row beyond
  that is *garbage*: it stays in the database until a periodic write deletes it.
  Deleting each job's oldest row as its history moves would touch one random page per
  job; deleting the oldest garbage of all jobs (the lowest ids: rows written together)
  touches few pages. So a periodic write deletes as many garbage rows as were appended
  since the last one (the final write: all), and a journaled commit deletes none.
- ``behind``: the jobs whose state row lags their rows (job id -> the result id the row
  is current up to; the store writes a state changed only by results a slice at a time,
  and loading applies the rows after a state row again). A row after a lagging state
  row is needed to rebuild that state, history or not: garbage above the lowest of
  ``behind`` waits (within the store's slice count of writes). That lowest is
  ``marks.states_upto``: where loading starts reading rows.
- ``next_id``: row ids only grow, so new rows fill the last pages of the table; each
  row names the same job's previous row (``prev``) and each state row its job's newest,
  which is how a job's newest results are found without an index.

A write is planned first (:meth:`RowBook.plan`, which changes nothing), written, and
only then applied (:meth:`RowBook.applied`): a failed write leaves the account as it
was. Planning is one pass over the new rows and one over the states written (a periodic
write plans 5,000 rows among 10,000 jobs); a periodic write also sorts the garbage, and
one that brings the lagging state row with the lowest mark up to date looks over the
lagging ones for the next lowest.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from cronmetrics.storage.database import Writes
from cronmetrics.storage.history import Result
from cronmetrics.storage.interface import JobState

__all__ = ["GARBAGE_BACKLOG", "RowBook", "RowPlan"]

#: rows beyond their job's history that may wait for deletion (more: deleted faster)
GARBAGE_BACKLOG = 20_000


#: what a write's new rows do: each one's previous row of its job (0: none), each job's
#: new ids, the garbage they make, the state rows they leave behind
_Rows: TypeAlias = "tuple[array[int], dict[str, array[int]], list[int], dict[str, int]]"


@dataclass(slots=True)
class RowPlan:
    """One write's rows and states, and what it does to the account once written."""

    #: the new rows, numbered from ``last_id - len(rows) + 1`` in this order, and each
    #: one's previous row of the same job (0: none). Not a tuple per row: a write plans
    #: 5,000, and each tuple, list and dict a plan keeps is one more object for the
    #: garbage collector, whose collections took ~10 ms of a ~60 ms write
    rows: Sequence[Result]
    prevs: array[int]
    #: the states to write, each with its job's newest row id once written
    states: list[tuple[JobState, int | None]]
    #: the id of the last new row (every state written is current up to it)
    last_id: int
    #: garbage rows to delete with the write, ascending
    delete: list[int]
    #: ``marks.states_upto`` to write (None: unchanged)
    states_upto: int | None
    #: job id -> its new ids (none: its history was cut)
    jobs: dict[str, array[int]]
    #: the garbage left once written (None: unchanged), and garbage added, not sorted in
    garbage: list[int] | None
    fresh: list[int]
    #: ``behind``: the jobs the write brings up to date, those it leaves behind, the
    #: lowest of what is left
    caught_up: list[str]
    fell: dict[str, int]
    lowest: int | None
    #: rows a journaled commit adds: the next periodic write deletes as many more
    #: garbage rows, so that deletes keep up with what the journal appends
    journaled: int

    def numbered(self) -> Iterator[tuple[int, Result, int | None]]:
        """The new rows: id, result, the same job's previous row id (None: its first)."""
        first = self.last_id - len(self.rows) + 1
        rows = zip(range(first, self.last_id + 1), self.rows, self.prevs, strict=True)
        for row_id, result, prev in rows:
            yield row_id, result, prev or None

    def writes(self, *, forget_cache: bool = False) -> Writes:
        """The transaction that writes this plan."""
        return Writes(
            results=self.rows,
            prevs=self.prevs,
            first_id=self.last_id - len(self.rows) + 1,
            states=self.states,
            upto=self.last_id,
            states_upto=self.states_upto,
            delete=self.delete,
            forget_cache=forget_cache,
        )


class RowBook:
    """The row account of one database (module docstring). Call it under the store's
    writer lock: writes, purges, drops and loading change it."""

    def __init__(self, next_id: int = 1) -> None:
        self.ids: dict[str, array[int]] = {}
        self.garbage: list[int] = []  # ascending
        self.unsorted: list[int] = []  # garbage from journaled commits, sorted in later
        self.behind: dict[str, int] = {}
        self.lowest: int | None = None  # the lowest of ``behind``, kept as it changes
        #: the ``states_upto`` in the database (None: not known): a write whose own is
        #: the same leaves that row alone (a journaled commit then writes a page less)
        self.marked: int | None = None
        self.next_id = next_id
        self.journaled = 0  # rows committed by the journal since the last periodic write

    @classmethod
    def anew(
        cls, histories: Iterable[tuple[str, Sequence[Result]]], states: Sequence[JobState]
    ) -> tuple[RowBook, RowPlan]:
        """The account of a database written anew (empty: the old file was lost) with
        every history in memory, each job's rows together, and ``states``, each current
        up to all of them; and the plan of that write."""
        book = cls()
        rows: list[Result] = []
        prevs = array("q")
        for job_id, history in histories:
            first = len(rows) + 1
            book.ids[job_id] = array("q", range(first, first + len(history)))
            rows.extend(history)
            prevs.extend(range(first - 1, first + len(history) - 1))
            if history:
                prevs[first - 1] = 0
        last_id = book.marked = len(rows)
        book.next_id = last_id + 1
        plan = RowPlan(
            rows=rows,
            prevs=prevs,
            states=[(s, book.newest(s.job_id)) for s in states],
            last_id=last_id,
            delete=[],
            states_upto=last_id,
            jobs={},
            garbage=None,
            fresh=[],
            caught_up=[],
            fell={},
            lowest=None,
            journaled=0,
        )
        return book, plan

    def hold(self, job_id: str, ids: array[int], *, limit: int, behind: int | None) -> None:
        """A job's rows as loaded (ascending): its newest ``limit`` are its history's,
        the others garbage; ``behind``: the id its state row is current up to, where
        rows after it were applied on load. Call :meth:`settle` once every job is held."""
        if (extra := len(ids) - limit) > 0:
            self.garbage.extend(ids[:extra])
            del ids[:extra]
        self.ids[job_id] = ids
        if behind is not None:
            self.behind[job_id] = behind

    def settle(self) -> None:
        """Every loaded job is held: sort the garbage, find the lowest lag."""
        self.garbage.sort()
        self.lowest = min(self.behind.values(), default=None)

    def newest(self, job_id: str) -> int | None:
        held = self.ids.get(job_id)
        return held[-1] if held else None

    def purged(self, deleted: Iterable[tuple[str, int]]) -> None:
        """Rows a purge deleted (job id, row id) leave their jobs' histories."""
        gone: dict[str, set[int]] = {}
        for job_id, row_id in deleted:
            gone.setdefault(job_id, set()).add(row_id)
        for job_id, row_ids in gone.items():
            kept = self.ids.get(job_id, ())
            self.ids[job_id] = array("q", (i for i in kept if i not in row_ids))

    def _new_rows(self, rows: Sequence[Result], written: set[str], limit: int) -> _Rows:
        """Each new row's previous row, each job's new ids, the garbage they make (each
        job's oldest rows beyond ``limit``) and the jobs whose state row they leave
        behind (not in ``written``): one pass over the rows."""
        ids, behind = self.ids, self.behind
        empty: array[int] = array("q")
        jobs: dict[str, array[int]] = {}
        prevs = array("q")
        fresh: list[int] = []
        fell: dict[str, int] = {}
        row_id = self.next_id
        for result in rows:
            job_id = result.job_id
            new = jobs.get(job_id)
            if new is None:
                old = ids.get(job_id, empty)
                jobs[job_id] = array("q", (row_id,))
                held = len(old)
                prevs.append(old[-1] if held else 0)
                over = held + 1 - limit
                if over == 1 and held:  # its oldest leaves
                    fresh.append(old[0])
                elif over > 0:  # more of them: a lowered limit (or none kept at all)
                    fresh.extend(old[:over])
                    if over > held:
                        fresh.append(row_id)
                if job_id not in written and job_id not in behind:
                    fell[job_id] = row_id - 1  # its state row is current up to here
            else:
                prevs.append(new[-1])
                new.append(row_id)
                old = ids.get(job_id, empty)
                held = len(old)
                if (over := held + len(new) - limit) > 0:  # the next oldest leaves
                    fresh.append(old[over - 1] if over <= held else new[over - 1 - held])
            row_id += 1
        return prevs, jobs, fresh, fell

    def plan(
        self,
        rows: Sequence[Result],
        states: Sequence[JobState],
        *,
        limit: int,
        cut: Iterable[str] = (),
        deletes: int | None,
    ) -> RowPlan:
        """Plan writing ``rows`` (numbered from ``next_id``) and ``states``, each job
        keeping its newest ``limit`` rows; ``cut``: jobs whose history was cut to a
        lower limit (trimmed to it whether they have new rows or not). ``deletes``: how
        many of the oldest garbage rows to delete at least (more once over
        :data:`GARBAGE_BACKLOG` wait; -1: all, the final write; None: none, a journaled
        commit, whose garbage is sorted in at the next periodic write), never one that a
        lagging state row needs."""
        ids, behind = self.ids, self.behind
        written = {s.job_id for s in states}
        prevs, jobs, fresh, fell = self._new_rows(rows, written, limit)
        for job_id in cut:
            if job_id not in jobs and (old := ids.get(job_id)) is not None:
                jobs[job_id] = array("q")
                fresh.extend(old[: max(0, len(old) - limit)])
        last_id = self.next_id + len(rows) - 1
        newest = [
            (s, new[-1] if (new := jobs.get(s.job_id)) else self.newest(s.job_id)) for s in states
        ]
        caught_up = [j for j in written if j in behind]
        lowest = self.lowest
        if lowest is not None and any(behind[j] == lowest for j in caught_up):
            lowest = min((v for j, v in behind.items() if j not in written), default=None)
        if fell:
            low = min(fell.values())
            lowest = low if lowest is None else min(lowest, low)
        if deletes is None:
            delete: list[int] = []
            garbage = None
        else:
            garbage = self.garbage
            if fresh or self.unsorted:
                garbage = sorted(garbage + self.unsorted + fresh)  # sorted runs: C speed
                fresh = []
            count = len(garbage) if deletes < 0 else max(deletes, len(garbage) - GARBAGE_BACKLOG)
            delete, garbage = garbage[:count], garbage[count:]
            if lowest is not None and delete and delete[-1] > lowest:
                keep = bisect.bisect_right(delete, lowest)  # rows a lagging state needs
                delete, garbage = delete[:keep], [*delete[keep:], *garbage]
        states_upto = last_id if lowest is None else lowest
        return RowPlan(
            rows=rows,
            prevs=prevs,
            states=newest,
            last_id=last_id,
            delete=delete,
            states_upto=None if states_upto == self.marked else states_upto,
            jobs=jobs,
            garbage=garbage,
            fresh=fresh,
            caught_up=caught_up,
            fell=fell,
            lowest=lowest,
            journaled=len(rows) if deletes is None else 0,
        )

    def applied(self, plan: RowPlan, *, limit: int) -> None:
        """``plan`` is written: the account follows."""
        ids = self.ids
        for job_id, new in plan.jobs.items():
            held = ids.get(job_id)
            if held is None:
                ids[job_id] = held = array("q")
            held.extend(new)
            if (extra := len(held) - limit) > 0:
                del held[:extra]
        if plan.garbage is not None:
            self.garbage, self.unsorted, self.journaled = plan.garbage, [], 0
        self.unsorted.extend(plan.fresh)
        self.journaled += plan.journaled
        self.next_id = plan.last_id + 1
        behind = self.behind
        for job_id in plan.caught_up:
            del behind[job_id]
        behind.update(plan.fell)
        self.lowest = plan.lowest
        if plan.states_upto is not None:
            self.marked = plan.states_upto

    def forget(self, job_id: str) -> None:
        """A job dropped (its rows deleted with it)."""
        self.ids.pop(job_id, None)
        if self.behind.pop(job_id, None) == self.lowest:
            self.lowest = min(self.behind.values(), default=None)
