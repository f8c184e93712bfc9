"""Time ``GET /metrics`` on a real ``cronmetrics serve`` with 10,000 (and 100,000) jobs.

For each job count: generate the job files, start the server (gunicorn, loopback), submit
one result for every job so all of them are "reporting", then time scrapes over a
keep-alive connection, plain and with ``Accept-Encoding: gzip``:

* steady: back-to-back scrapes with nothing changing in between;
* under load: a separate process POSTs single results at ``--load-rate`` per second to
  random jobs while we scrape every ``--interval`` seconds, so each scrape has to fold in
  about ``load-rate x interval`` changed jobs.

For contrast, prometheus_client's generic renderer (``generate_latest`` over a collector
that yields ``GaugeMetricFamily`` objects with the same samples, plus gzip as its WSGI app
does) is timed in this process on the same 10k-job data.

    python3 benchmarks/bench_metrics.py [--jobs 10000] [--big 100000] [--scrapes 25]
                                        [--load-rate 200] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import multiprocessing
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Job,
    jobs_tree,
    machine,
    median_ms,
    post_json,
    report_all,
    result_body,
    serve,
    settle,
    spread_ms,
    timed_get,
    verdict,
)

GZIP = {"Accept-Encoding": "gzip"}


def load_worker(port: int, jobs: list[Job], rate: float, stop: Any, sent: Any) -> None:
    """POST single results at ``rate``/s to random jobs until ``stop`` is set."""
    rng = random.Random(7)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    start = time.monotonic()
    count = 0
    while not stop.is_set():
        due = start + count / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        job = rng.choice(jobs)
        status, body = post_json(
            conn, "/api/job-result", json.dumps(result_body(job, rng)).encode()
        )
        if status != 200:
            raise RuntimeError(f"submit failed: {status} {body[:200]!r}")
        count += 1
        with sent.get_lock():
            sent.value = count


def scrape_series(port: int, count: int, headers: dict[str, str], interval: float) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    samples = []
    for _ in range(count):
        begin = time.monotonic()
        seconds, status, _size = timed_get(conn, "/metrics", headers)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        samples.append(seconds)
        rest = interval - (time.monotonic() - begin)
        if rest > 0:
            time.sleep(rest)
    conn.close()
    return samples


def measure(count: int, args: argparse.Namespace, *, with_load: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"jobs": count}
    with jobs_tree(count) as (jobs_dir, jobs), serve(jobs_dir, count, timeout=600) as server:
        out["ready_s"] = server.ready_after
        report_all(server.port, jobs)
        settle(server)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        first, _, size = timed_get(conn, "/metrics")
        _, _, gz_size = timed_get(conn, "/metrics", GZIP)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read()
        conn.close()
        out.update(first_ms=first * 1000, bytes=size, gzip_bytes=gz_size)
        out["samples"] = sum(1 for line in text.splitlines() if line and line[:1] != b"#")
        if args.keep_text is not None and count == args.jobs:
            args.keep_text = text
        for name, headers in (("plain", {}), ("gzip", GZIP)):
            samples = scrape_series(server.port, args.scrapes, headers, 0)
            out[f"steady_{name}"] = samples
        if with_load:
            ctx = multiprocessing.get_context("fork")
            stop = ctx.Event()
            sent = ctx.Value("l", 0)
            worker = ctx.Process(
                target=load_worker, args=(server.port, jobs, args.load_rate, stop, sent)
            )
            worker.start()
            try:
                time.sleep(args.interval)
                begin, sent0 = time.monotonic(), sent.value
                for name, headers in (("plain", {}), ("gzip", GZIP)):
                    samples = scrape_series(server.port, args.scrapes, headers, args.interval)
                    out[f"load_{name}"] = samples
                out["load_rate_achieved"] = (sent.value - sent0) / (time.monotonic() - begin)
            finally:
                stop.set()
                worker.join(10)
                if worker.exitcode not in (0, None):
                    raise RuntimeError("load worker failed")
    return out


def parse_families(text: bytes) -> list[tuple[str, str, list[tuple[dict[str, str], float]]]]:
    """Per-job families of our own output: (name, type, [(labels, value)])."""
    from prometheus_client.parser import text_string_to_metric_families

    families = []
    for family in text_string_to_metric_families(text.decode()):
        if not family.name.startswith("cronjob_"):
            continue
        samples = [(dict(s.labels), s.value) for s in family.samples]
        families.append((family.name, family.type, samples))
    return families


def prometheus_client_render(text: bytes, runs: int) -> tuple[list[float], list[float], int]:
    """Time collect + generate_latest (and + gzip) for the same samples."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    families = parse_families(text)

    class Jobs(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            for name, kind, samples in families:
                labelnames = list(samples[0][0]) if samples else []
                if kind == "counter":
                    family: Any = CounterMetricFamily(
                        name.removesuffix("_total"), name, labels=labelnames
                    )
                else:
                    family = GaugeMetricFamily(name, name, labels=labelnames)
                for labels, value in samples:
                    family.add_metric(list(labels.values()), value)
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Jobs())
    plain, packed = [], []
    size = 0
    for _ in range(runs):
        start = time.perf_counter()
        body = generate_latest(registry)
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        body = gzip.compress(generate_latest(registry))
        packed.append(time.perf_counter() - start)
        size = len(body)
    return plain, packed, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=100_000, help="0 to skip the big run")
    parser.add_argument("--scrapes", type=int, default=15, help="per series")
    parser.add_argument("--load-rate", type=float, default=200.0, help="results/s under load")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between scrapes")
    parser.add_argument("--pc-runs", type=int, default=1, help="prometheus_client renders")
    args = parser.parse_args()
    args.keep_text = b""

    print(f"machine: {machine()}")
    small = measure(args.jobs, args, with_load=True)
    text: bytes = args.keep_text
    print(
        f"{args.jobs} jobs: {small['samples']} samples, {small['bytes'] / 1e6:.1f} MB plain, "
        f"{small['gzip_bytes'] / 1e6:.2f} MB gzip, first (cold) render {small['first_ms']:.0f} ms"
    )
    for key in ("steady_plain", "steady_gzip", "load_plain", "load_gzip"):
        print(f"  {key:13s} {spread_ms(small[key])}")
    print(
        f"  load achieved {small['load_rate_achieved']:.0f} results/s, scrape every "
        f"{args.interval}s (~{small['load_rate_achieved'] * args.interval:.0f} changed jobs "
        "per scrape)"
    )

    pc_plain, pc_gzip, pc_size = prometheus_client_render(text, args.pc_runs)
    ours_plain = median_ms(small["steady_plain"])
    ours_gzip = median_ms(small["steady_gzip"])
    print(
        f"  prometheus_client generate_latest: {spread_ms(pc_plain)}; +gzip {spread_ms(pc_gzip)} "
        f"({pc_size / 1e6:.2f} MB)"
    )
    print(
        f"  ratio prometheus_client / cronmetrics steady: plain "
        f"{median_ms(pc_plain) / ours_plain:.0f}x, gzip {median_ms(pc_gzip) / ours_gzip:.0f}x; "
        f"vs under load: plain {median_ms(pc_plain) / median_ms(small['load_plain']):.1f}x, "
        f"gzip {median_ms(pc_gzip) / median_ms(small['load_gzip']):.1f}x"
    )
    ok = ours_plain <= 50 and ours_gzip <= 50
    print(
        f"  verdict steady <= 50 ms: {verdict(ok)}; under load <= 50 ms: "
        f"{verdict(median_ms(small['load_plain']) <= 50 and median_ms(small['load_gzip']) <= 50)}"
    )

    if args.big:
        args.keep_text = None
        big = measure(args.big, args, with_load=False)
        print(
            f"{args.big} jobs: {big['samples']} samples, {big['bytes'] / 1e6:.0f} MB plain, "
            f"{big['gzip_bytes'] / 1e6:.1f} MB gzip, ready in {big['ready_s']:.1f} s, "
            f"first render {big['first_ms']:.0f} ms"
        )
        for key in ("steady_plain", "steady_gzip"):
            ratio = median_ms(big[key]) / median_ms(small[key])
            print(
                f"  {key:13s} {spread_ms(big[key])}  = {ratio:.1f}x the {args.jobs} figure "
                f"({verdict(ratio <= 10)} <= 10x)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
