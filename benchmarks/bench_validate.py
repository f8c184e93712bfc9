"""Time ``cronmetrics validate`` on 10,000 generated job files.

Generates realistic job files (threshold and schedule kinds, labels, team subfolders) in a
temporary directory, runs the real console script as a subprocess (median of several runs),
and times ruamel.yaml round-trip parsing of the same files for comparison.

    python3 benchmarks/bench_validate.py [--files 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEAMS = ["backup", "billing", "platform", "data", "search", "mail", "infra", "security"]
ENVS = ["prod", "stage", "dev"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
SCHEDULES = [
    "*/5 * * * *",
    "30 2 * * *",
    "0 */4 * * *",
    "15 6 * * MON-FRI",
    "0 3 * * 0",
    "0 0 1 * *",
    "@daily",
    "@hourly",
    "45 23 * * 7",
    "0 8-18/2 * * 1-5",
]


def job_text(index: int, rng: random.Random) -> str:
    team = TEAMS[index % len(TEAMS)]
    lines = [f"# generated job {index} for team {team}", f"job_name: {team}_job_{index}"]
    if rng.random() < 0.6:
        lines.append(f"host: {team}{rng.randint(1, 40)}.example.internal")
    kind = rng.random()
    if kind < 0.4:
        lines.append(f"automatic_failure_threshold: {rng.choice([600, 3600, 7200, 90000])}")
    else:
        lines.append(f'schedule: "{rng.choice(SCHEDULES)}"')
        lines.append(f"timezone: {rng.choice(ZONES)}")
        lines.append(f"grace: {rng.choice([60, 300, 900, 3600])}")
        if kind > 0.8:
            lines.append("automatic_failure_threshold: 172800")
    if rng.random() < 0.5:
        lines.append(f"max_runtime: {rng.choice([300, 1800, 14400])}")
    if rng.random() < 0.5:
        lines.append(f"labels: {{env: {rng.choice(ENVS)}, team: {team}}}")
    else:
        lines += ["labels:", f"  env: {rng.choice(ENVS)}", f"  team: {team}", '  tier: "1"']
    status = rng.random()
    if status < 0.05:
        lines += ["status: maintenance", "maintenance_until: 2030-01-01T00:00:00Z"]
    elif status < 0.08:
        lines.append("status: paused")
    lines.append(f"description: Nightly {team} task number {index}, owned by the {team} team")
    return "\n".join(lines) + "\n"


def generate(root: Path, count: int) -> list[Path]:
    rng = random.Random(42)
    paths = []
    for index in range(count):
        team = TEAMS[index % len(TEAMS)]
        folder = root / team / f"group{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".yml" if index % 7 == 0 else ".yaml"
        path = folder / f"job_{index}{suffix}"
        path.write_text(job_text(index, rng), encoding="utf-8")
        paths.append(path)
    return paths


def time_validate(exe: str, root: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([exe, "validate", str(root)], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            sys.exit(f"validate failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr}")
    return times


def time_ruamel(paths: list[Path]) -> float:
    from ruamel.yaml import YAML

    rt = YAML(typ="rt")
    start = time.perf_counter()
    for path in paths:
        rt.load(path.read_text(encoding="utf-8"))
    return time.perf_counter() - start


def time_load_paths(root: Path) -> tuple[float, float]:
    """In-process ``load_paths`` on one core and with the process pool."""
    from cronmetrics.jobs import repository

    pairs = [(p, str(p)) for p in repository.iter_job_files(root)]
    start = time.perf_counter()
    serial = repository.load_paths(pairs)
    serial_s = time.perf_counter() - start
    start = time.perf_counter()
    parallel = repository.load_paths(pairs, parallel=True)
    parallel_s = time.perf_counter() - start
    assert len(serial.jobs) == len(parallel.jobs) == len(pairs)
    return serial_s, parallel_s


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    exe = shutil.which("cronmetrics")
    if exe is None:
        sys.exit("the cronmetrics console script is not installed (pip install -e .)")
    with tempfile.TemporaryDirectory(prefix="cronmetrics-bench-") as tmp:
        root = Path(tmp) / "jobs.d"
        paths = generate(root, args.files)
        times = time_validate(exe, root, args.runs)
        serial, parallel = time_load_paths(root)
        ruamel = time_ruamel(paths)
    median = statistics.median(times)
    machine = f"nproc={os.cpu_count()}, {cpu_model()}, Python {platform.python_version()}"
    print(
        f"validate {args.files} files: median {median:.2f} s over {args.runs} runs "
        f"(runs: {', '.join(f'{t:.2f}' for t in times)}); "
        f"ruamel round-trip parse of the same files: {ruamel:.2f} s "
        f"(ratio {ruamel / median:.1f}x the whole validate); "
        f"in-process load_paths: {serial:.2f} s on one core, {parallel:.2f} s with the pool; "
        f"{machine}"
    )


if __name__ == "__main__":
    main()
