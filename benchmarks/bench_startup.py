"""Time to ready: process start to ``/health/deep`` 200 with every job loaded.

Generates ``--jobs`` job files, then starts ``cronmetrics serve --no-auth`` (gunicorn,
loopback) ``--runs`` times and measures from ``Popen`` to the first ``/health/deep`` that
answers 200 and reports "N jobs loaded". Includes interpreter start, imports, gunicorn's
fork, parsing and validating every file, evaluating every job and arming the scheduler.

    python3 benchmarks/bench_startup.py [--jobs 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import jobs_tree, machine, serve, verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--target", type=float, default=10.0, help="seconds")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    times = []
    with jobs_tree(args.jobs) as (jobs_dir, _jobs):
        for run in range(args.runs):
            with serve(jobs_dir, args.jobs, timeout=300) as server:
                times.append(server.ready_after)
                print(
                    f"  run {run + 1}: ready in {server.ready_after:.2f} s (watcher's catch-up "
                    f"rescan done at {server.quiet_after:.2f} s)"
                )
    median = statistics.median(times)
    print(
        f"{args.jobs} jobs: process start -> /health/deep 200 with all jobs loaded: "
        f"median {median:.2f} s (min {min(times):.2f}, max {max(times):.2f}) "
        f"{verdict(median <= args.target)} <= {args.target:g} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
