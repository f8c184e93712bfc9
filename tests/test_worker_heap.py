"""The served worker leaves the heap it built at start-up out of later collections."""

from __future__ import annotations

import gc
import os
import signal
import weakref
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from cronmetrics.web import server
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


def test_a_served_worker_settles_its_heap_once_its_app_is_loaded(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled: list[bool] = []
    monkeypatch.setattr(server, "settle_heap", lambda: settled.append(True))
    app = make_client({}).application  # what gunicorn's worker holds as ``wsgi``
    worker = SimpleNamespace(wsgi=app, cfg=SimpleNamespace(ssl_context=None), pid=os.getpid())
    hup = signal.getsignal(signal.SIGHUP)
    try:
        server._post_worker_init(worker)  # gunicorn's post_worker_init hook
    finally:
        signal.signal(signal.SIGHUP, hup)  # the hook installs the worker's reload handler
    assert settled == [True]
