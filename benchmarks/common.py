"""Shared helpers for the issue-3 speed benchmarks (see benchmarks/README.md).

Every benchmark talks to a real ``cronmetrics serve --no-auth`` (gunicorn, one worker,
gthread) on a free 127.0.0.1 port, started by :mod:`cronmetrics.testing` like the tests
start it; nothing leaves the loopback interface. Job files are generated into a temporary directory.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cronmetrics.testing import ServerProcess, start_server, wait_for
from cronmetrics.testing import free_port as free_port  # for the benchmarks

REPO = Path(__file__).resolve().parent.parent
TEAMS = ["backup", "billing", "platform", "data", "search", "mail", "infra", "security"]
ENVS = ["prod", "stage", "dev"]
SCHEDULES = ["*/5 * * * *", "30 2 * * *", "0 */4 * * *", "15 6 * * 1-5", "@hourly"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York"]


def machine() -> str:
    """``2 x AMD EPYC, Python 3.11.2, Linux 6.1`` — the row's machine column."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} x {model}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release().split('-')[0]} (load average {loadavg()})"
    )


@dataclass(frozen=True)
class Job:
    name: str
    host: str | None

    @property
    def id(self) -> str:
        return f"{self.name}@{self.host}" if self.host else self.name


def job_yaml(index: int, rng: random.Random) -> tuple[Job, str]:
    """A realistic job file: half with a host, mixed threshold/cron, 2-3 labels."""
    team = TEAMS[index % len(TEAMS)]
    host = f"{team}{index % 40}.example.internal" if index % 2 == 0 else None
    job = Job(f"{team}_job_{index}", host)
    lines = [f"job_name: {job.name}"]
    if host:
        lines.append(f"host: {host}")
    if index % 3 == 0:
        lines += [
            f'schedule: "{SCHEDULES[index % len(SCHEDULES)]}"',
            f"timezone: {ZONES[index % len(ZONES)]}",
            "grace: 600",
        ]
    else:
        lines.append(f"automatic_failure_threshold: {rng.choice([3600, 7200, 90000])}")
    if index % 4 == 0:
        lines.append("max_runtime: 1800")
    lines += ["labels:", f"  env: {ENVS[index % 3]}", f"  team: {team}"]
    if index % 5 == 0:
        lines.append('  tier: "1"')
    lines.append(f"description: generated benchmark job {index}")
    return job, "\n".join(lines) + "\n"


def generate_jobs(root: Path, count: int, *, seed: int = 42) -> list[Job]:
    """Write ``count`` job files under ``root`` (team/groupN subfolders); return the jobs."""
    rng = random.Random(seed)
    jobs = []
    for index in range(count):
        job, text = job_yaml(index, rng)
        folder = root / TEAMS[index % len(TEAMS)] / f"group{index % 50}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"job_{index}.yaml").write_text(text, encoding="utf-8")
        jobs.append(job)
    return jobs


def result_body(job: Job, rng: random.Random | None = None) -> dict[str, object]:
    """A typical single result (success with duration and exit code)."""
    rng = rng or random.Random(0)
    body: dict[str, object] = {
        "job_name": job.name,
        "status": "success",
        "duration": round(rng.uniform(1, 600), 2),
        "exit_code": 0,
    }
    if job.host:
        body["host"] = job.host
    return body


@dataclass
class Server(ServerProcess):
    """A running ``cronmetrics serve`` and when it got ready (seconds after its start)."""

    ready_after: float = 0.0
    quiet_after: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)


def _process_tree(pid: int) -> Iterator[list[Path]]:
    """The threads (``/proc/<pid>/task/<tid>``) of ``pid`` and of each process below it,
    one list per process; a process gone meanwhile is left out."""
    pending = [pid]
    while pending:
        try:
            tasks = list(Path(f"/proc/{pending.pop()}/task").iterdir())
            for task in tasks:
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
        yield tasks


def process_tree_cpu(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and its children (gunicorn master + worker).

    On a shared machine wall-clock rates move with other people's load; CPU seconds per
    request do not, so the scripts print both.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for tasks in _process_tree(pid):
        with contextlib.suppress(OSError, IndexError):  # the process's own totals
            fields = (tasks[0].parent.parent / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def process_tree_switches(pid: int) -> int:
    """Context switches (voluntary and not) of every thread of ``pid`` and its children
    so far: in a server bound by the GIL, each wait for it is one, and they cost more
    CPU than the Python code around them (docs/performance.md)."""
    total = 0
    for tasks in _process_tree(pid):
        for task in tasks:
            with contextlib.suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
    return total


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "?"


def deep_checks(server: ServerProcess) -> dict[str, Any] | None:
    """The checks of ``/health/deep`` when it answers 200 (ready), else None."""
    with contextlib.suppress(OSError, http.client.HTTPException, KeyError, ValueError):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.request("GET", "/health/deep")
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status == 200:
            checks: dict[str, Any] = json.loads(body)["checks"]
            return checks
    return None


def loaded(server: ServerProcess, jobs: int) -> bool:
    """Ready with ``jobs`` jobs loaded."""
    checks = deep_checks(server)
    return checks is not None and checks["reload"]["detail"] == f"{jobs} jobs loaded"


def rescanned(server: ServerProcess) -> bool:
    """The watcher's catch-up rescan after start is done.

    ``/health/deep`` is 200 as soon as jobs.d is loaded, but the watcher then rescans the
    directory once to catch changes made before its watch was in place; with 100k files
    that takes a while and would eat into whatever is measured first.
    """
    checks = deep_checks(server)
    if checks is None:
        return False
    if "watcher" not in checks:
        return True
    found = re.search(r"(\d+) reloads", checks["watcher"]["detail"])
    return found is not None and int(found.group(1)) >= 1


def settle(server: ServerProcess, timeout: float = 120) -> float:
    """Wait until a state write newer than now is on disk; return the seconds waited.

    The first write after ``report_all`` touched every job writes every job's state;
    measuring through it would charge a one-off warm-up to the steady-state rate.
    """
    import datetime as dt

    begin = time.time()

    def written() -> bool:
        checks = deep_checks(server)
        if checks is None:
            return False
        if "store" not in checks:
            return True
        found = re.search(r"last written (\S+)$", checks["store"]["detail"])
        if found is None:
            return False
        at = dt.datetime.fromisoformat(found.group(1))
        return at.timestamp() >= begin

    wait_for(written, "a state write", timeout=timeout, interval=0.2, process=server.process)
    return time.time() - begin


@contextlib.contextmanager
def serve(
    jobs_dir: Path,
    jobs: int,
    *,
    threads: int = 8,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 300,
    quiet: bool = True,
) -> Iterator[Server]:
    """Run ``cronmetrics serve --no-auth`` on a free loopback port until the block ends;
    ready when ``jobs`` are loaded (and, with ``quiet``, the watcher's rescan is done)."""
    tmp = Path(tempfile.mkdtemp(prefix="cm-bench-state-"))
    full_env = {"CRONMETRICS_LOG__LEVEL": "warning", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    base = start_server(
        jobs_dir,
        tmp / "state",
        args=["--no-auth", "--threads", str(threads), *extra_args],
        env=full_env,
        log_path=tmp / "server.log",
        cwd=REPO,
    )
    server = Server(**{f.name: getattr(base, f.name) for f in fields(ServerProcess)})
    try:
        what = f"{jobs} jobs loaded"
        wait_for(lambda: loaded(server, jobs), what, timeout=timeout, interval=0.02,
                 process=server.process, log=server.log)  # fmt: skip
        server.ready_after = time.monotonic() - server.started
        if quiet:
            wait_for(lambda: rescanned(server), "the watcher's rescan", timeout=timeout,
                     interval=0.1, process=server.process, log=server.log)  # fmt: skip
        server.quiet_after = time.monotonic() - server.started
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def jobs_tree(count: int) -> Iterator[tuple[Path, list[Job]]]:
    """A temporary jobs.d with ``count`` generated jobs."""
    root = Path(tempfile.mkdtemp(prefix="cm-bench-jobs-"))
    try:
        jobs = generate_jobs(root / "jobs.d", count)
        yield root / "jobs.d", jobs
    finally:
        shutil.rmtree(root, ignore_errors=True)


def post_json(conn: http.client.HTTPConnection, path: str, payload: bytes) -> tuple[int, bytes]:
    conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def report_all(port: int, jobs: Sequence[Job], *, batch: int = 1000) -> None:
    """Submit one result for every job (so all 10k are 'reporting'), in batches."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    rng = random.Random(1)
    for start in range(0, len(jobs), batch):
        chunk = [result_body(job, rng) for job in jobs[start : start + batch]]
        status, body = post_json(conn, "/api/job-result", json.dumps(chunk).encode())
        if status != 200:
            raise RuntimeError(f"batch submit failed: {status} {body[:300]!r}")
    conn.close()


# -- wrk -----------------------------------------------------------------------------------

WRK_LUA = """
-- POST one JSON result per request, cycling through the bodies in bodies.txt
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local counter = 0
request = function()
  counter = counter + 1
  local body = bodies[(counter %% #bodies) + 1]
  return wrk.format(nil, "%(path)s", nil, body)
end
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("STATUS_ERRORS %%d\\n", errors.status))
  local socket = errors.connect + errors.read + errors.write + errors.timeout
  io.write(string.format("SOCKET_ERRORS %%d\\n", socket))
end
"""


@dataclass
class WrkResult:
    rate: float
    requests: int
    status_errors: int
    socket_errors: int
    latency_p50_ms: float | None
    raw: str


def _latency_ms(text: str, percentile: str) -> float | None:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not match:
        return None
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(
    url: str,
    path: str,
    bodies: Sequence[str],
    *,
    connections: int = 16,
    threads: int = 2,
    duration: float = 10,
) -> WrkResult:
    """``wrk`` with keep-alive, POSTing the given JSON bodies round-robin."""
    with tempfile.TemporaryDirectory(prefix="cm-bench-wrk-") as tmp:
        bodies_path = Path(tmp) / "bodies.txt"
        bodies_path.write_text("\n".join(bodies) + "\n")
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_LUA % {"bodies": bodies_path, "path": path})
        return run_wrk_script(
            url, script, connections=connections, threads=threads, duration=duration
        )


def wrk_submissions(
    server: ServerProcess, bodies: Sequence[str], duration: float
) -> tuple[WrkResult, float]:
    """A 2 s warm-up, then ``duration`` seconds of single submissions: (the run, the
    server's CPU seconds during it); errors of any kind end the benchmark."""
    run_wrk(server.url, "/api/job-result", bodies, duration=2)
    cpu0 = process_tree_cpu(server.process.pid)
    result = run_wrk(server.url, "/api/job-result", bodies, duration=duration)
    cpu = process_tree_cpu(server.process.pid) - cpu0
    if result.status_errors or result.socket_errors:
        raise RuntimeError(f"cronmetrics errors:\n{result.raw}\n{server.log()[-2000:]}")
    return result, cpu


def run_wrk_script(
    url: str,
    script: Path,
    *,
    connections: int = 16,
    threads: int = 2,
    duration: float = 10,
    request_timeout: str | None = None,
    grace: float = 60,
) -> WrkResult:
    """``wrk`` with a Lua ``script`` whose ``done`` prints ``STATUS_ERRORS`` and
    ``SOCKET_ERRORS`` lines (see :data:`WRK_LUA`); ``grace`` seconds beyond ``duration``
    before giving up on it."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    timeout = ["--timeout", request_timeout] if request_timeout else []
    out = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            *timeout,
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + grace,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    status_errors = int(re.search(r"STATUS_ERRORS (\d+)", out).group(1))  # type: ignore[union-attr]
    socket_errors = int(re.search(r"SOCKET_ERRORS (\d+)", out).group(1))  # type: ignore[union-attr]
    return WrkResult(rate, requests, status_errors, socket_errors, _latency_ms(out, "50"), out)


# -- timing --------------------------------------------------------------------------------


def timed_get(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
) -> tuple[float, int, int]:
    """(seconds, status, body bytes) for one GET on a keep-alive connection.

    The body is read into a reused buffer: allocating a fresh 140 MB ``bytes`` per scrape
    (page faults) would otherwise be a large part of what gets timed at 100k jobs.
    """
    global _BUFFER
    start = time.perf_counter()
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    size = 0
    while True:
        if size == len(_BUFFER):
            _BUFFER = _BUFFER + bytearray(max(1 << 20, len(_BUFFER)))
        got = response.readinto(memoryview(_BUFFER)[size:])
        if not got:
            break
        size += got
    return time.perf_counter() - start, response.status, size


_BUFFER = bytearray(1 << 20)


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def pct_ms(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def spread_ms(samples: Sequence[float]) -> str:
    """Median and p90 of timings, for one line of a report."""
    return f"median {median_ms(samples):7.1f} ms  p90 {pct_ms(samples, 0.9):7.1f} ms"


def verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"
