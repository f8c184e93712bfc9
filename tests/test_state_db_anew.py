"""Changes of the embedded store against a ``state.db`` lost while serving and written
anew from memory (the state dir's guard): a change acknowledged is in the new file, and
a change the guard's repair runs inside of goes to the new file, not the lost one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge

from cronmetrics.storage.interface import Result
from cronmetrics.storage.persistence import Persistence, StorageGauges, open_store
from cronmetrics.storage.runlog import OUTPUT_KIND
from cronmetrics.storage.store import EmbeddedStore

T0 = 1_767_571_200.0
JOB = "backup"


@dataclass
class Served:
    store: EmbeddedStore
    persistence: Persistence
    state_dir: Path

    def lose_state_db(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            (self.state_dir / f"state.db{suffix}").unlink(missing_ok=True)

    def restarted(self) -> EmbeddedStore:
        self.persistence.stop()
        again, _ = open_store(self.state_dir, 100, durable=False, now=T0)
        return again


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A store with the guard a server installs, a job running run r1 (with output),
    a runtime record and a last good definition."""
    store, report = open_store(tmp_path, 100, durable=False, now=T0)
    registry = CollectorRegistry()
    gauges = StorageGauges(*(Gauge(f"g{i}", "g", registry=registry) for i in range(3)))
    persistence = Persistence(store, report, clock=lambda: T0, gauges=gauges, state_dir=tmp_path)
    store.record([Result(JOB, "start", T0, T0, run_id="r1")], T0)
    store.append_output(JOB, "first\n", run_id=None, limit=1000, now=T0)
    store.put_record("window", "old", {"jobs": [JOB]}, T0)
    store.put_definitions({JOB: {"schedule": "@daily"}})
    yield Served(store, persistence, tmp_path)
    persistence.stop()


def output_appended(store: EmbeddedStore) -> bool:
    output = store.run_output(JOB)
    return output is not None and output.text == "first\nsecond\n"


def output_taken(store: EmbeddedStore) -> bool:
    return store.database is not None and store.database.records(OUTPUT_KIND) == []


#: a change, and what the store restarted from the new state.db must show of it
CHANGES: dict[str, tuple[Callable[[EmbeddedStore], object], Callable[[EmbeddedStore], bool]]] = {
    "append_output": (
        lambda s: s.append_output(JOB, "second\n", run_id=None, limit=1000, now=T0 + 1),
        output_appended,
    ),
    "take_outputs": (
        lambda s: s.take_outputs([Result(JOB, "success", T0 + 2, T0 + 2, run_id="r1")]),
        output_taken,
    ),
    "put_record": (
        lambda s: s.put_record("window", "new", {"jobs": []}, T0 + 1),
        lambda s: s.get_record("window", "new") is not None,
    ),
    "delete_record": (
        lambda s: s.delete_record("window", "old"),
        lambda s: s.get_record("window", "old") is None,
    ),
    "put_definitions": (
        lambda s: s.put_definitions({JOB: {"schedule": "@hourly"}}),
        lambda s: s.definitions()[JOB] == {"schedule": "@hourly"},
    ),
}


@pytest.mark.parametrize("name", CHANGES)
def test_a_change_acknowledged_just_before_state_db_is_written_anew_is_in_the_new_file(
    served: Served, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change has let go of the writer lock; state.db is lost and the guard writes
    memory to a new one before the change's thread runs again."""
    change, shows = CHANGES[name]
    store = served.store
    writer = store._writer
    released, go = threading.Event(), threading.Event()

    class HeldAfterRelease:
        def __enter__(self) -> None:
            writer.acquire()

        def __exit__(self, *exc: object) -> None:
            writer.release()
            if threading.current_thread().name == "changer":
                released.set()
                go.wait(10)

    monkeypatch.setattr(store, "_writer", HeldAfterRelease())
    thread = threading.Thread(target=lambda: change(store), name="changer")
    thread.start()
    assert released.wait(10)
    monkeypatch.setattr(store, "_writer", writer)
    served.lose_state_db()
    served.persistence.guard()  # what the scheduler does every second
    go.set()
    thread.join(10)
    again = served.restarted()
    assert shows(again)
    again.close()


@pytest.mark.parametrize("name", CHANGES)
def test_a_change_whose_check_writes_state_db_anew_goes_to_the_new_file(
    served: Served, name: str
) -> None:
    """state.db is lost and the change comes first: its before-write check makes the new
    file, and the change must be written there, not to the lost one."""
    change, shows = CHANGES[name]
    served.lose_state_db()
    change(served.store)
    assert (served.state_dir / "state.db").is_file()
    again = served.restarted()
    assert shows(again)
    again.close()


def test_a_dropped_jobs_output_does_not_come_back_in_a_state_db_written_anew(
    served: Served,
) -> None:
    assert served.store.drop(JOB)
    assert output_taken(served.store)
    served.lose_state_db()
    served.persistence.guard()
    again = served.restarted()
    assert again.database is not None and again.database.records(OUTPUT_KIND) == []
    again.close()


def test_a_running_runs_output_survives_state_db_deleted_while_serving(served: Served) -> None:
    served.lose_state_db()
    served.persistence.guard()  # what the server's scheduler does every second
    assert (served.state_dir / "state.db").is_file()
    again = served.restarted()
    output = again.run_output(JOB)
    assert output is not None and output.text == "first\n"
    assert again.state(JOB) is not None and again.state(JOB).running  # type: ignore[union-attr]
    again.close()
