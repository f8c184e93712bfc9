"""The embedded engine on state.db: load, periodic write, latency during writes, journal.

    python benchmarks/bench_storage.py [--jobs 10000] [--results 100] [--compare REV]
                                       [--http-rounds 2]

Builds a state.db of ``jobs`` x ``results`` (and one job idle since the start, as a
weekly job would be) in a temporary dir through the store's own calls (``record``,
``flush``, ``close``: the same on every version), then measures:

- load at start (``open_store``: every state and result into memory), after a clean
  shutdown and, where the version keeps a history cache, without it (after a crash);
- memory per job of the loaded engine (tracemalloc);
- periodic writes of 10 s of results at 500 results/s (5,000 results spread over the
  jobs, and their states), ``--intervals`` of them in a row, so that histories that are
  full drop rows: seconds, and bytes written by the process (``wchar`` of
  /proc/self/io: the WAL, checkpoints and the database file included);
- the worst record() latency of a submitting thread while such writes run;
- submissions/s with ``snapshot.journal`` on (every record committed before its 2xx,
  group commit) and off: in process (8 threads recording single results) and over HTTP
  (a real ``cronmetrics serve``, wrk with 16 keep-alive connections, one process).

``--compare REV`` runs the same measurements on the code of git revision ``REV`` (a
temporary worktree, imported through PYTHONPATH) in the same session, then on this
tree, and prints both side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cronmetrics
from cronmetrics.storage.history import Result
from cronmetrics.storage.persistence import open_store

T0 = 1_767_571_200.0
PER_INTERVAL = 5000


def wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def job_id(job: int) -> str:
    return f"job{job:05d}@host{job % 50}"


def result(job: int, i: int, at: float, *, run_ids: bool = True) -> Result:
    return Result(
        job_id(job),
        "success" if i % 10 else "failure",
        at,
        at,
        host=f"host{job % 50}",
        duration=1.5 + i % 7,
        exit_code=0 if i % 10 else 1,
        run_id=f"{job:016x}{i:016x}" if run_ids else None,  # the form `cronmetrics run` sends
        output="done" if i % 10 else "error: disk quota exceeded",
    )


def build(state_dir: Path, jobs: int, results: int, *, run_ids: bool = True) -> None:
    """``jobs`` x ``results``, and one more job that reports once, at the start: a weekly
    job, idle since, whose state row is older than every other (it must not make a start
    read every result)."""
    store, _ = open_store(state_dir, results, durable=False, now=T0)
    store.record([result(jobs, 0, T0, run_ids=run_ids)], T0)
    store.flush(T0)
    for i in range(results):
        at = T0 + i * 60
        for start in range(0, jobs, 1000):
            chunk = range(start, min(jobs, start + 1000))
            store.record([result(j, i, at, run_ids=run_ids) for j in chunk], at)
        if i % 10 == 9:
            store.flush(at)
    store.close()


def record_interval(store: Any, jobs: int, n: int) -> None:
    """Interval ``n``'s results (10 s at 500 results/s, spread over the jobs), recorded
    50 to a call: what one periodic write then writes."""
    at = T0 + 10_000 + n * 10
    batch = [
        result((n * PER_INTERVAL + k) % jobs, 1000 + n * PER_INTERVAL + k, at)
        for k in range(PER_INTERVAL)
    ]
    for k in range(0, PER_INTERVAL, 50):
        store.record(batch[k : k + 50], at)


def load(state_dir: Path, results: int) -> tuple[float, Any]:
    started = time.perf_counter()
    store, report = open_store(state_dir, results, durable=False, now=T0)
    seconds = time.perf_counter() - started
    return seconds, (store, report)


def measure(
    jobs: int, results: int, intervals: int, http_seconds: float, http_rounds: int = 2
) -> dict[str, Any]:
    figures: dict[str, Any] = {"code": str(Path(cronmetrics.__file__).resolve().parent.parent)}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        build(state, jobs, results)
        figures["db_mb"] = (state / "state.db").stat().st_size / 1e6
        loads = []
        for _ in range(3):
            seconds, (store, report) = load(state, results)
            loads.append(seconds)
            assert report.results == jobs * results + 1, report
            store.database.conn.close()  # no final write: the file stays as it was
        figures["load_s"], figures["load_median_s"] = min(loads), statistics.median(loads)
        crashed = Path(tmp) / "crashed"
        shutil.copytree(state, crashed)
        with contextlib.closing(sqlite3.connect(crashed / "state.db")) as db:
            tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master")}
            if "history_cache" in tables:
                db.execute("DELETE FROM history_cache")
                db.commit()
                seconds, (store, report) = load(crashed, results)
                assert report.results == jobs * results + 1, report
                store.database.conn.close()
                figures["load_uncached_s"] = seconds
        shutil.rmtree(crashed)

        figures["memory_kib"] = memory(state, jobs, results)
        bare = Path(tmp) / "no-run-ids"
        bare.mkdir()
        build(bare, 2000, results, run_ids=False)  # the data of the 0.1 figure (7.8 KiB)
        figures["memory_no_run_ids_kib"] = memory(bare, 2000, results)
        shutil.rmtree(bare)
        store, _ = open_store(state, results, durable=False, now=T0)
        figures.update(collections())  # with the store just loaded

        def interval(n: int) -> None:
            record_interval(store, jobs, n)

        seconds, written = [], []
        for n in range(intervals):
            interval(n)
            before, started = wchar(), time.perf_counter()
            store.flush(T0)
            seconds.append(time.perf_counter() - started)
            written.append(wchar() - before)
        figures["write_ms"] = statistics.median(seconds) * 1e3
        figures["write_worst_ms"] = max(seconds) * 1e3
        figures["write_mb"] = statistics.median(written) / 1e6
        figures["write_worst_mb"] = max(written) / 1e6
        figures["write_mean_mb"] = statistics.mean(written) / 1e6
        figures["db_after_mb"] = (state / "state.db").stat().st_size / 1e6

        worst = [0.0]
        stop = threading.Event()

        def submitter() -> None:
            k = 0
            while not stop.is_set():
                r = result(k % jobs, 900_000 + k, T0 + 20_000 + k)
                started = time.perf_counter()
                store.record([r], T0)
                worst[0] = max(worst[0], time.perf_counter() - started)
                k += 1
                time.sleep(0.0005)

        thread = threading.Thread(target=submitter)
        thread.start()
        for n in range(intervals, intervals + 5):
            interval(n)
            store.flush(T0)
        stop.set()
        thread.join()
        figures["worst_record_ms"] = worst[0] * 1e3
        before, started = wchar(), time.perf_counter()
        store.close()
        figures["close_s"] = time.perf_counter() - started
        figures["close_mb"] = (wchar() - before) / 1e6

    for durable in (False, True):
        figures[f"inprocess_{'on' if durable else 'off'}"] = throughput(durable)
    if http_seconds > 0:
        figures.update(http_journal(http_seconds, http_rounds))
    figures["load"] = loadavg()
    return figures


def collections() -> dict[str, float]:
    """A full garbage collection with the store loaded, before and after what a served
    worker does once it is ready (``settle_heap``, where the tree has it), which then
    stays in force for the writes measured next, as in a worker."""
    import gc

    def full() -> float:
        started = time.perf_counter()
        gc.collect()
        return (time.perf_counter() - started) * 1e3

    before = min(full() for _ in range(3))
    try:
        from cronmetrics.web.server import settle_heap
    except ImportError:  # a tree from before it
        pass
    else:
        settle_heap()
    return {"gc_ms": before, "gc_settled_ms": min(full() for _ in range(3))}


def memory(state_dir: Path, jobs: int, results: int) -> float:
    """KiB per job of a loaded engine (tracemalloc: everything loading allocated)."""
    tracemalloc.start()
    store, _ = open_store(state_dir, results, durable=False, now=T0)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    store.database.conn.close()  # type: ignore[union-attr]
    return current / jobs / 1024


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


@contextlib.contextmanager
def http_server(jobs_dir: Path, journal: bool) -> Iterator[Any]:
    """``cronmetrics serve --no-auth`` of the code under test (the tree ``cronmetrics``
    was imported from), with the journal on or off."""
    from common import loaded

    from cronmetrics.testing import start_server, wait_for

    tmp = Path(tempfile.mkdtemp(prefix="cm-bench-storage-"))
    env = {
        "CRONMETRICS_LOG__LEVEL": "warning",
        "CRONMETRICS_SNAPSHOT__JOURNAL": "true" if journal else "false",
        "PYTHONPATH": figures_root(),
    }
    server = start_server(
        jobs_dir, tmp / "state", args=["--no-auth"], env=env, log_path=tmp / "server.log"
    )
    try:
        wait_for(lambda: loaded(server, 1000), "jobs loaded", timeout=300, interval=0.05,
                 process=server.process, log=server.log)  # fmt: skip
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def figures_root() -> str:
    return str(Path(cronmetrics.__file__).resolve().parent.parent)


def http_journal(seconds: float, rounds: int) -> dict[str, Any]:
    """Submissions/s over HTTP, journal off and on, ``rounds`` times each, alternating;
    with 16 keep-alive connections, and with 64 (a burst at the top of the minute).
    Also on / off per round (a round's two servers ran minutes apart at most): on a
    machine whose speed drifts, their spread says more than the ratio of the means."""
    import random

    from common import (
        jobs_tree,
        process_tree_cpu,
        process_tree_switches,
        report_all,
        result_body,
        run_wrk,
    )

    rates: dict[str, list[float]] = {}
    with jobs_tree(1000) as (jobs_dir, jobs):
        rng = random.Random(3)
        bodies = [json.dumps(result_body(rng.choice(jobs), rng)) for _ in range(2000)]
        for journal in (False, True) * rounds:
            with http_server(jobs_dir, journal) as server:
                report_all(server.port, jobs)
                run_wrk(server.url, "/api/job-result", bodies, duration=2)  # warm-up
                for connections, suffix in ((16, ""), (64, "_64")):
                    pid = server.process.pid
                    cpu, switches = process_tree_cpu(pid), process_tree_switches(pid)
                    run = run_wrk(
                        server.url,
                        "/api/job-result",
                        bodies,
                        duration=seconds,
                        connections=connections,
                    )
                    if run.status_errors or run.socket_errors:
                        raise RuntimeError(f"errors:\n{run.raw}\n{server.log()[-2000:]}")
                    key = f"http_{'on' if journal else 'off'}{suffix}"
                    rates.setdefault(key, []).append(run.rate)
                    requests = run.rate * round(seconds)
                    cpu = (process_tree_cpu(pid) - cpu) / requests * 1e6
                    switches = (process_tree_switches(pid) - switches) / requests
                    rates.setdefault(f"{key}_cpu_us", []).append(cpu)
                    rates.setdefault(f"{key}_switches", []).append(switches)
    figures: dict[str, Any] = {k: statistics.mean(v) for k, v in rates.items()}
    for suffix in ("", "_64"):
        pairs = zip(rates[f"http_on{suffix}"], rates[f"http_off{suffix}"], strict=True)
        figures[f"http_rounds{suffix}"] = [on / off for on, off in pairs]
    return figures


ROWS = [
    ("load at start (clean shutdown before)", "load_s", "{:.2f} s"),
    ("load at start without a history cache (after a crash)", "load_uncached_s", "{:.2f} s"),
    ("memory per job (tracemalloc, loaded)", "memory_kib", "{:.1f} KiB"),
    ("  without run ids (2,000 jobs)", "memory_no_run_ids_kib", "{:.1f} KiB"),
    ("one write of 5,000 results + states: median", "write_ms", "{:.0f} ms"),
    ("  worst", "write_worst_ms", "{:.0f} ms"),
    ("  bytes written, median", "write_mb", "{:.2f} MB"),
    ("  bytes written, worst", "write_worst_mb", "{:.2f} MB"),
    ("  bytes written, mean", "write_mean_mb", "{:.2f} MB"),
    ("worst record() latency during writes", "worst_record_ms", "{:.1f} ms"),
    ("a full garbage collection, store loaded", "gc_ms", "{:.1f} ms"),
    ("  once the worker is ready (settle_heap)", "gc_settled_ms", "{:.1f} ms"),
    ("final write at shutdown", "close_s", "{:.2f} s"),
    ("  bytes written", "close_mb", "{:.1f} MB"),
    ("state.db after the build / after the writes", "db_mb", "{:.1f} MB"),
    ("", "db_after_mb", "{:.1f} MB"),
    ("journal off, in process, 8 threads (records/s)", "inprocess_off", "{:,.0f}"),
    ("journal on, in process, 8 threads (records/s)", "inprocess_on", "{:,.0f}"),
    ("journal off, HTTP, 16 connections (req/s)", "http_off", "{:,.0f}"),
    ("journal on, HTTP, 16 connections (req/s)", "http_on", "{:,.0f}"),
    ("journal off, HTTP, 64 connections (req/s)", "http_off_64", "{:,.0f}"),
    ("journal on, HTTP, 64 connections (req/s)", "http_on_64", "{:,.0f}"),
    ("  server CPU per request, journal off, 16 connections", "http_off_cpu_us", "{:,.0f} µs"),
    ("  server CPU per request, journal on, 16 connections", "http_on_cpu_us", "{:,.0f} µs"),
    ("  thread switches per request, journal off, 16 connections", "http_off_switches", "{:.1f}"),
    ("  thread switches per request, journal on, 16 connections", "http_on_switches", "{:.1f}"),
    ("load average after", "load", "{}"),
]


def show(columns: list[tuple[str, dict[str, Any]]]) -> None:
    print(" | ".join(["figure", *(name for name, _ in columns)]))
    for label, key, fmt in ROWS:
        cells = [fmt.format(f[key]) if key in f else "-" for _, f in columns]
        print(" | ".join([label or "  after the writes", *cells]))
    for name, f in columns:
        if "http_on" in f:
            print(f"{name}: journal on / off over HTTP = {f['http_on'] / f['http_off']:.0%}")
        if "http_on_64" in f:
            ratio = f["http_on_64"] / f["http_off_64"]
            print(f"{name}: journal on / off over HTTP, 64 connections = {ratio:.0%}")
        for suffix, conns in (("", 16), ("_64", 64)):
            if rounds := f.get(f"http_rounds{suffix}"):
                each = ", ".join(f"{r:.0%}" for r in rounds)
                print(f"{name}: on / off per round, {conns} connections: {each} "
                      f"(median {statistics.median(rounds):.0%})")  # fmt: skip
        print(f"{name}: journal on / off in process = {f['inprocess_on'] / f['inprocess_off']:.0%}")


REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """The code of git revision ``rev`` in a temporary worktree (import it through
    PYTHONPATH), removed afterwards."""
    old = Path(tempfile.mkdtemp(prefix="cm-bench-old-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), rev],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield old
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)],
                       check=False)  # fmt: skip


def compare(rev: str, argv: list[str]) -> None:
    with worktree(rev) as old:
        columns = []
        for name, root in ((rev, old), ("this tree", REPO)):
            env = {**os.environ, "PYTHONPATH": str(root)}
            out = subprocess.run([sys.executable, __file__, *argv, "--json"], env=env,
                                 check=True, capture_output=True, text=True).stdout  # fmt: skip
            figures = json.loads(out.splitlines()[-1])
            assert figures["code"] == str(root.resolve()), figures["code"]
            columns.append((name, figures))
        show(columns)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--results", type=int, default=100)
    parser.add_argument("--intervals", type=int, default=30)
    parser.add_argument("--http-seconds", type=float, default=8.0, help="0: skip HTTP")
    parser.add_argument("--http-rounds", type=int, default=2, help="journal off/on pairs")
    parser.add_argument("--compare", metavar="REV", help="also measure git revision REV")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compare:
        argv = [a for a in sys.argv[1:] if a not in ("--compare", args.compare)]
        compare(args.compare, argv)
        return
    print(f"load average before: {loadavg()}", file=sys.stderr)
    figures = measure(args.jobs, args.results, args.intervals, args.http_seconds, args.http_rounds)
    if args.json:
        print(json.dumps(figures))
    else:
        show([("figure", figures)])


if __name__ == "__main__":
    main()
