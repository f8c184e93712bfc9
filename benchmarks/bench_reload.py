"""Hot reload with 10,000 jobs, measured end to end on a real ``cronmetrics serve``.

Generates 10,000 job files, starts the server (gunicorn, watcher, scheduler), then:

* edits one file at a time and times until ``/metrics`` shows the new value (median);
* rewrites 1,000 files at once (a ``git checkout``) and times until all are live;
* patches one job through the API (the reload happens inside the request);
* reads the worker's CPU time from ``/proc/<pid>/stat`` over an idle window (use
  ``--idle 120`` or more to cover the periodic rescans, every 60 s by default).

    python3 benchmarks/bench_reload.py [--jobs 10000] [--edits 10] [--checkout 1000]
                                       [--idle 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_validate import TEAMS, job_text
from common import serve


def generate(root: Path, count: int) -> list[Path]:
    rng = random.Random(4)
    paths = []
    for index in range(count):
        team = TEAMS[index % len(TEAMS)]
        path = root / team / f"job_{index}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(job_text(index, rng))
        paths.append(path)
    return paths


def with_threshold(text: str, seconds: int) -> str:
    """The job with ``automatic_failure_threshold`` set to ``seconds`` (marker value)."""
    lines = [ln for ln in text.splitlines() if not ln.startswith("automatic_failure_threshold")]
    return "\n".join([*lines, f"automatic_failure_threshold: {seconds}"]) + "\n"


def job_id(text: str) -> tuple[str, str]:
    name = re.search(r"^job_name: (\S+)", text, re.M)
    host = re.search(r"^host: (\S+)", text, re.M)
    assert name is not None
    return name.group(1), host.group(1) if host else ""


def wait_for(
    url: str, check: Callable[[bytes], bool], timeout: float, every: float = 0.05
) -> float:
    """Poll ``url`` until ``check`` passes. /metrics is polled every 0.1 s: a 12 MB scrape
    takes the server's GIL for ~0.1 s, and polling it flat out would slow the very reload
    being timed (Prometheus scrapes every 15-60 s)."""
    start = time.perf_counter()
    with httpx.Client(timeout=30) as client:  # sends Accept-Encoding: gzip, like Prometheus
        while time.perf_counter() - start < timeout:
            if check(client.get(url).content):
                return time.perf_counter() - start
            time.sleep(every)
    raise RuntimeError(f"not live after {timeout}s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--checkout", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    root = work / "jobs.d"
    paths = generate(root, args.jobs)
    texts = {p: p.read_text() for p in paths}
    try:
        with serve(root, args.jobs) as server:
            url = server.url
            print(f"server up with {args.jobs} jobs in {server.ready_after:.1f}s")
            time.sleep(3)  # files older than the stat cache's 2 s "racily clean" window

            scrapes = []
            with httpx.Client(timeout=30) as client:
                for _ in range(5):
                    start = time.perf_counter()
                    size = len(client.get(f"{url}/metrics").content)
                    scrapes.append(time.perf_counter() - start)
            print(
                f"one /metrics scrape ({size / 1e6:.1f} MB): "
                f"median {statistics.median(scrapes):.3f}s"
            )

            rng = random.Random(7)
            api_seen = []
            for n in range(args.edits):
                path = rng.choice(paths)
                name, host = job_id(texts[path])
                jid = f"{name}@{host}" if host else name
                marker = 400_000 + n
                start = time.perf_counter()
                path.write_text(with_threshold(texts[path], marker))
                wait_for(
                    f"{url}/api/job/{jid}",
                    lambda body, m=marker: f'"automatic_failure_threshold":{m},'.encode() in body,
                    30,
                )
                api_seen.append(time.perf_counter() - start)
                time.sleep(0.3)
            print(
                f"single-file edit live in the monitor (GET /api/job/<id>): median "
                f"{statistics.median(api_seen):.3f}s "
                f"(min {min(api_seen):.3f}, max {max(api_seen):.3f})"
            )

            edits = []
            for n in range(args.edits):
                path = rng.choice(paths)
                name, host = job_id(texts[path])
                marker = 500_000 + n
                needle = f'cronjob_threshold_seconds{{job_name="{name}",host="{host}"'.encode()
                line = re.compile(re.escape(needle) + rb"[^}]*\} " + str(marker).encode() + rb"\n")
                start = time.perf_counter()
                path.write_text(with_threshold(texts[path], marker))
                wait_for(f"{url}/metrics", lambda body, line=line: bool(line.search(body)), 30, 0.1)
                edits.append(time.perf_counter() - start)
                # measured from the write: includes debounce, rescan, render and one scrape
                time.sleep(0.3)
            print(
                f"single-file edit live in /metrics: median {statistics.median(edits):.3f}s "
                f"(min {min(edits):.3f}, max {max(edits):.3f}, n={len(edits)})"
            )

            marker = 777_777
            chosen = rng.sample(paths, args.checkout)
            pattern = re.compile(rb"^cronjob_threshold_seconds\{[^}]*\} 777777$", re.M)
            start = time.perf_counter()
            for path in chosen:
                path.write_text(with_threshold(texts[path], marker))
            written = time.perf_counter() - start
            wait_for(
                f"{url}/metrics", lambda body: len(pattern.findall(body)) == args.checkout, 60, 0.1
            )
            took = time.perf_counter() - start
            print(
                f"checkout of {args.checkout} files (written in {written:.2f}s) live in "
                f"/metrics {took:.3f}s after the first write"
            )

            api = []
            with httpx.Client(timeout=30) as client:
                for n in range(5):
                    path = rng.choice(paths)
                    name, host = job_id(texts[path])
                    jid = f"{name}@{host}" if host else name
                    start = time.perf_counter()
                    response = client.patch(f"{url}/api/job/{jid}", json={"grace": 100 + n})
                    api.append(time.perf_counter() - start)
                    assert response.status_code == 200, response.text
            print(
                f"API PATCH (write + reload, live when it answers): median "
                f"{statistics.median(api):.3f}s"
            )

            time.sleep(3)
            pid = worker_pid(server.process.pid)
            before, t0 = cpu_seconds(pid), time.perf_counter()
            time.sleep(args.idle)
            used, elapsed = cpu_seconds(pid) - before, time.perf_counter() - t0
            print(
                f"idle worker CPU over {elapsed:.0f}s (watcher, scheduler, rescan of "
                f"{args.jobs} files by stat every 60 s): {100 * used / elapsed:.2f}%"
            )
            print(
                f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
                f"{platform.python_version()}, {platform.platform()}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
