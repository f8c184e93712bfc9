"""What the group commit itself costs a call: its hand-offs, without a database.

    python benchmarks/bench_group_commit.py [--threads 8 16] [--seconds 2] [--rounds 3]

With ``snapshot.journal: true`` each submission waits for a commit; with it off it does
not. Part of what the journal costs is the commit (SQLite, fsync), shared by a group;
the rest is that every acknowledged call blocks and is woken once, whatever the group's
size. This separates the two: ``--threads`` threads each do a request's worth of Python
work (a loop; its time is printed) and then either nothing (``plain``) or
``GroupCommit.submit`` with a commit that runs a shorter loop and releases the GIL once,
as SQLite's step does (``submit``). It prints calls/s, process CPU per call and the mean
group size, alternating the two ``--rounds`` times in one process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cronmetrics.storage.groupcommit import GroupCommit


def work(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def measure(threads: int, seconds: float, grouped: bool) -> tuple[float, float, float]:
    """(calls/s, CPU µs per call, mean group size) of one run."""
    sizes: list[int] = []

    def commit(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        work(200)
        time.sleep(0)  # the GIL released once, as around sqlite3_step
        return [0] * len(items)

    group: GroupCommit[int, int] = GroupCommit(commit)
    calls = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(k: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            work(300)
            if grouped:
                group.submit(n)
            n += 1
        calls[k] = n

    pool = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    cpu, started = time.process_time(), time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    total = sum(calls)
    return total / elapsed, 1e6 * cpu / total, statistics.mean(sizes) if sizes else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(
        f"switch interval {sys.getswitchinterval() * 1000:.0f} ms, Python {sys.version.split()[0]}"
    )
    for n, what in ((300, "a request's work"), (200, "a commit's work")):
        started = time.perf_counter()
        for _ in range(10_000):
            work(n)
        print(f"{what}: {(time.perf_counter() - started) * 100:.1f} µs")
    for threads in args.threads:
        runs: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
        for _ in range(args.rounds):
            for grouped in (False, True):
                runs[grouped].append(measure(threads, args.seconds, grouped))
        for grouped, name in ((False, "plain "), (True, "submit")):
            rate = statistics.median(r[0] for r in runs[grouped])
            cpu = statistics.median(r[1] for r in runs[grouped])
            size = statistics.median(r[2] for r in runs[grouped])
            groups = f", groups of {size:.1f}" if grouped else ""
            print(
                f"{threads:3d} threads {name}: {rate:9,.0f} calls/s, {cpu:5.1f} µs CPU/call{groups}"
            )
        extra = statistics.median(r[1] for r in runs[True]) - statistics.median(
            r[1] for r in runs[False]
        )
        print(f"{threads:3d} threads: the group commit adds {extra:.1f} µs CPU per call")


if __name__ == "__main__":
    main()
