"""The Prometheus Pushgateway doing the same work, side by side with cronmetrics.

Both run on 127.0.0.1 in the same session. For every one of ``--jobs`` jobs:

* Pushgateway (Debian ``prometheus-pushgateway``, in memory): one group per job
  (``/metrics/job/<name>/host/<host>``) holding the same per-job families cronmetrics
  exports (status, reason, last run/success/failure, duration, exit code, deadline,
  threshold, running, consecutive failures, runs and failures counters) with the job's
  labels; a push is a ``PUT`` of that group's text.
* cronmetrics: a push is ``POST /api/job-result`` with one JSON result; the server
  derives the same families itself (and the deadlines the Pushgateway cannot know).

Measured: filling all groups (one client, back to back), steady push rate against the
full store (wrk, keep-alive, 16 connections, random groups), and ``/metrics`` scrape time,
plain and gzip, with nothing changing in between.

    python3 benchmarks/bench_pushgateway.py [--jobs 10000] [--duration 10] [--scrapes 5]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Job,
    WrkResult,
    free_port,
    jobs_tree,
    machine,
    post_json,
    report_all,
    result_body,
    run_wrk,
    run_wrk_script,
    serve,
    settle,
    spread_ms,
    timed_get,
)

from cronmetrics.testing import stop_process

GZIP = {"Accept-Encoding": "gzip"}

PUT_LUA = """
-- PUT one Pushgateway group per request; requests.txt has "path<TAB>body" lines with
-- the body's newlines stored as \\1
wrk.method = "PUT"
wrk.headers["Content-Type"] = "text/plain; version=0.0.4"
local reqs = {}
for line in io.lines("%(requests)s") do
  local tab = string.find(line, "\\t", 1, true)
  local body = string.gsub(string.sub(line, tab + 1), "\\1", "\\n")
  reqs[#reqs + 1] = {string.sub(line, 1, tab - 1), body}
end
local counter = 0
request = function()
  counter = counter + 1
  local r = reqs[(counter %% #reqs) + 1]
  return wrk.format(nil, r[1], nil, r[2])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("STATUS_ERRORS %%d\\n", e.status))
  io.write(string.format("SOCKET_ERRORS %%d\\n", e.connect + e.read + e.write + e.timeout))
end
"""


def label_text(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


def group_path(job: Job) -> str:
    host = job.host or ""
    encoded = base64.urlsafe_b64encode(host.encode()).decode() or "="
    return f"/metrics/job/{job.name}/host@base64/{encoded}"


def group_body(job: Job, labels: dict[str, str], rng: random.Random, now: float) -> str:
    """The job's samples as cronmetrics would export them, job/host in the grouping key."""
    lab = label_text(labels)
    runs = rng.randint(1, 500)
    failures = rng.randint(0, runs // 10)
    last = now - rng.randint(0, 3600)
    values = [
        ("cronjob_status", "gauge", f'{lab},status="active"', 1),
        ("cronjob_status_reason", "gauge", f'{lab},reason="ok"', 1),
        ("cronjob_last_run_timestamp_seconds", "gauge", lab, round(last)),
        ("cronjob_last_success_timestamp_seconds", "gauge", lab, round(last)),
        ("cronjob_last_failure_timestamp_seconds", "gauge", lab, 0),
        ("cronjob_last_duration_seconds", "gauge", lab, round(rng.uniform(1, 600), 2)),
        ("cronjob_last_exit_code", "gauge", lab, 0),
        ("cronjob_deadline_timestamp_seconds", "gauge", lab, round(last) + 3600),
        ("cronjob_threshold_seconds", "gauge", lab, 3600),
        ("cronjob_running", "gauge", lab, 0),
        ("cronjob_consecutive_failures", "gauge", lab, 0),
        ("cronjob_runs_total", "counter", lab, runs),
        ("cronjob_failures_total", "counter", lab, failures),
    ]
    lines = []
    for name, kind, labelset, value in values:
        lines += [f"# TYPE {name} {kind}", f"{name}{{{labelset}}} {value}"]
    return "\n".join(lines) + "\n"


def job_labels(jobs_dir: Path) -> dict[str, dict[str, str]]:
    """Labels per job name, read back from the generated files (env, team, tier)."""
    out: dict[str, dict[str, str]] = {}
    for path in jobs_dir.rglob("*.yaml"):
        text = path.read_text()
        name = re.search(r"^job_name: (\S+)", text, re.M).group(1)  # type: ignore[union-attr]
        labels = dict(re.findall(r"^  (\w+): \"?([^\"\n]+)\"?$", text, re.M))
        out[name] = labels
    return out


def start_pushgateway(
    port: int, workdir: Path, *, check: bool, persistence: Path
) -> subprocess.Popen[bytes]:
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        raise SystemExit("prometheus-pushgateway is not installed (Debian package)")
    flags = [] if check else ["--push.disable-consistency-check"]
    process = subprocess.Popen(
        [
            binary,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={persistence}",
            "--persistence.interval=1h",
            "--log.level=warn",
            *flags,
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "pushgateway.log").open("ab"),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/-/ready")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("pushgateway did not become ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the Pushgateway writes its persistence file on the way out."""
    stop_process(process, timeout=60)


def wrk_put(url: str, requests: list[tuple[str, str]], duration: float) -> WrkResult:
    with tempfile.TemporaryDirectory(prefix="cm-bench-pgw-") as tmp:
        data = Path(tmp) / "requests.txt"
        data.write_text("".join(f"{p}\t{b.replace(chr(10), chr(1))}\n" for p, b in requests))
        script = Path(tmp) / "put.lua"
        script.write_text(PUT_LUA % {"requests": data})
        return run_wrk_script(url, script, duration=duration, request_timeout="60s", grace=120)


def scrapes(port: int, count: int, headers: dict[str, str]) -> tuple[list[float], int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    timed_get(conn, "/metrics", headers)
    samples, size = [], 0
    for _ in range(count):
        seconds, status, size = timed_get(conn, "/metrics", headers)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        samples.append(seconds)
    return samples, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--scrapes", type=int, default=5, help="per series (each takes seconds)")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    rng = random.Random(11)
    now = time.time()
    rows: dict[str, dict[str, str]] = {}
    with jobs_tree(args.jobs) as (jobs_dir, jobs):
        labels = job_labels(jobs_dir)
        groups = [(group_path(j), group_body(j, labels[j.name], rng, now)) for j in jobs]

        # -- Pushgateway -------------------------------------------------------------------
        # With its default consistency check every push re-checks the whole store, so
        # filling 10k groups one by one is quadratic (hours). Fill with the check off,
        # persist, and restart with the check on from that file, then measure both modes.
        workdir = Path(tempfile.mkdtemp(prefix="cm-bench-pgw-"))
        persistence = workdir / "pushgateway.data"
        try:
            for check in (False, True):
                mode = "pushgateway" if check else "pushgateway-nocheck"
                port = free_port()
                process = start_pushgateway(port, workdir, check=check, persistence=persistence)
                try:
                    row: dict[str, str] = {}
                    if not check:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                        start = time.perf_counter()
                        for path, body in groups:
                            conn.request(
                                "PUT", path, body=body, headers={"Content-Type": "text/plain"}
                            )
                            response = conn.getresponse()
                            reply = response.read()
                            if response.status not in (200, 202):
                                raise RuntimeError(f"push: {response.status} {reply[:300]!r}")
                        fill = time.perf_counter() - start
                        conn.close()
                        row["fill"] = f"{len(groups) / fill:.0f} pushes/s ({fill:.1f} s)"
                        time.sleep(1)  # pushes are applied asynchronously
                    else:
                        row["fill"] = "quadratic: each push checks every group (not run)"
                    plain, plain_size = scrapes(port, args.scrapes, {})
                    packed, packed_size = scrapes(port, args.scrapes, GZIP)
                    row["plain"] = spread_ms(plain) + f" ({plain_size / 1e6:.1f} MB)"
                    row["gzip"] = spread_ms(packed) + f" ({packed_size / 1e6:.2f} MB)"
                    pushes = wrk_put(f"http://127.0.0.1:{port}", groups[:2000], args.duration)
                    if pushes.status_errors or pushes.socket_errors:
                        raise RuntimeError(f"pushgateway errors:\n{pushes.raw}")
                    row["rate"] = f"{pushes.rate:.1f} pushes/s"
                    rows[mode] = row
                finally:
                    stop(process)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

        # -- cronmetrics -------------------------------------------------------------------
        with serve(jobs_dir, args.jobs) as server:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            bodies = [json.dumps(result_body(job, rng)).encode() for job in jobs]
            start = time.perf_counter()
            for body in bodies:
                status, reply = post_json(conn, "/api/job-result", body)
                if status != 200:
                    raise RuntimeError(f"submit failed: {status} {reply[:300]!r}")
            fill = time.perf_counter() - start
            conn.close()
            report_all(server.port, jobs)
            settle(server)
            plain, plain_size = scrapes(server.port, args.scrapes, {})
            packed, packed_size = scrapes(server.port, args.scrapes, GZIP)
            text = [b.decode() for b in bodies[:2000]]
            pushes = run_wrk(server.url, "/api/job-result", text, duration=args.duration)
            if pushes.status_errors or pushes.socket_errors:
                raise RuntimeError(f"cronmetrics errors:\n{pushes.raw}")
            rows["cronmetrics"] = {
                "fill": f"{len(bodies) / fill:.0f} results/s ({fill:.1f} s for {len(bodies)})",
                "rate": f"{pushes.rate:.0f} results/s",
                "plain": spread_ms(plain) + f" ({plain_size / 1e6:.1f} MB)",
                "gzip": spread_ms(packed) + f" ({packed_size / 1e6:.2f} MB)",
            }

    print(
        f"{args.jobs} jobs, one group (Pushgateway) / one job (cronmetrics) each "
        "(pushgateway-nocheck = --push.disable-consistency-check):"
    )
    for key, what in (
        ("fill", "fill all, 1 client"),
        ("rate", "push rate, wrk 16 conns"),
        ("plain", "/metrics plain"),
        ("gzip", "/metrics gzip"),
    ):
        for index, (mode, row) in enumerate(rows.items()):
            print(f"  {what if index == 0 else '':24s} {mode:20s} {row[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
