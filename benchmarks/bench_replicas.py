"""Replicas on Redis: submission rate, A->B propagation, a replica's /metrics, a new replica.

Everything runs on this machine at once: redis-server (AOF, ``appendfsync always``), the
servers and the load generators share the same cores, so the figures are conservative.

1. Single submissions (wrk, keep-alive, 16 connections): one embedded process vs one
   ``serve --workers 2 --store redis://...``, 1,000 jobs, each engine with both of its
   durability settings (embedded: the default 10 s snapshots and ``snapshot.journal``;
   Redis: ``appendfsync everysec`` and ``always``); the ratios of like with like.
2. Propagation: results POSTed to replica A at a paced 500/s for ``--duration`` seconds
   (each with a fresh duration as its mark), while a poller scrapes replica B's
   ``/metrics`` back to back; per result, the time from A's 200 to the first scrape of B
   that shows it. p50 / p99 / max.
3. ``/metrics`` of 10,000 reporting jobs, scraped from a replica vs from the embedded
   engine (median of 30 full uncompressed scrapes each, after warm-up).
4. A new replica joining a Redis that holds 10,000 job states: seconds from its start until
   ``/health/deep`` says the 10,000 jobs are loaded and the store is up (and, for
   comparison, the same for the embedded engine and for the first replica, which creates
   the 10,000 states on an empty Redis).

    python3 benchmarks/bench_replicas.py [--duration 10] [--jobs 10000]
        [--only submissions|propagation|metrics]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import (
    jobs_tree,
    loadavg,
    machine,
    median_ms,
    post_json,
    report_all,
    result_body,
    serve,
    timed_get,
    verdict,
    wrk_submissions,
)
from redisserver import RedisServer  # the tests' redis-server runner


@contextlib.contextmanager
def redis_running() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    tmp = Path(tempfile.mkdtemp(prefix="cm-bench-redis-"))
    server = RedisServer(binary, tmp).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def flush(redis: RedisServer) -> None:
    import redis as redis_py

    redis_py.Redis.from_url(redis.url).flushall()


#: the single-submission runs: (name, durability, serve flags, env, Redis appendfsync)
SUBMISSION_RUNS = (
    ("embedded", "default (written every 10 s)", False, {}, None),
    ("embedded", "snapshot.journal: true (commit before 2xx)", False, {"journal": "true"}, None),
    ("Redis, 2 workers", "appendfsync everysec", True, {}, "everysec"),
    ("Redis, 2 workers", "appendfsync always", True, {}, "always"),
)


def submissions(count: int, duration: float) -> list[tuple[str, str, float, float]]:
    """(engine, durability, req/s, server CPU ms per request) for each of SUBMISSION_RUNS,
    in one run: embedded (one process) and 2 workers on Redis, each with its two
    durability settings."""
    import redis as redis_py

    out = []
    with jobs_tree(count) as (jobs_dir, jobs), redis_running() as redis:
        rng = random.Random(3)
        bodies = [json.dumps(result_body(rng.choice(jobs), rng)) for _ in range(2000)]
        client = redis_py.Redis.from_url(redis.url)
        for name, durability, on_redis, env, fsync in SUBMISSION_RUNS:
            args = ["--store", redis.url, "--workers", "2"] if on_redis else []
            if fsync is not None:
                client.config_set("appendfsync", fsync)
            environ = {"CRONMETRICS_SNAPSHOT__JOURNAL": env["journal"]} if env else None
            with serve(jobs_dir, count, extra_args=args, env=environ) as server:
                report_all(server.port, jobs)
                result, cpu = wrk_submissions(server, bodies, duration)
                ms = cpu / max(1, result.requests) * 1000
                out.append((name, durability, result.rate, ms))
                print(
                    f"  {name:17} {durability:43} {result.rate:7.0f} req/s  "
                    f"server CPU {ms:5.2f} ms/request  (load {loadavg()})",
                    flush=True,
                )
        client.close()
    return out


def propagation(count: int, duration: float, rate: float) -> list[float]:
    """Seconds from A's acknowledgement (200) to B's /metrics showing the result."""
    with jobs_tree(count) as (jobs_dir, jobs), redis_running() as redis:
        args = ["--store", redis.url]
        with (
            serve(jobs_dir, count, extra_args=args) as a,
            serve(jobs_dir, count, extra_args=args) as b,
        ):
            report_all(a.port, jobs)
            acked: dict[float, float] = {}  # duration mark -> when A acknowledged it
            seen: dict[float, float] = {}
            stop = threading.Event()
            pattern = re.compile(rb"^cronjob_last_duration_seconds\{[^}]*\} (\S+)$", re.M)

            def poll() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
                while not stop.is_set():
                    conn.request("GET", "/metrics")
                    body = conn.getresponse().read()
                    now = time.monotonic()
                    for raw in pattern.findall(body):
                        mark = float(raw)
                        if mark >= 1_000_000 and mark not in seen:
                            seen[mark] = now

            poller = threading.Thread(target=poll)
            poller.start()
            conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
            total = int(duration * rate)
            begin = time.monotonic()
            for i in range(total):
                due = begin + i / rate
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                job = jobs[i % len(jobs)]
                mark = 1_000_000.0 + i
                body = {**result_body(job), "duration": mark}
                status, text = post_json(conn, "/api/job-result", json.dumps(body).encode())
                if status != 200:
                    raise RuntimeError(f"submit failed: {status} {text[:200]!r}")
                acked[mark] = time.monotonic()
            deadline = time.monotonic() + 10
            while len(seen) < len(acked) and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            poller.join(30)
            missing = [m for m in acked if m not in seen]
            if missing:
                # a later result of the same job may hide an earlier one between two
                # scrapes; those count as seen no later than their successor
                for m in missing:
                    later = [seen[n] for n in seen if n > m and int(n - m) % len(jobs) == 0]
                    if later:
                        seen[m] = min(later)
            return [max(0.0, seen[m] - acked[m]) for m in acked if m in seen]


def metrics_scrapes(count: int, samples: int = 30) -> tuple[float, float, list[float], float]:
    """(embedded median s, replica median s, [embedded ready s, first replica on an empty
    Redis ready s], new replica ready s)."""
    with jobs_tree(count) as (jobs_dir, jobs), redis_running() as redis:
        medians = []
        ready = []
        for args in ([], ["--store", redis.url]):
            with serve(jobs_dir, count, extra_args=args, timeout=600) as server:
                ready.append(server.ready_after)
                report_all(server.port, jobs)
                time.sleep(1.0)  # let the 0.25 s prepare pass pick up every job
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                for _ in range(3):
                    timed_get(conn, "/metrics")
                times = [timed_get(conn, "/metrics")[0] for _ in range(samples)]
                medians.append(statistics.median(times))
        with serve(jobs_dir, count, extra_args=["--store", redis.url], timeout=600) as late:
            return medians[0], medians[1], ready, late.ready_after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per load run")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs for /metrics and start")
    parser.add_argument("--rate", type=float, default=500, help="results/s for propagation")
    parser.add_argument(
        "--only",
        choices=("submissions", "propagation", "metrics"),
        action="append",
        help="run only these parts (repeatable); default: all",
    )
    args = parser.parse_args()
    parts = set(args.only or ("submissions", "propagation", "metrics"))
    print(f"machine: {machine()}")
    if "submissions" in parts:
        submission_rates(args.duration)
    if "propagation" in parts:
        propagation_delays(args.duration, args.rate)
    if "metrics" in parts:
        replica_metrics(args.jobs)
    print(f"load average at the end: {loadavg()}")
    return 0


def submission_rates(duration: float) -> None:
    print("single submissions, 1,000 jobs (wrk, 16 connections):")
    runs = submissions(1000, duration)
    rate = {(name, durability): r for name, durability, r, _ in runs}
    pairs = (
        ("the previous pairing", "default (written every 10 s)", "appendfsync always"),
        (
            "both lose nothing acknowledged",
            "snapshot.journal: true (commit before 2xx)",
            "appendfsync always",
        ),
        ("both may lose the last seconds", "default (written every 10 s)", "appendfsync everysec"),
    )
    for what, embedded, redis in pairs:
        ratio = rate[("Redis, 2 workers", redis)] / rate[("embedded", embedded)]
        print(
            f"  ratio {ratio:4.2f}x Redis ({redis}) / embedded ({embedded.split(' (')[0]}): "
            f"{what} ({verdict(ratio >= 1.3)}: aim >= 1.3x)"
        )


def propagation_delays(duration: float, rate: float) -> None:
    delays = sorted(propagation(1000, duration, rate))
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
    print(
        f"propagation A->B at {rate:.0f} results/s, {len(delays)} results: "
        f"p50 {median_ms(delays):6.1f} ms  p99 {p99 * 1000:6.1f} ms  "
        f"max {delays[-1] * 1000:6.1f} ms ({verdict(p99 <= 1.0)}: p99 <= 1 s)"
    )


def replica_metrics(jobs: int) -> None:
    emb, rep, (emb_ready, first_ready), ready = metrics_scrapes(jobs)
    print(
        f"/metrics, {jobs} jobs: embedded {emb * 1000:6.1f} ms, replica {rep * 1000:6.1f} ms"
        f" = {rep / emb:4.2f}x ({verdict(rep / emb <= 1.5)}: <= 1.5x)"
    )
    print(
        f"new replica, {jobs} jobs in Redis: ready in {ready:4.1f} s "
        f"({verdict(ready <= 10)}: <= 10 s); the embedded engine's start in the same run "
        f"{emb_ready:4.1f} s; the first replica, on an empty Redis, {first_ready:4.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
