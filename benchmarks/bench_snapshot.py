"""Snapshot and journal costs (issue 6).

1. A store of 10,000 jobs x 100 results (realistic fields; every 7th result a failure with
   an output tail) is snapshotted with the real :class:`Snapshotter` into a temp dir:
   a full write (empty chunk cache: encode every job + checksums + write + fsync +
   rename), then incremental writes after 1 % of the jobs got a new result each (the
   monitor lock hold, the copy of the changed jobs, is timed separately); file size;
   then restored into a fresh monitor (verify + decode + rebuild). Each run uses a fresh
   snapshotter. Wall and CPU time are both printed: on a shared machine the CPU time is
   what an idle machine's wall time would be (the verdict uses it; the work is
   single-threaded apart from the kernel's writeback).
2. Submission stall: while a snapshot of that store is written, a thread keeps calling
   ``Monitor.submit``; its worst latency is compared with the same loop without a snapshot.
3. Recent results across all jobs (the history API's ``/api/job-result``), against
   building every result and sorting.
4. A manual purge as the API answers it (in memory, then both snapshot generations
   rewritten): one job, and half of every job's history.
5. The store's share of a submission: ``History.append`` vs ``deque.append``, and a whole
   ``Monitor.submit``, in process.
6. Memory per job with full history (tracemalloc over building 1,000 jobs x 100 results).
7. Submissions per second with the journal on vs off: wrk (keep-alive, 16 connections)
   against ``cronmetrics serve`` with 1,000 jobs, off / on / off in the same run.

    python3 benchmarks/bench_snapshot.py [--jobs 10000] [--results 100] [--runs 3]
                                         [--duration 8] [--skip-http | --only-http]
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from functools import partial
from itertools import chain
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import jobs_tree, machine, result_body, run_wrk, serve, verdict
from cronmetrics.storage.snapshot import Snapshotter
from cronmetrics.storage.snapshot_format import Copied

from cronmetrics.jobs.model import ResultIn
from cronmetrics.monitor import Monitor
from cronmetrics.storage.history import newest
from cronmetrics.storage.store import MemoryStore, Result, apply_result
from cronmetrics.web.metrics import SelfMetrics

T0 = 1_767_571_200.0


def fill(monitor: Monitor, jobs: int, results: int) -> None:
    rng = random.Random(7)
    store = monitor.store
    with monitor.lock:
        for j in range(jobs):
            host = f"host{j % 40}.example.internal" if j % 2 else None
            job_id = f"team_job_{j}@{host}" if host else f"team_job_{j}"
            state = store.ensure(job_id, T0)
            for i in range(results):
                at = T0 + i * 3600 + rng.uniform(0, 60)
                failed = i % 7 == 0
                apply_result(
                    state,
                    Result(
                        job_id,
                        "failure" if failed else "success",
                        at,
                        at + 0.2,
                        host,
                        round(rng.uniform(1, 600), 2),
                        1 if failed else 0,
                        None,
                        "rsync: connection reset by peer\nretrying in 30 s\nfailed"
                        if failed
                        else None,
                        {},
                    ),
                )
            monitor.mark_changed(job_id)
        monitor.version += 1


def make(state_dir: Path, max_results: int) -> tuple[Monitor, Snapshotter]:
    monitor = Monitor(MemoryStore(max_results), accept_unknown=True)
    return monitor, make_snapshotter(monitor, state_dir)


def make_snapshotter(monitor: Monitor, state_dir: Path) -> Snapshotter:
    return Snapshotter(
        monitor,
        state_dir,
        clock=time.time,
        interval=10,
        journal=False,
        metrics=SelfMetrics(monitor.counts),
    )


def _timed(func: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    started, cpu = time.perf_counter(), time.process_time()
    func()
    return time.perf_counter() - started, time.process_time() - cpu


def change_some(monitor: Monitor, share: float, rng: random.Random) -> int:
    """One new result for ``share`` of the jobs, the way Monitor.submit records it."""
    ids = list(monitor.store.ids())
    picked = rng.sample(ids, max(1, int(len(ids) * share)))
    with monitor.lock:
        for job_id in picked:
            state = monitor.store.get(job_id)
            assert state is not None
            last = state.history[-1]
            at = last.timestamp + 3600
            apply_result(state, Result(job_id, "success", at, at + 0.2, last.host, 12.5, 0))
            monitor.mark_changed(job_id)
    return len(picked)


def bench_files(jobs: int, results: int, runs: int) -> dict[str, float]:
    full, incremental, loads = [], [], []
    locks: list[float] = []
    size = 0
    rng = random.Random(3)
    with tempfile.TemporaryDirectory(prefix="cm-bench-snap-") as tmp:
        state_dir = Path(tmp) / "state"
        monitor, _ = make(state_dir, results)
        fill(monitor, jobs, results)
        gc.collect()
        from cronmetrics.storage import snapshot as snapshot_mod

        real_copy = snapshot_mod.copy_states

        def timed_copy(monitor: Monitor, ids: Iterable[str]) -> list[Copied]:
            started = time.thread_time()
            out = real_copy(monitor, ids)
            locks.append(time.thread_time() - started)
            return out

        changed = 0
        for _ in range(runs):
            snap = make_snapshotter(monitor, state_dir)  # an empty chunk cache
            full.append(_timed(partial(snap.write, force=True)))
            snapshot_mod.copy_states = timed_copy
            try:
                for _ in range(runs):
                    changed = change_some(monitor, 0.01, rng)
                    incremental.append(_timed(snap.write))
            finally:
                snapshot_mod.copy_states = real_copy
            del snap
        size = (state_dir / "state.snapshot").stat().st_size
        del monitor
        gc.collect()
        for _ in range(runs):
            fresh, loader = make(state_dir, results)
            started, cpu = time.perf_counter(), time.process_time()
            report = loader.restore()
            loads.append((time.perf_counter() - started, time.process_time() - cpu))
            assert not report.fallback and report.results == jobs * results, report
            del fresh, loader, report
            gc.collect()

    def med(samples: list[tuple[float, float]], which: int) -> float:
        return statistics.median(s[which] for s in samples)

    return {
        "full_s": med(full, 0),
        "full_cpu_s": med(full, 1),
        "incr_s": med(incremental, 0),
        "incr_cpu_s": med(incremental, 1),
        "changed": changed,
        "lock_ms": statistics.median(locks) * 1000,
        "lock_max_ms": max(locks) * 1000,
        "load_s": med(loads, 0),
        "load_cpu_s": med(loads, 1),
        "size_mb": size / 1e6,
    }


def bench_stall(jobs: int, results: int) -> dict[str, float]:
    """Worst ``Monitor.submit`` latency with and without a concurrent snapshot write."""
    with tempfile.TemporaryDirectory(prefix="cm-bench-stall-") as tmp:
        monitor, snap = make(Path(tmp) / "state", results)
        fill(monitor, jobs, results)
        item = [ResultIn.model_validate({"job_name": "probe", "status": "success"})]

        def loop(stop: threading.Event) -> list[float]:
            samples = []
            while not stop.is_set():
                started = time.perf_counter()
                monitor.submit(item, time.time())
                samples.append(time.perf_counter() - started)
                time.sleep(0.001)
            return samples

        def measure(during: Callable[[], object]) -> list[float]:
            stop = threading.Event()
            out: list[list[float]] = []
            thread = threading.Thread(target=lambda: out.append(loop(stop)))
            thread.start()
            during()
            stop.set()
            thread.join()
            return out[0]

        quiet = measure(lambda: time.sleep(1.0))
        full = measure(lambda: snap.write(force=True))
        change_some(monitor, 0.01, random.Random(5))
        incremental = measure(snap.write)
    return {
        "quiet_max_ms": max(quiet) * 1000,
        "full_max_ms": max(full) * 1000,
        "incr_max_ms": max(incremental) * 1000,
        "incr_p99_ms": sorted(incremental)[int(len(incremental) * 0.99)] * 1000,
        "incr_samples": len(incremental),
    }


def bench_recent(jobs: int, results: int) -> dict[str, float]:
    """``GET /api/job-result?limit=N`` across every job: :func:`history.newest` over
    copies of all histories, against building every result and taking the N newest (what
    the route did before), in the same run."""
    monitor, _ = make(Path(tempfile.gettempdir()) / "unused", results)
    fill(monitor, jobs, results)
    store = monitor.store
    out: dict[str, float] = {}
    for limit in (50, 200):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            with monitor.lock:
                copies = [s.history.copy() for j in store.ids() if (s := store.get(j))]
            newest(copies, limit)
            times.append(time.perf_counter() - started)
        out[f"newest_{limit}_ms"] = statistics.median(times) * 1000
    started = time.perf_counter()
    everything = chain.from_iterable(reversed(h) for h in copies)
    heapq.nlargest(200, everything, key=lambda r: (r.timestamp, r.received))
    out["all_200_ms"] = (time.perf_counter() - started) * 1000
    return out


def bench_purge(jobs: int, results: int) -> list[tuple[str, int, float, float]]:
    """A manual purge as the API runs it: purge in memory, then ``Snapshotter.scrub``
    (write the state, replace the previous generation, drop old journal segments)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="cm-bench-purge-") as tmp:
        monitor, snap = make(Path(tmp) / "state", results)
        fill(monitor, jobs, results)
        snap.write(force=True)
        job = next(iter(monitor.store.ids()))
        cases: list[tuple[str, Callable[[], int]]] = [
            ("one job, everything", lambda: monitor.purge_history(float("inf"), job)),
            ("every job, older than half", lambda: monitor.purge_history(T0 + results * 1800)),
        ]
        for label, purge in cases:
            started, cpu = time.perf_counter(), time.process_time()
            removed = purge()
            snap.scrub()
            rows.append((label, removed, time.perf_counter() - started, time.process_time() - cpu))
    return rows


def bench_append(results: int, n: int = 200_000) -> dict[str, float]:
    """The submission path's share of the store: ``History.append`` (type check, copy on
    write, nine columns) against ``deque.append`` of the same object, and a whole
    ``Monitor.submit`` of one result, in microseconds."""
    from collections import deque

    from cronmetrics.storage.history import History

    item = Result("a", "success", T0, T0, None, 1.5, 0, None, None, {})
    history, plain = History("a", results), deque[Result](maxlen=results)
    out: dict[str, float] = {}
    for name, append in (("history_us", history.append), ("deque_us", plain.append)):
        started = time.perf_counter()
        for _ in range(n):
            append(item)
        out[name] = (time.perf_counter() - started) / n * 1e6
    monitor = Monitor(MemoryStore(results), accept_unknown=True)
    items = [
        [ResultIn.model_validate({"job_name": f"j{i % 1000}", "status": "success"})]
        for i in range(20_000)
    ]
    started = time.perf_counter()
    for i, batch in enumerate(items):
        monitor.submit(batch, T0 + i)
    out["submit_us"] = (time.perf_counter() - started) / len(items) * 1e6
    return out


def bench_memory(results: int, jobs: int = 1000) -> float:
    gc.collect()
    tracemalloc.start()
    monitor = Monitor(MemoryStore(results), accept_unknown=True)
    before = tracemalloc.get_traced_memory()[0]
    fill(monitor, jobs, results)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / jobs


def bench_journal(duration: float) -> list[tuple[str, float, float | None]]:
    rows = []
    with jobs_tree(1000) as (jobs_dir, jobs):
        rng = random.Random(1)
        bodies = [json.dumps(result_body(rng.choice(jobs), rng)) for _ in range(2000)]
        for label, journal in (
            ("journal off", False),
            ("journal on", True),
            ("journal off", False),
        ):
            env = {"CRONMETRICS_SNAPSHOT__JOURNAL": "true" if journal else "false"}
            with serve(jobs_dir, len(jobs), env=env) as server:
                url = f"http://127.0.0.1:{server.port}"
                run_wrk(url, "/api/job-result", bodies, duration=2)  # warm-up
                result = run_wrk(url, "/api/job-result", bodies, duration=duration)
                assert result.status_errors == 0, result.raw
                rows.append((label, result.rate, result.latency_p50_ms))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--results", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--only-http", action="store_true", help="just the journal on/off rates")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if not args.only_http:
        bench_in_process(args.jobs, args.results, args.runs)
    if not args.skip_http:
        rows = bench_journal(args.duration)
        for label, rate, p50 in rows:
            print(f"wrk single results, {label}: {rate:.0f} req/s (p50 {p50} ms)")
        off = statistics.mean(rate for label, rate, _ in rows if label == "journal off")
        on = next(rate for label, rate, _ in rows if label == "journal on")
        print(f"journal on / off: {on / off:.0%} {verdict(on >= 0.5 * off)}")


def bench_in_process(jobs: int, results: int, runs: int) -> None:
    files = bench_files(jobs, results, runs)
    print(
        f"snapshot {jobs} jobs x {results} results: {files['size_mb']:.1f} MB, "
        f"medians of {runs} (incremental: {runs**2})\n"
        f"  full write: {files['full_s']:.2f} s wall, "
        f"{files['full_cpu_s']:.2f} s CPU {verdict(files['full_cpu_s'] <= 1.0)}\n"
        f"  incremental write, {files['changed']} jobs changed: {files['incr_s']:.3f} s wall, "
        f"{files['incr_cpu_s']:.3f} s CPU {verdict(files['incr_cpu_s'] <= 1.0)}; "
        f"monitor lock (copy of the changed jobs) {files['lock_ms']:.2f} ms CPU "
        f"(max {files['lock_max_ms']:.2f})\n"
        f"  load: {files['load_s']:.2f} s wall, "
        f"{files['load_cpu_s']:.2f} s CPU {verdict(files['load_cpu_s'] <= 2.0)}"
    )
    stall = bench_stall(jobs, results)
    print(
        f"submit latency while an incremental snapshot is written: max "
        f"{stall['incr_max_ms']:.1f} ms, p99 {stall['incr_p99_ms']:.2f} ms over "
        f"{stall['incr_samples']} submits; during a full one: max {stall['full_max_ms']:.1f} "
        f"ms (no snapshot: max {stall['quiet_max_ms']:.1f} ms)"
    )
    recent = bench_recent(jobs, results)
    print(
        f"recent results across {jobs} jobs (copy under the lock + newest): limit 50 "
        f"{recent['newest_50_ms']:.0f} ms, limit 200 {recent['newest_200_ms']:.0f} ms; "
        f"building every result then the 200 newest: {recent['all_200_ms']:.0f} ms"
    )
    for label, removed, wall, cpu in bench_purge(jobs, results):
        print(
            f"manual purge, {label} ({removed} results) + scrub of the state dir: "
            f"{wall:.2f} s wall, {cpu:.2f} s CPU"
        )
    cost = bench_append(results)
    print(
        f"append to a full history: {cost['history_us']:.2f} us (deque of objects: "
        f"{cost['deque_us']:.2f} us); Monitor.submit of one result: {cost['submit_us']:.1f} us"
    )
    per_job = bench_memory(results)
    print(f"memory per job with {results} results of history: {per_job / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
