"""The served worker leaves the heap it built at start-up out of later collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from cronmetrics.web.server import settle_heap


class Node:
    me: object


@pytest.fixture
def unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session collects as before


def test_what_the_worker_built_is_left_out_of_later_collections(unfreeze: None) -> None:
    built = [[i] for i in range(1000)]  # stand-ins for the store's histories
    settle_heap()
    tracked = {id(o) for o in gc.get_objects()}
    assert not any(id(b) in tracked for b in built)
    later = [[i] for i in range(10)]
    tracked = {id(o) for o in gc.get_objects()}
    assert all(id(b) in tracked for b in later)  # what comes later is collected as usual


def test_garbage_made_before_is_collected_not_kept(unfreeze: None) -> None:
    gc.disable()  # no automatic collection frees the cycle first
    try:
        node = Node()
        node.me = node  # a cycle: only a collection frees it
        gone = weakref.ref(node)
        del node
        settle_heap()
        assert gone() is None
    finally:
        gc.enable()
