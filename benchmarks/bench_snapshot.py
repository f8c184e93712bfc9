"""Snapshot and journal costs (issue 6).

1. A store of 10,000 jobs x 100 results (realistic fields; every 7th result a failure with
   an output tail) is snapshotted with the real :class:`Snapshotter` into a temp dir:
   time under the monitor lock (the copy), total write time (encode + sha256 + fsync +
   rename), file size; then restored into a fresh monitor (verify + decode + rebuild).
   Wall and CPU time are both printed: on a shared machine the CPU time is what an idle
   machine's wall time would be (the verdict uses it; the work is single-threaded).
2. Submission stall: while a snapshot of that store is written, a thread keeps calling
   ``Monitor.submit``; its worst latency is compared with the same loop without a snapshot.
3. Memory per job with full history (tracemalloc over building 1,000 jobs x 100 results).
4. Submissions per second with the journal on vs off: wrk (keep-alive, 16 connections)
   against ``cronmetrics serve`` with 1,000 jobs, off / on / off in the same run.

    python3 benchmarks/bench_snapshot.py [--jobs 10000] [--results 100] [--runs 3]
                                         [--duration 8] [--skip-http]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import jobs_tree, machine, result_body, run_wrk, serve, verdict

from cronmetrics.metrics import SelfMetrics
from cronmetrics.model import ResultIn
from cronmetrics.monitor import Monitor
from cronmetrics.snapshot import Snapshotter
from cronmetrics.store import MemoryStore, Result, apply_result

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
        monitor.version += 1


def make(state_dir: Path, max_results: int) -> tuple[Monitor, Snapshotter]:
    monitor = Monitor(MemoryStore(max_results), accept_unknown=True)
    snap = Snapshotter(
        monitor,
        state_dir,
        clock=time.time,
        interval=10,
        journal=False,
        metrics=SelfMetrics(monitor.counts),
    )
    return monitor, snap


def bench_files(jobs: int, results: int, runs: int) -> dict[str, float]:
    writes, loads, locks, write_cpu, load_cpu = [], [], [], [], []
    size = 0
    with tempfile.TemporaryDirectory(prefix="cm-bench-snap-") as tmp:
        state_dir = Path(tmp) / "state"
        monitor, snap = make(state_dir, results)
        fill(monitor, jobs, results)
        gc.collect()
        from cronmetrics import snapshot as snapshot_mod

        real_copy = snapshot_mod.copy_states

        def timed_copy(m: Monitor) -> list[snapshot_mod.Copied]:
            started = time.thread_time()
            out = real_copy(m)
            locks.append(time.thread_time() - started)
            return out

        snapshot_mod.copy_states = timed_copy  # type: ignore[assignment]
        try:
            for _ in range(runs):
                started, cpu = time.perf_counter(), time.process_time()
                assert snap.write(force=True)
                writes.append(time.perf_counter() - started)
                write_cpu.append(time.process_time() - cpu)
        finally:
            snapshot_mod.copy_states = real_copy  # type: ignore[assignment]
        size = (state_dir / "state.snapshot").stat().st_size
        del monitor, snap
        gc.collect()
        for _ in range(runs):
            fresh, loader = make(state_dir, results)
            started, cpu = time.perf_counter(), time.process_time()
            report = loader.restore()
            loads.append(time.perf_counter() - started)
            load_cpu.append(time.process_time() - cpu)
            assert not report.fallback and report.results == jobs * results, report
            del fresh, loader
            gc.collect()
    return {
        "write_s": statistics.median(writes),
        "write_cpu_s": statistics.median(write_cpu),
        "load_cpu_s": statistics.median(load_cpu),
        "write_max_s": max(writes),
        "lock_ms": statistics.median(locks) * 1000,
        "load_s": statistics.median(loads),
        "load_max_s": max(loads),
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

        def measure(during_snapshot: bool) -> list[float]:
            stop = threading.Event()
            out: list[list[float]] = []
            thread = threading.Thread(target=lambda: out.append(loop(stop)))
            thread.start()
            if during_snapshot:
                snap.write(force=True)
            else:
                time.sleep(1.0)
            stop.set()
            thread.join()
            return out[0]

        quiet = measure(False)
        busy = measure(True)
    return {
        "quiet_max_ms": max(quiet) * 1000,
        "busy_max_ms": max(busy) * 1000,
        "busy_p99_ms": sorted(busy)[int(len(busy) * 0.99)] * 1000,
        "busy_samples": len(busy),
    }


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
    args = parser.parse_args()
    print(f"machine: {machine()}")
    files = bench_files(args.jobs, args.results, args.runs)
    print(
        f"snapshot {args.jobs} jobs x {args.results} results: {files['size_mb']:.1f} MB\n"
        f"  write: median {files['write_s']:.2f} s wall (max {files['write_max_s']:.2f}), "
        f"{files['write_cpu_s']:.2f} s CPU {verdict(files['write_cpu_s'] <= 1.0)}; "
        f"copy under the monitor lock {files['lock_ms']:.0f} ms CPU\n"
        f"  load: median {files['load_s']:.2f} s wall (max {files['load_max_s']:.2f}), "
        f"{files['load_cpu_s']:.2f} s CPU {verdict(files['load_cpu_s'] <= 2.0)}"
    )
    stall = bench_stall(args.jobs, args.results)
    print(
        f"submit latency while a snapshot is written: max {stall['busy_max_ms']:.1f} ms, "
        f"p99 {stall['busy_p99_ms']:.2f} ms over {stall['busy_samples']} submits "
        f"(no snapshot: max {stall['quiet_max_ms']:.1f} ms)"
    )
    per_job = bench_memory(args.results)
    print(f"memory per job with {args.results} results of history: {per_job / 1024:.1f} KiB")
    if not args.skip_http:
        rows = bench_journal(args.duration)
        for label, rate, p50 in rows:
            print(f"wrk single results, {label}: {rate:.0f} req/s (p50 {p50} ms)")
        off = statistics.mean(rate for label, rate, _ in rows if label == "journal off")
        on = next(rate for label, rate, _ in rows if label == "journal on")
        print(f"journal on / off: {on / off:.0%} {verdict(on >= 0.5 * off)}")


if __name__ == "__main__":
    main()
