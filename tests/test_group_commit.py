"""Group commit on its own: who leads, what a group holds, failures and interruptions."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest

from cronmetrics.errors import StorageError
from cronmetrics.storage.groupcommit import GroupCommit
from cronmetrics.testing import wait_for


class HeldCommits:
    """A commit function that records each group, doubles each item, and holds its
    first call until released (or fails it, or the groups listed in ``fail``)."""

    def __init__(self, fail: Sequence[int] = ()) -> None:
        self.groups: list[list[int]] = []
        self.held, self.release = threading.Event(), threading.Event()
        self.fail = set(fail)

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.groups.append(list(items))
        if not self.held.is_set():
            self.held.set()
            self.release.wait(10)
        if len(self.groups) - 1 in self.fail:
            raise StorageError(f"group {len(self.groups) - 1} failed (test)")
        return [2 * i for i in items]


def submit_in_threads(
    group: GroupCommit[int, int], items: Sequence[int]
) -> tuple[list[threading.Thread], dict[int, int | str]]:
    answers: dict[int, int | str] = {}

    def call(item: int) -> None:
        try:
            answers[item] = group.submit(item)
        except StorageError as exc:
            answers[item] = exc.message

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in items]
    for t in threads:
        t.start()
    return threads, answers


def joined(threads: Sequence[threading.Thread]) -> None:
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a caller never returned"


@pytest.fixture
def alarm() -> Iterator[Callable[[float], None]]:
    """``alarm(s)``: a KeyboardInterrupt in the main thread ``s`` seconds from now."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        yield lambda s: signal.setitimer(signal.ITIMER_REAL, s)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_lone_call_commits_its_item_alone_and_gets_its_outcome() -> None:
    commits = HeldCommits()
    commits.release.set()
    group = GroupCommit(commits)
    assert group.submit(21) == 42
    assert group.submit(5) == 10
    assert commits.groups == [[21], [5]]


def test_calls_made_during_a_commit_share_the_next_one_in_their_order() -> None:
    commits = HeldCommits()
    group = GroupCommit(commits)
    first, answers = submit_in_threads(group, [0])
    assert commits.held.wait(10)
    others, more = submit_in_threads(group, range(1, 8))
    wait_for(lambda: group.queued() == 7, "seven queued items", timeout=10)
    commits.release.set()
    joined([*first, *others])
    assert len(commits.groups) == 2
    assert commits.groups[0] == [0] and sorted(commits.groups[1]) == list(range(1, 8))
    assert {**answers, **more} == {i: 2 * i for i in range(8)}


def test_a_failed_commit_fails_every_call_of_its_group_and_no_other() -> None:
    commits = HeldCommits(fail=[1])
    group = GroupCommit(commits)
    first, answers = submit_in_threads(group, [0])
    assert commits.held.wait(10)
    others, more = submit_in_threads(group, [1, 2, 3])
    wait_for(lambda: group.queued() == 3, "three queued items", timeout=10)
    commits.release.set()
    joined([*first, *others])
    assert answers == {0: 0}
    assert more == dict.fromkeys((1, 2, 3), "group 1 failed (test)")
    assert group.submit(4) == 8  # and the lead was passed on after it


def test_a_commit_raising_a_bug_reaches_its_callers_and_the_next_call_commits() -> None:
    calls: list[Sequence[int]] = []

    def buggy_once(items: Sequence[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return list(items)

    group = GroupCommit(buggy_once)
    with pytest.raises(RuntimeError, match="a bug"):
        group.submit(1)
    assert group.submit(2) == 2


def test_commits_hold_the_serializing_lock_and_items_queued_meanwhile_join_the_group() -> None:
    writer = threading.Lock()
    seen: list[bool] = []

    def commit(items: Sequence[int]) -> list[int]:
        seen.append(writer.locked())
        return list(items)

    group = GroupCommit(commit, serialize=writer)
    writer.acquire()  # another writer (a periodic write) is busy
    threads, answers = submit_in_threads(group, [1, 2, 3])
    wait_for(lambda: group.queued() == 3, "three queued items", timeout=10)
    writer.release()
    joined(threads)
    assert seen == [True], "one group, committed under the lock"
    assert answers == {1: 1, 2: 2, 3: 3}


def test_a_call_interrupted_while_queued_leaves_the_queue(
    alarm: Callable[[float], None],
) -> None:
    commits = HeldCommits()
    group = GroupCommit(commits)
    leader, _ = submit_in_threads(group, [1])
    assert commits.held.wait(10)
    alarm(0.2)
    with pytest.raises(KeyboardInterrupt):
        group.submit(2)  # queued behind the held commit
    later, answers = submit_in_threads(group, [3])
    wait_for(lambda: group.queued() == 1, "the later call queued", timeout=10)
    commits.release.set()
    joined([*leader, *later])
    assert commits.groups == [[1], [3]]
    assert answers == {3: 6}


def test_a_leading_call_interrupted_before_its_commit_passes_on_the_lead() -> None:
    class InterruptedOnce:
        """A lock whose first taker gets a KeyboardInterrupt instead."""

        interrupted = False

        def __enter__(self) -> None:
            if not InterruptedOnce.interrupted:
                InterruptedOnce.interrupted = True
                raise KeyboardInterrupt

        def __exit__(self, *exc: object) -> None:
            return None

    group = GroupCommit(lambda items: list(items), serialize=InterruptedOnce())
    with pytest.raises(KeyboardInterrupt):
        group.submit(1)  # leads, and is interrupted before it commits
    later, answers = submit_in_threads(group, [2])
    joined(later)
    assert answers == {2: 2}, "the next call waited for a lead nobody held"


def test_a_commit_interrupted_fails_its_group_and_passes_on_the_lead() -> None:
    """A KeyboardInterrupt inside the commit reaches the leader; the others of its
    group get a StorageError, and the calls queued meanwhile commit."""
    commits = HeldCommits()
    interrupted: list[int] = []

    def commit(items: Sequence[int]) -> list[int]:
        if len(commits.groups) == 1:  # the second group: interrupted as it commits
            commits.groups.append(list(items))
            interrupted.extend(items)
            raise KeyboardInterrupt
        return commits(items)

    group = GroupCommit(commit)
    first, _ = submit_in_threads(group, [0])
    assert commits.held.wait(10)
    outcomes: dict[int, str] = {}

    def call(item: int) -> None:
        try:
            outcomes[item] = f"committed {group.submit(item)}"
        except KeyboardInterrupt:
            outcomes[item] = "interrupted"
        except StorageError as exc:
            outcomes[item] = exc.message

    callers = [threading.Thread(target=call, args=(i,), daemon=True) for i in (1, 2)]
    for t in callers:
        t.start()
    wait_for(lambda: group.queued() == 2, "two queued items", timeout=10)
    commits.release.set()
    joined([*first, *callers])
    assert sorted(interrupted) == [1, 2]
    assert sorted(outcomes.values()) == ["interrupted", "the commit was interrupted"]
    assert group.submit(3) == 6, "the lead was lost with the interrupted commit"
