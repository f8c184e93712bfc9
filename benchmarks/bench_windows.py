"""Maintenance windows: what they cost the monitor (in process, no server).

* ``set_windows``: a window created or ended re-matches every job (10,000 jobs, labels);
* a submission batch of 1,000 results for jobs that carry a recurring window in their
  file vs the same jobs without one (the evaluator then computes the window's previous
  and next fire on every evaluation); the ratio is from the same run.

    python3 benchmarks/bench_windows.py [--jobs 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine

from cronmetrics.jobs.model import JobDefinition, ResultIn
from cronmetrics.monitor import Monitor
from cronmetrics.windows import Window, parse_matcher

T0 = 1_767_571_200.0
RECURRING = [{"schedule": "0 2 * * SUN", "duration": 7200, "timezone": "Europe/Berlin"}]


def definitions(n: int, *, recurring: bool) -> dict[str, JobDefinition]:
    out = {}
    for i in range(n):
        doc: dict[str, Any] = {
            "job_name": f"job{i}",
            "host": f"host{i % 500}",
            "automatic_failure_threshold": 3600,
            "labels": {"env": ("prod", "stage", "dev")[i % 3], "team": f"team{i % 40}"},
        }
        if recurring:
            doc["maintenance_windows"] = RECURRING
        definition = JobDefinition.model_validate(doc)
        out[definition.id] = definition
    return out


def batch_seconds(monitor: Monitor, n: int, runs: int) -> float:
    results = [
        ResultIn.model_validate(
            {"job_name": f"job{i}", "host": f"host{i % 500}", "status": "success"}
        )
        for i in range(0, n, max(1, n // 1000))
    ][:1000]
    times = []
    for run in range(runs):
        start = time.perf_counter()
        monitor.submit(results, T0 + 60 + run)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    plain, with_recurring = Monitor(), Monitor()
    plain.apply_definitions(definitions(args.jobs, recurring=False), T0)
    with_recurring.apply_definitions(definitions(args.jobs, recurring=True), T0)

    window = Window("w", (parse_matcher("host=~host1.*"), parse_matcher("env!=dev")), T0, T0 + 7200)
    create, end = [], []
    for run in range(args.runs):
        start = time.perf_counter()
        covered = plain.set_windows([window], T0 + run)
        create.append(time.perf_counter() - start)
        start = time.perf_counter()
        plain.set_windows([], T0 + run)
        end.append(time.perf_counter() - start)

    base = batch_seconds(plain, args.jobs, args.runs)
    recur = batch_seconds(with_recurring, args.jobs, args.runs)
    print(f"machine: {machine()}")
    print(f"jobs: {args.jobs}; window covers {len(covered)} jobs")
    print(f"set_windows (create): {statistics.median(create) * 1000:.1f} ms median of {args.runs}")
    print(f"set_windows (end):    {statistics.median(end) * 1000:.1f} ms median of {args.runs}")
    print(f"submit 1,000 results, no recurring window:  {base * 1000:.1f} ms")
    print(
        f"submit 1,000 results, one recurring window: {recur * 1000:.1f} ms ({recur / base:.2f}x)"
    )


if __name__ == "__main__":
    main()
