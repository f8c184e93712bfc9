"""What the embedded engine has changed in memory and not yet written to ``state.db``.

A write (:meth:`~cronmetrics.storage.store.EmbeddedStore.flush`) takes what is pending,
writes it in one transaction and, if that fails, puts it back for the next try in the
order it came, so a failed write loses nothing and a later one writes it once.

Which states a write carries: the *dirty* ones (new, or changed otherwise than by a
result) at once; the *stale* ones (changed by results only) a slice at a time. Loading
applies the results stored after a state row again
(:func:`~cronmetrics.storage.transitions.advance`), so a stale state row is only slower
to load, never wrong; writing them in slices keeps each write to a few pages of the
``states`` table instead of every row a busy minute touched.

:class:`Pending` has no lock of its own: the store calls it under its memory lock, except
:meth:`Pending.sort`, which it calls under its writer lock (sorting 10,000 ids takes
milliseconds, too long for the memory lock).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cronmetrics.storage.history import Result

__all__ = ["SLICES", "Pending", "Taken"]

#: stale states are written in this many slices, one per write, unless they are few
SLICES = 24
_AT_ONCE = 256


@dataclass(slots=True)
class Taken:
    """What one write took: given back whole by :meth:`Pending.restore` if it failed."""

    rows: list[Result] = field(default_factory=list)
    dirty: set[str] = field(default_factory=set)
    stale: set[str] = field(default_factory=set)
    cut: set[str] = field(default_factory=set)
    forget_cache: bool = False


@dataclass(slots=True)
class Pending:
    """The rows, states and trims the next write owes the database (module docstring)."""

    #: results not yet written, in arrival order
    rows: list[Result] = field(default_factory=list)
    #: ids whose state must go in the next write
    dirty: set[str] = field(default_factory=set)
    #: ids whose state changed by results only: written a slice per write
    stale: set[str] = field(default_factory=set)
    #: histories cut by a smaller limit: their rows are trimmed at the next write
    cut: set[str] = field(default_factory=set)
    #: the cached histories are out of date: the next write deletes them
    forget_cache: bool = False
    _order: list[str] = field(default_factory=list)
    #: a job left: sort the slices' order again even if as many came
    _reorder: bool = False
    _slice: int = 0

    def mark(self, job_id: str, *, by_results: bool) -> None:
        """The job's state is to be written: in its slice if only results changed it
        (and nothing else did since the last write), else at the next write."""
        if by_results and job_id not in self.dirty:
            self.stale.add(job_id)
        else:
            self.dirty.add(job_id)
            self.stale.discard(job_id)

    def written(self, job_ids: Iterable[str]) -> None:
        """These states were written (a journaled commit carries its own)."""
        for job_id in job_ids:
            self.dirty.discard(job_id)
            self.stale.discard(job_id)

    def forget(self, job_id: str) -> None:
        """The job was dropped: nothing of it is owed any more."""
        self.dirty.discard(job_id)
        self.stale.discard(job_id)
        self.cut.discard(job_id)
        self.rows = [r for r in self.rows if r.job_id != job_id]
        self._reorder = True  # a job coming next would not change the count

    def sort(self, job_ids: Sequence[str] | Iterable[str], count: int) -> None:
        """Refresh the slices' order (``count`` jobs are known) when jobs came or went."""
        if self._reorder or len(self._order) != count:
            self._order, self._reorder = sorted(job_ids), False

    def take(self, *, everything: bool = False) -> Taken:
        """Everything the next write owes, with one slice of the stale states
        (``everything``: all of them); what is taken is no longer pending."""
        taken = Taken(self.rows, self.dirty, self._pick_stale(everything), self.cut)
        taken.forget_cache = self.forget_cache
        self.rows, self.dirty, self.cut, self.forget_cache = [], set(), set(), False
        return taken

    def take_cut(self) -> set[str]:
        """Only the trims (a journaled commit writes its own rows and states)."""
        cut, self.cut = self.cut, set()
        return cut

    def restore(self, taken: Taken) -> None:
        """A write failed: what it took is pending again, its rows before newer ones."""
        self.rows[:0] = taken.rows
        self.dirty |= taken.dirty
        self.stale |= taken.stale - self.dirty
        self.cut |= taken.cut
        self.forget_cache |= taken.forget_cache

    def _pick_stale(self, everything: bool) -> set[str]:
        """A write takes one slice of the ids in sorted order (neighbours in the
        ``states`` table, so a few pages); the slices go round, so a state row is at
        most :data:`SLICES` writes behind."""
        if everything or len(self.stale) <= _AT_ONCE:
            picked, self.stale = self.stale, set()
            return picked
        order = self._order
        size = -(-len(order) // SLICES)
        k = self._slice % SLICES
        self._slice += 1
        stale = self.stale
        picked = {j for j in order[k * size : (k + 1) * size] if j in stale}
        stale -= picked
        return picked
