"""Single-result submission rate: ``cronmetrics serve`` vs a bare Flask + pydantic endpoint.

wrk (keep-alive, 16 connections) POSTs one JSON result per request, cycling through
bodies for random jobs, against:

* baseline: a Flask app whose only route parses the body with
  ``ResultIn.model_validate_json`` and stores it in a dict, served by the very same gunicorn
  settings as ``cronmetrics serve`` (this script subclasses ``cronmetrics.web.server.Server``
  and only swaps the WSGI app: 1 worker, gthread, same threads, keep-alive, backlog);
* ``cronmetrics serve --no-auth`` with 1,000, 10,000 and 100,000 jobs defined.

The baseline runs first and last; the ratio uses their mean, so drift on a busy machine
shows up as a gap between the two baseline figures.

    python3 benchmarks/bench_submit.py [--jobs 1000,10000,100000] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    Job,
    free_port,
    jobs_tree,
    machine,
    process_tree_cpu,
    report_all,
    result_body,
    run_wrk,
    serve,
    settle,
    verdict,
    wrk_submissions,
)

from cronmetrics.testing import stop_process

THREADS = 8  # cronmetrics serve's default --threads


def baseline_app() -> Any:
    """The bare endpoint: parse with pydantic, store in a dict, answer JSON."""
    from flask import Flask, Response, request

    from cronmetrics.jobs.model import ResultIn

    app = Flask("baseline")
    store: dict[str, Any] = {}

    @app.post("/api/job-result")
    def job_result() -> Response:
        result = ResultIn.model_validate_json(request.get_data())
        store[result.job_name] = result
        return Response('{"accepted":1}', mimetype="application/json")

    return app


def serve_baseline(port: int, threads: int) -> None:
    """Run the baseline under cronmetrics' own gunicorn settings (blocks)."""
    from cronmetrics.config import load_config
    from cronmetrics.web.server import Server

    class Baseline(Server):  # type: ignore[misc]
        def load(self) -> Any:
            return baseline_app()

    tmp = Path(tempfile.mkdtemp(prefix="cm-bench-baseline-"))
    try:
        config = load_config(
            None,
            bind=f"127.0.0.1:{port}",
            no_auth=True,
            jobs_dir=tmp / "jobs.d",
            state_dir=tmp / "state",
        )
        Baseline(config, threads=threads).run()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_baseline(bodies: list[str], duration: float) -> tuple[float, float]:
    port = free_port()
    cmd = [sys.executable, __file__, "--serve-baseline", str(port)]
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        import http.client

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request(
                    "POST",
                    "/api/job-result",
                    body=bodies[0],
                    headers={"Content-Type": "application/json"},
                )
                if conn.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        cpu0 = process_tree_cpu(process.pid)
        result = run_wrk(f"http://127.0.0.1:{port}", "/api/job-result", bodies, duration=duration)
        cpu = process_tree_cpu(process.pid) - cpu0
        if result.status_errors or result.socket_errors:
            raise RuntimeError(f"baseline errors:\n{result.raw}")
        return result.rate, result.requests / cpu
    finally:
        stop_process(process)


def bodies_for(jobs: list[Job], count: int = 2000) -> list[str]:
    rng = random.Random(3)
    chosen = [rng.choice(jobs) for _ in range(count)]
    return [json.dumps(result_body(job, rng)) for job in chosen]


def run_cronmetrics(count: int, duration: float) -> tuple[float, float, float, float | None]:
    with jobs_tree(count) as (jobs_dir, jobs), serve(jobs_dir, count, timeout=600) as server:
        report_all(server.port, jobs)
        settle(server)
        result, cpu = wrk_submissions(server, bodies_for(jobs), duration)
        return result.rate, result.requests / cpu, server.ready_after, result.latency_p50_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default="1000,10000,100000", help="comma-separated counts")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, THREADS)
        return 0

    counts = [int(c) for c in args.jobs.split(",") if c]
    print(f"machine: {machine()}")
    print(
        f"wrk: keep-alive, 16 connections, 2 threads, {args.duration:.0f} s per run; "
        f"gunicorn: 1 worker, gthread, {THREADS} threads"
    )
    with jobs_tree(1000) as (_, sample_jobs):
        base_bodies = bodies_for(sample_jobs)
    first, first_cpu = run_baseline(base_bodies, args.duration)
    print(
        f"baseline (Flask + ResultIn.model_validate_json + dict): {first:7.0f} req/s, "
        f"{first_cpu:5.0f} req per server CPU-second"
    )
    rates: dict[int, float] = {}
    per_cpu: dict[int, float] = {}
    for count in counts:
        rate, rate_cpu, ready, p50 = run_cronmetrics(count, args.duration)
        rates[count], per_cpu[count] = rate, rate_cpu
        print(
            f"cronmetrics serve, {count:>6} jobs:                    {rate:7.0f} req/s, "
            f"{rate_cpu:5.0f} req per server CPU-second (p50 {p50} ms, ready in {ready:.1f} s)"
        )
    last, last_cpu = run_baseline(base_bodies, args.duration)
    print(
        f"baseline again:                                        {last:7.0f} req/s, "
        f"{last_cpu:5.0f} req per server CPU-second"
    )
    base = (first + last) / 2
    base_cpu = (first_cpu + last_cpu) / 2
    for count, rate in rates.items():
        ratio = rate / base
        print(
            f"  {count:>6} jobs: {100 * ratio:5.1f}% of baseline ({verdict(ratio >= 0.6)} >= 60%); "
            f"per CPU-second {100 * per_cpu[count] / base_cpu:5.1f}%"
        )
    if len(rates) >= 2:
        low, high = rates[min(rates)], rates[max(rates)]
        drop = (low - high) / low
        print(
            f"  {max(rates)} vs {min(rates)} jobs: {100 * (high / low):5.1f}% "
            f"({verdict(drop <= 0.10)}: falls by at most 10%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
