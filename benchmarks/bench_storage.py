"""The embedded engine on state.db: load, periodic write, latency during writes, journal.

    python benchmarks/bench_storage.py [--jobs 10000] [--results 100]

Builds a state.db of ``jobs`` x ``results`` in a temporary dir, then measures:

- load at start (open_store: read every state and result into memory);
- memory per job of the loaded engine (tracemalloc);
- one periodic write of 10 s of results at 500 results/s (5,000 results spread over
  the jobs, their states): seconds, and bytes written by the process (``wchar`` of
  /proc/self/io: the WAL and any checkpoint included);
- the worst record() latency of a submitting thread while such writes run;
- submissions/s with ``snapshot.journal`` on (every record committed, group commit)
  and off, 8 threads recording single results.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from cronmetrics.storage.database import Database, Writes
from cronmetrics.storage.history import Result
from cronmetrics.storage.interface import new_state
from cronmetrics.storage.persistence import open_store

T0 = 1_767_571_200.0


def wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def result(job: int, i: int, at: float) -> Result:
    return Result(
        f"job{job:05d}@host{job % 50}",
        "success" if i % 10 else "failure",
        at,
        at,
        host=f"host{job % 50}",
        duration=1.5 + i % 7,
        exit_code=0 if i % 10 else 1,
        run_id=f"run-{job}-{i}",
        output="done" if i % 10 else "error: disk quota exceeded",
    )


def build(state_dir: Path, jobs: int, results: int) -> None:
    db = Database(state_dir / "state.db", durable=False)
    for start in range(0, jobs, 1000):
        chunk = range(start, min(jobs, start + 1000))
        rows = [result(j, i, T0 + i * 60) for i in range(results) for j in chunk]
        states = [new_state(f"job{j:05d}@host{j % 50}", T0) for j in chunk]
        db.write(Writes(results=rows, states=states))
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--results", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        build(state, args.jobs, args.results)
        print(f"state.db: {(state / 'state.db').stat().st_size / 1e6:.1f} MB")
        loads = []
        for _ in range(3):
            started = time.perf_counter()
            store, report = open_store(state, args.results, durable=False, now=T0)
            loads.append(time.perf_counter() - started)
            assert report.results == args.jobs * args.results, report
            store.database.conn.close()  # type: ignore[union-attr]
        print(
            f"load at start: {min(loads):.2f} s (best of 3; {statistics.median(loads):.2f} median)"
        )
        tracemalloc.start()
        store, _ = open_store(state, args.results, durable=False, now=T0)
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"memory: {current / args.jobs / 1024:.1f} KiB per job (tracemalloc, loaded)")

        def interval(n: int) -> None:
            at = T0 + 10_000 + n * 10
            batch = [
                result((n * 5000 + k) % args.jobs, 1000 + n * 5000 + k, at) for k in range(5000)
            ]
            for k in range(0, 5000, 50):
                store.record(batch[k : k + 50], at)

        seconds, written = [], []
        for n in range(5):
            interval(n)
            before, started = wchar(), time.perf_counter()
            store.flush(T0)
            seconds.append(time.perf_counter() - started)
            written.append(wchar() - before)
        ms, mb = statistics.median(seconds) * 1e3, statistics.median(written) / 1e6
        print(
            f"one write of 5,000 results and their states: {ms:.0f} ms median, "
            f"{max(seconds) * 1e3:.0f} ms worst; {mb:.2f} MB written median, "
            f"{max(written) / 1e6:.2f} MB worst"
        )
        worst = [0.0]
        stop = threading.Event()

        def submitter() -> None:
            k = 0
            while not stop.is_set():
                r = result(k % args.jobs, 900_000 + k, T0 + 20_000 + k)
                started = time.perf_counter()
                store.record([r], T0)
                worst[0] = max(worst[0], time.perf_counter() - started)
                k += 1
                time.sleep(0.0005)

        thread = threading.Thread(target=submitter)
        thread.start()
        for n in range(5, 10):
            interval(n)
            store.flush(T0)
        stop.set()
        thread.join()
        print(f"worst record() latency during writes: {worst[0] * 1e3:.1f} ms")
        store.close()

    for durable in (False, True):
        print(f"journal {'on ' if durable else 'off'}: {throughput(durable):,.0f} records/s")


def throughput(durable: bool, threads: int = 8, seconds: float = 3.0) -> float:
    """Records per second of ``threads`` threads recording single results."""
    with tempfile.TemporaryDirectory() as tmp:
        store, _ = open_store(Path(tmp), 100, durable=durable, now=T0)
        count = [0]
        deadline = time.perf_counter() + seconds

        def worker(w: int) -> None:
            k = 0
            while time.perf_counter() < deadline:
                store.record([result(w * 100 + k % 100, k, T0 + k)], T0)
                k += 1
            count[0] += k

        workers = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
        started = time.perf_counter()
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        rate = count[0] / (time.perf_counter() - started)
        store.close()
        return rate


if __name__ == "__main__":
    main()
