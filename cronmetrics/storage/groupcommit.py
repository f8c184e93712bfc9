"""Group commit: concurrent callers that each need a durable commit share one.

A commit (a transaction and its fsync) costs about the same for one item as for ten, so
:meth:`GroupCommit.submit` queues its caller's item and one caller at a time *leads*:
it takes every item queued so far and commits them in one call of ``commit``, while
the items queued meanwhile wait for the next group::

    caller A ──submit──▶ leads: takes [A]       ─commit([A])─▶ wakes A, hands the lead to B
    caller B ──submit──▶ queued, waits                         leads: takes [B, C] ─commit─▶
    caller C ──submit──▶ queued, waits                         (woken by B's commit)

Each waiting caller waits on its own ``wake`` lock, released once its item is committed
or to make it lead the next group. Not on the lock that serializes commits: the leader
could take that again before a waiter woke, which gives groups of one or two and as
many commits as calls. Handing the lead to the first waiter costs one wake-up per call.

``commit`` returns one outcome per item, or raises. An Exception reaches every call of
its group; anything else (a KeyboardInterrupt in the leading thread) reaches the leader,
and the other calls of its group get StorageError("the commit was interrupted"). Either
way the next group is committed as usual. A caller interrupted
while it waits (KeyboardInterrupt in the main thread) takes its item out of the queue
(it may be committed all the same if a group took it already) and passes on a lead it
was handed: a lead never passed on would leave every later caller waiting.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from cronmetrics.errors import StorageError

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


def _held() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True, eq=False)
class _Waiter(Generic[T, R]):
    """One submit() call waiting for its group's commit."""

    item: T
    done: bool = False
    outcome: list[R] = field(default_factory=list)  # [the outcome] once committed
    error: BaseException | None = None
    #: held until the item is done, or until its call is to lead the next group
    wake: threading.Lock = field(default_factory=_held)
    #: its call leads (it came first, or the lead was handed to it)
    leads: bool = False


class GroupCommit(Generic[T, R]):
    """Commits submitted items in groups (module docstring).

    ``commit`` gets a group's items in the order they were submitted and returns their
    outcomes in that order. ``serialize``, where given, is held around taking a group
    and committing it (a lock other writers of the same database take too): items
    queued while the leader waits for it join its group.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[T]], Sequence[R]],
        *,
        serialize: contextlib.AbstractContextManager[object] | None = None,
    ) -> None:
        self._commit = commit
        self._serialize = serialize if serialize is not None else contextlib.nullcontext()
        self._lock = threading.Lock()  # guards the queue and the lead, for microseconds
        self._queue: list[_Waiter[T, R]] = []
        self._leading = False

    def queued(self) -> int:
        """How many items wait for a group to take them (for tests and metrics)."""
        with self._lock:
            return len(self._queue)

    def submit(self, item: T) -> R:
        """Return ``item``'s outcome once its group is committed, or raise what the
        group's commit raised."""
        waiter: _Waiter[T, R] = _Waiter(item)
        with self._lock:
            self._queue.append(waiter)
            waiter.leads, self._leading = not self._leading, True
        if not waiter.leads:
            try:
                waiter.wake.acquire()  # released once done, or to lead the next group
            except BaseException:  # KeyboardInterrupt in the main thread
                self._withdraw(waiter)
                raise
        if not waiter.done:
            try:
                self._lead()
            except BaseException:
                self._withdraw(waiter)
                raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.outcome[0]

    def _lead(self) -> None:
        """Commit every queued item as one group, wake each item's caller, and hand the
        lead to the first item queued meanwhile, whatever is raised."""
        group: list[_Waiter[T, R]] = []
        outcomes: Sequence[R] = ()
        error: BaseException = StorageError("the commit was interrupted")
        try:
            with self._serialize:
                with self._lock:
                    group, self._queue = self._queue, []
                try:
                    outcomes = self._commit([w.item for w in group])
                except Exception as exc:
                    error = exc
        finally:
            for i, waiter in enumerate(group):
                if i < len(outcomes):
                    waiter.outcome.append(outcomes[i])
                else:
                    waiter.error = error
                waiter.done = True
                waiter.wake.release()
            with self._lock:
                self._pass_lead()

    def _pass_lead(self) -> None:
        """Call under ``_lock``: the first queued item's call leads next, or none."""
        if self._queue:
            self._queue[0].leads = True
            self._queue[0].wake.release()
        else:
            self._leading = False

    def _withdraw(self, waiter: _Waiter[T, R]) -> None:
        """A call interrupted while it waited: its item leaves the queue, and a lead
        handed to it passes on."""
        with self._lock:
            if waiter in self._queue:
                self._queue.remove(waiter)
            if waiter.leads and not waiter.done:
                self._pass_lead()
