"""Issue 7: what the client tools cost a cron job.

* ``cronmetrics run -- true``: wall time of the wrapper around a command that does nothing
  (interpreter start-up, start report in the background, final report), against a live
  server and against a closed port (the worst case: retries until --report-timeout).
* ``cronmetrics ingest``: results per second for a JSONL backlog.

Usage: ``python3 benchmarks/bench_client.py [--runs 5] [--lines 20000]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from liveserver import free_port, live_server  # noqa: E402

CM = [sys.executable, "-m", "cronmetrics"]


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def median(cmd: list[str], runs: int) -> tuple[float, float, float]:
    times = [timed(cmd) for _ in range(runs)]
    return statistics.median(times), min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "jobs.d", root / "jobs.d")
        with live_server(root / "jobs.d", root / "state") as live:
            base = median([*CM, "--version"], args.runs)
            run = median(
                [*CM, "run", "--url", live.url, "--job", "home_rsync", "--", "true"], args.runs
            )
            down = f"http://127.0.0.1:{free_port()}"
            dead = median([*CM, "run", "--url", down, "--job", "home_rsync", "--", "true"], 1)
            log = root / "runs.jsonl"
            now = dt.datetime.now(dt.UTC)
            with log.open("w") as f:
                for i in range(args.lines):
                    ts = (now - dt.timedelta(seconds=args.lines - i)).isoformat()
                    f.write(json.dumps({"ts": ts, "exit": i % 7 == 0, "msg": "x" * 60}) + "\n")
            cmd = [*CM, "ingest", str(log), "--job", "home_rsync", "--url", live.url]
            ingest = timed(cmd)
    print(f"interpreter + import (cronmetrics --version): median {base[0]:.2f} s")
    print(f"run -- true, server up:   median {run[0]:.2f} s ({run[1]:.2f}-{run[2]:.2f})")
    print(f"run -- true, server down: {dead[0]:.2f} s (default --report-timeout 10)")
    print(f"ingest {args.lines} lines: {ingest:.2f} s = {args.lines / ingest:.0f} results/s")


if __name__ == "__main__":
    main()
