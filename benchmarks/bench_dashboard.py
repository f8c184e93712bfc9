"""Time the dashboard's pages on a real ``cronmetrics serve`` with 10,000 jobs.

Generates the job files, starts the server (gunicorn, loopback, ``--no-auth``), submits
``--rounds`` results for every job so each has a history (strips, 7-day rates), then
times each page over a keep-alive connection. The figure is the full response as the
client sees it (request, render, transfer on loopback): an upper bound of the server side.
Target: the jobs page (100 rows of 10,000 jobs) in <= 300 ms.

    python3 benchmarks/bench_dashboard.py [--jobs 10000] [--rounds 5] [--runs 20]
"""

from __future__ import annotations

import argparse
import http.client
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import jobs_tree, machine, report_all, serve, settle, spread_ms, timed_get, verdict

TARGET_MS = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="results per job before timing")
    parser.add_argument("--runs", type=int, default=20, help="requests per page")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with jobs_tree(args.jobs) as (jobs_dir, jobs), serve(jobs_dir, args.jobs) as server:
        for _ in range(args.rounds):
            report_all(server.port, jobs)
        settle(server)
        team = "backup"
        pages = {
            "jobs list (first page, failing first)": "/",
            "jobs list, status filter": "/?status=ok",
            "jobs list, label filter": f"/?label=team%3D{team}",
            "jobs list, free text": "/?q=mail_job_1",
            "jobs list, sorted by last run, page 50": "/?sort=last_run&page=50",
            "one job": f"/jobs/{jobs[1234].id}",
            "exporter": "/exporter",
        }
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        ok = True
        for name, path in pages.items():
            timed_get(conn, path)  # warm: templates compiled, caches filled
            samples = []
            size = 0
            for _ in range(args.runs):
                seconds, status, size = timed_get(conn, path)
                if status != 200:
                    raise RuntimeError(f"GET {path}: {status}")
                samples.append(seconds)
            line = f"{name:42} {spread_ms(samples)}  {size / 1024:6.0f} KiB"
            if path == "/":
                median = sorted(samples)[len(samples) // 2] * 1000
                ok = median <= TARGET_MS
                line += f"  target <= {TARGET_MS:.0f} ms: {verdict(ok)}"
            print(line)
        conn.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
