"""Batch ingest rate: ``POST /api/job-result`` with JSON arrays of 1000 results.

A real ``cronmetrics serve --no-auth`` with ``--jobs`` jobs defined; the batches are
pre-encoded (random jobs, success/failure mix, durations, exit codes) so the client costs
little. Two shapes: one client posting batches back to back (Python, keep-alive), and wrk
with ``--connections`` keep-alive connections.

    python3 benchmarks/bench_batch.py [--jobs 10000] [--batch 1000] [--duration 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Job,
    jobs_tree,
    machine,
    post_json,
    process_tree_cpu,
    result_body,
    run_wrk,
    serve,
    settle,
    verdict,
)


def batches(jobs: list[Job], size: int, count: int) -> list[bytes]:
    rng = random.Random(5)
    out = []
    for _ in range(count):
        items = []
        for job in rng.sample(jobs, min(size, len(jobs))):
            body = result_body(job, rng)
            if rng.random() < 0.1:
                body["status"], body["exit_code"] = "failure", 1
            items.append(body)
        out.append(json.dumps(items).encode())
    return out


def sequential(port: int, bodies: list[bytes], size: int, duration: float) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < duration:
        status, reply = post_json(conn, "/api/job-result", bodies[sent % len(bodies)])
        if status != 200:
            raise RuntimeError(f"batch failed: {status} {reply[:300]!r}")
        sent += 1
    elapsed = time.perf_counter() - start
    conn.close()
    return sent * size / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10, help="seconds per run")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    with jobs_tree(args.jobs) as (jobs_dir, jobs), serve(jobs_dir, args.jobs) as server:
        bodies = batches(jobs, args.batch, 20)
        sequential(server.port, bodies, args.batch, 1)  # warm-up
        settle(server)
        cpu0 = process_tree_cpu(server.process.pid)
        one = sequential(server.port, bodies, args.batch, args.duration)
        cpu = process_tree_cpu(server.process.pid) - cpu0
        per_cpu = one * args.duration / cpu if cpu else float("nan")
        print(
            f"{args.jobs} jobs, batches of {args.batch}, 1 client back to back: "
            f"{one:9.0f} results/s (server: {per_cpu:.0f} results per CPU-second)"
        )
        text = [b.decode() for b in bodies]
        result = run_wrk(
            server.url,
            "/api/job-result",
            text,
            connections=args.connections,
            threads=min(2, args.connections),
            duration=args.duration,
        )
        if result.status_errors or result.socket_errors:
            raise RuntimeError(f"errors:\n{result.raw}\n{server.log()[-2000:]}")
        many = result.rate * args.batch
        print(
            f"{args.jobs} jobs, batches of {args.batch}, wrk {args.connections} connections: "
            f"{many:9.0f} results/s ({result.rate:.1f} batches/s, p50 {result.latency_p50_ms} ms)"
        )
        print(
            f"  verdict >= 20,000 results/s: {verdict(max(one, many) >= 20_000)} "
            f"(1 client {verdict(one >= 20_000)}, {args.connections} connections "
            f"{verdict(many >= 20_000)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
