"""Incremental snapshots: only changed jobs are re-encoded, and the file is still exact.

The monitor and snapshotter are driven directly (no Flask app) so a seeded random walk of
submissions, purges, lifecycle changes, removals and unknown jobs can run many rounds.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from conftest import T0, FakeClock
from flask.testing import FlaskClient

from cronmetrics.jobs.model import JobDefinition, ResultIn
from cronmetrics.monitor import Monitor
from cronmetrics.storage import generations as generations_mod
from cronmetrics.storage import snapshot as snapshot_mod
from cronmetrics.storage.snapshot import Snapshotter, copy_states, decode, encode
from cronmetrics.storage.store import MemoryStore
from cronmetrics.web.app import services
from cronmetrics.web.metrics import SelfMetrics

JOBS = {
    "backup.yaml": "job_name: backup\nautomatic_failure_threshold: 3600\n",
    "sync.yaml": "job_name: sync\nhost: db1\nautomatic_failure_threshold: 600\n",
}


def build(state_dir: Path, clock: FakeClock, *, restore: bool = True) -> Snapshotter:
    monitor = Monitor(MemoryStore(8), accept_unknown=True)
    snap = Snapshotter(
        monitor,
        state_dir,
        clock=clock,
        interval=10,
        journal=False,
        metrics=SelfMetrics(monitor.counts),
    )
    if restore:
        snap.restore()
    return snap


def definition(name: str, status: str) -> JobDefinition:
    return JobDefinition.model_validate(
        {"job_name": name, "automatic_failure_threshold": 600, "status": status}
    )


def random_changes(
    snap: Snapshotter, rng: random.Random, clock: FakeClock, names: list[str]
) -> None:
    """A few of every kind of change a running server makes to its stored state."""
    monitor = snap.monitor
    for _ in range(rng.randint(0, 4)):
        clock.advance(rng.uniform(1, 5000))
        kind = rng.random()
        if kind < 0.55:
            picked = rng.sample([*names, "adhoc"], rng.randint(1, 3))
            batch = [
                ResultIn.model_validate(
                    {
                        "job_name": name,
                        "host": "h1" if name == "adhoc" else None,
                        "status": rng.choice(["start", "success", "failure"]),
                        "duration": rng.choice([None, rng.uniform(0, 100), 7]),
                        "exit_code": rng.choice([None, 0, 2]),
                        "run_id": rng.choice([None, f"r{rng.randint(0, 9)}"]),
                        "output": rng.choice([None, "ok", "line\nnext é"]),
                        "labels": rng.choice([{}, {"k": "v"}]),
                    }
                )
                for name in picked
                if name == "adhoc" or name in monitor.definitions
            ]
            if batch:
                monitor.submit(batch, clock())
        elif kind < 0.7:
            monitor.purge_history(clock() - rng.uniform(0, 20000))
        elif kind < 0.8:
            chosen = rng.sample(names, rng.randint(len(names) - 2, len(names)))
            monitor.apply_definitions(
                {n: definition(n, rng.choice(["active", "active", "paused"])) for n in chosen},
                clock(),
            )
        elif kind < 0.9:
            monitor.tick(clock())  # re-evaluations only: no state change
        else:
            monitor.prune_orphans()


def dump(store: MemoryStore) -> dict[str, Any]:
    """Every job's state and history as plain data, to compare two stores."""
    return {job_id: state.to_dict() for job_id in store if (state := store.get(job_id))}


def restored_dump(state_dir: Path, clock: FakeClock) -> dict[str, Any]:
    store = build(state_dir, clock).monitor.store
    assert isinstance(store, MemoryStore)
    return dump(store)


@pytest.mark.parametrize("seed", range(6))
def test_incremental_snapshots_restore_exactly_what_a_full_snapshot_would(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    clock = FakeClock(T0)
    names = [f"job{i}" for i in range(12)]
    state_dir = tmp_path / "state"
    snap = build(state_dir, clock)
    snap.monitor.apply_definitions({n: definition(n, "active") for n in names}, clock())
    for round_ in range(40):
        random_changes(snap, rng, clock, names)
        snap.write()
        monitor = snap.monitor
        assert isinstance(monitor.store, MemoryStore)
        live = dump(monitor.store)
        assert restored_dump(state_dir, clock) == live, f"round {round_}"
        with monitor.lock:
            copied = copy_states(monitor, monitor.store.ids())
        full = encode(copied, written_at=clock(), journal_seq=0, unmanaged={})
        incremental = (state_dir / "state.snapshot").read_bytes()
        assert decode(incremental).jobs == decode(full).jobs
        if round_ % 10 == 9:  # a restart: the cache is seeded from the file
            snap = build(state_dir, clock)
            snap.monitor.apply_definitions({n: definition(n, "active") for n in names}, clock())


def count_encodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    encoded: list[str] = []
    real = snapshot_mod.encode_job

    def counting(values: Any, history: Any) -> Any:
        encoded.append(values)
        return real(values, history)

    monkeypatch.setattr(snapshot_mod, "encode_job", counting)
    return encoded


def submit(snap: Snapshotter, clock: FakeClock, name: str) -> None:
    clock.advance(60)
    item = ResultIn.model_validate({"job_name": name, "status": "success"})
    snap.monitor.submit([item], clock())


def test_only_jobs_changed_since_the_last_snapshot_are_encoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(T0)
    snap = build(tmp_path / "state", clock)
    names = [f"job{i}" for i in range(20)]
    snap.monitor.apply_definitions({n: definition(n, "active") for n in names}, clock())
    encoded = count_encodes(monkeypatch)
    assert snap.write()
    assert len(encoded) == 20
    encoded.clear()
    submit(snap, clock, "job3")
    submit(snap, clock, "job7")
    submit(snap, clock, "job3")
    assert snap.write()
    assert len(encoded) == 2
    encoded.clear()
    snap.monitor.apply_definitions({n: definition(n, "active") for n in names[1:]}, clock())
    assert snap.write()  # a removed job: the file changes, nothing is encoded
    assert encoded == []
    assert "job0" not in decode((tmp_path / "state" / "state.snapshot").read_bytes()).jobs


def test_a_restart_reuses_the_restored_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(T0)
    names = [f"job{i}" for i in range(20)]
    snap = build(tmp_path / "state", clock)
    snap.monitor.apply_definitions({n: definition(n, "active") for n in names}, clock())
    for name in names:
        submit(snap, clock, name)
    assert snap.write()
    encoded = count_encodes(monkeypatch)
    again = build(tmp_path / "state", clock)
    again.monitor.apply_definitions({n: definition(n, "active") for n in names}, clock())
    assert not again.write()  # nothing changed since the file: not even rewritten
    submit(again, clock, "job5")
    assert again.write()
    assert len(encoded) == 1


def test_a_smaller_history_limit_after_a_restart_is_written_cut(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    snap = build(tmp_path / "state", clock)
    snap.monitor.apply_definitions({"job": definition("job", "active")}, clock())
    for _ in range(8):
        submit(snap, clock, "job")
    assert snap.write()
    monitor = Monitor(MemoryStore(3), accept_unknown=True)
    smaller = Snapshotter(
        monitor,
        tmp_path / "state",
        clock=clock,
        interval=10,
        journal=False,
        metrics=SelfMetrics(monitor.counts),
    )
    smaller.restore()
    assert smaller.write()
    assert len(decode((tmp_path / "state" / "state.snapshot").read_bytes()).jobs["job"][1]) == 3


# -- the snapshot timestamp metric --------------------------------------------------------


def metric(client: FlaskClient, name: str) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


TS = "cronmetrics_snapshot_last_success_timestamp_seconds"


def test_quiet_server_keeps_the_snapshot_timestamp_fresh(
    make_client: Any, fake_clock: FakeClock, tmp_path: Path
) -> None:
    client = make_client(JOBS)
    snap: Snapshotter = services(client.application).extras["snapshotter"]
    assert snap.write()
    inode = (tmp_path / "state" / "state.snapshot").stat().st_ino
    fake_clock.advance(3600)  # deadlines pass: evaluations change, stored states do not
    snap.monitor.tick(fake_clock())
    assert not snap.write()
    assert (tmp_path / "state" / "state.snapshot").stat().st_ino == inode
    assert metric(client, TS) == fake_clock.now


def test_restore_sets_the_snapshot_timestamp(make_client: Any, fake_clock: FakeClock) -> None:
    client = make_client(JOBS)
    assert metric(client, TS) == 0  # nothing on disk yet
    services(client.application).extras["snapshotter"].write()
    fake_clock.advance(600)
    again = make_client(JOBS)
    assert metric(again, TS) == fake_clock.now


def test_snapshot_timestamp_is_not_refreshed_after_a_failed_write(
    make_client: Any, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(JOBS)
    snap: Snapshotter = services(client.application).extras["snapshotter"]
    assert snap.write()
    written = metric(client, TS)

    def disk_full(path: Path, data: bytes, *, mode: int | None = None) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(generations_mod, "atomic_write", disk_full)
    fake_clock.advance(60)
    assert not snap.write(force=True)
    fake_clock.advance(60)
    assert not snap.write()  # nothing changed, but the last write failed: not durable
    assert metric(client, TS) == written


def test_concurrent_submits_purges_reads_and_snapshots_stay_consistent(tmp_path: Path) -> None:
    """Copy on write under load: threads submit, purge and read histories while another
    writes snapshots. Every read sees whole results, and after the dust settles one more
    snapshot restores exactly the live store (a missed copy would show up as a history
    changed under a snapshot's feet, or a torn read)."""
    import threading
    import time

    clock = FakeClock(T0)
    names = [f"job{i}" for i in range(6)]
    snap = build(tmp_path / "state", clock)
    monitor = snap.monitor
    monitor.apply_definitions({n: definition(n, "active") for n in names}, clock())
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(work: Any) -> Any:
        def run() -> None:
            try:
                while not stop.is_set():
                    work()
            except BaseException as exc:  # surfaced by the main thread
                errors.append(exc)
                stop.set()

        return run

    counter = iter(range(10**9))

    def submit() -> None:
        n = next(counter)
        item = ResultIn.model_validate(
            {"job_name": names[n % len(names)], "status": "success", "run_id": f"r{n}"}
        )
        monitor.submit([item], T0 + n)

    def purge() -> None:
        monitor.purge_history(T0 + next(counter) - 40, names[next(counter) % len(names)])

    def read() -> None:
        for name in names:
            history = monitor.view(name).state.history
            rows = list(history)
            assert len(rows) == len(history) <= 8
            assert all(r.job_id == name and r.run_id and r.run_id[0] == "r" for r in rows)
            time.sleep(0.001)  # the submitters go on meanwhile
            assert list(history) == rows  # a copy never changes under its reader

    threads = [threading.Thread(target=guarded(w)) for w in (submit, submit, purge, read)]
    threads.append(threading.Thread(target=guarded(snap.write)))
    for thread in threads:
        thread.start()
    stop.wait(1.5)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not errors, errors
    snap.write()
    assert isinstance(monitor.store, MemoryStore)
    assert restored_dump(tmp_path / "state", clock) == dump(monitor.store)
