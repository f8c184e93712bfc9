"""Issue 7: what the client tools cost a cron job.

* ``cronmetrics run -- true``: wall time of the wrapper around a command that does nothing
  (interpreter start-up, start report in the background, final report), against a live
  server and against a closed port (the worst case: retries until --report-timeout).
* ``cronmetrics ingest``: results per second for a JSONL backlog.
* ``--overhead`` (issue 12): in one run, interleaved, what ``cronmetrics run --job J --
  true`` costs in wall time beyond ``true`` itself, against the two ``curl`` calls it
  replaces (``/api/ping/J/start``, then ``/api/ping/J/0``), and the wrapper's peak RSS
  (``wait4``'s ``ru_maxrss``). Targets: overhead <= 3x the two curls, peak RSS <= 25 MB.
  Three ways to run it: the console script of this checkout's editable install (what a
  developer has: its ``site`` loads setuptools' editable finder), the console script of a
  wheel installed in a fresh venv (what ``pip install cronmetrics`` gives a cron host), and
  the zipapp under ``python3 -I -S``. ``--baseline DIR`` adds the same for another checkout
  (``git worktree add /tmp/before <commit>``): before and after in one run.

Usage: ``python3 benchmarks/bench_client.py [--runs 5] [--lines 20000]``
       ``python3 benchmarks/bench_client.py --overhead [--runs 21] [--baseline DIR]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
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


def measured(cmds: list[list[str]]) -> tuple[float, int]:
    """Wall seconds for running ``cmds`` one after the other, and the largest peak RSS
    (KiB) among them, each from ``wait4``."""
    started = time.perf_counter()
    peak = 0
    for cmd in cmds:
        # posix_spawn: a forked copy of this interpreter would count in the child's maxrss
        pid = os.posix_spawn(cmd[0], cmd, dict(os.environ), file_actions=_QUIET)
        _, status, usage = os.wait4(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{cmd} exited {os.waitstatus_to_exitcode(status)}")
        peak = max(peak, usage.ru_maxrss)
    return time.perf_counter() - started, peak


_QUIET = [
    (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
    (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
]


def peak_rss(cmd: list[str]) -> int:
    """Peak RSS (KiB) of ``cmd`` by ``/usr/bin/time -f %M``: a child forked (or vforked)
    from this interpreter would report this interpreter's size instead."""
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", out.name, *cmd],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        return int(out.read().split()[-1])


def installed(tree: Path, where: Path) -> Path:
    """The ``cronmetrics`` console script of ``tree`` built as a wheel and installed in a
    fresh venv at ``where`` (no dependencies: the cron host commands need none)."""
    wheels = where / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         "-w", str(wheels), str(tree)],
        check=True, capture_output=True,
    )  # fmt: skip
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    (wheel,) = wheels.glob("cronmetrics-*.whl")
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    return venv / "bin" / "cronmetrics"


def zipapp_of(tree: Path, target: Path) -> Path:
    """The one-file client of ``tree``, built by that tree's own code."""
    build = (
        f"import sys; sys.path.insert(0, {str(tree)!r}); from cronmetrics.client import bundle;"
        " sys.stdout.buffer.write(bundle.bundle_bytes())"
    )
    data = subprocess.run(
        [sys.executable, "-I", "-S", "-c", build], check=True, capture_output=True
    )
    target.write_bytes(data.stdout)
    return target


def overhead(runs: int, baseline: Path | None) -> None:
    curl = shutil.which("curl")
    if curl is None or not Path("/usr/bin/time").exists():
        raise SystemExit("curl and /usr/bin/time are needed for the comparison")
    # an installed package has its .pyc files; make sure this checkout does too
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "cronmetrics")], check=True
    )
    console = Path(sys.executable).with_name("cronmetrics")
    python3 = shutil.which("python3") or sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "jobs.d", root / "jobs.d")
        trees = {"": REPO, "before: ": baseline} if baseline is not None else {"": REPO}
        scripts = {label: installed(tree, root / f"i{i}") for i, (label, tree) in
                   enumerate(trees.items())}  # fmt: skip
        pyzs = {label: zipapp_of(tree, root / f"c{i}.pyz") for i, (label, tree) in
                enumerate(trees.items())}  # fmt: skip
        with live_server(root / "jobs.d", root / "state") as live:
            job = "home_rsync"
            ping = f"{live.url}/api/ping/{job}"
            wrapped = ["run", "--url", live.url, "--job", job, "--", "true"]
            cases: dict[str, list[list[str]]] = {
                "true": [[shutil.which("true") or "/bin/true"]],
                "two curls": [
                    [curl, "-fsS", "-m", "10", "-o", "/dev/null", "-X", "POST", f"{ping}/start"],
                    [curl, "-fsS", "-m", "10", "-o", "/dev/null", "-X", "POST", f"{ping}/0"],
                ],
                "run (editable)": [[str(console), *wrapped]],
            }
            for label in trees:
                cases[f"{label}run (wheel)"] = [[str(scripts[label]), *wrapped]]
                cases[f"{label}zipapp (-I -S)"] = [
                    [python3, "-I", "-S", str(pyzs[label]), *wrapped]
                ]
            times: dict[str, list[float]] = {name: [] for name in cases}
            peaks: dict[str, int] = dict.fromkeys(cases, 0)
            for cmds in cases.values():  # warm-up: page cache, server code paths
                measured(cmds)
            for _ in range(runs):
                for name, cmds in cases.items():
                    wall, _ = measured(cmds)
                    times[name].append(wall)
            for name, cmds in cases.items():
                peaks[name] = max(peak_rss(cmd) for cmd in cmds)
    med = {name: statistics.median(values) for name, values in times.items()}
    base = med["true"]
    curls = med["two curls"] - base
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{runs} interleaved runs each, medians; overhead = wall - wall(true); load {load}")
    for name in cases:
        extra = med[name] - base
        ratio = f"{extra / curls:.2f}x the two curls" if name not in ("true", "two curls") else ""
        print(
            f"{name:>24}: wall {med[name] * 1000:7.1f} ms, overhead {extra * 1000:7.1f} ms,"
            f" peak RSS {peaks[name] / 1024:5.1f} MB  {ratio}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--overhead", action="store_true", help="issue 12: run vs two curls")
    parser.add_argument("--baseline", type=Path, help="--overhead: also measure this checkout")
    args = parser.parse_args()
    if args.overhead:
        overhead(args.runs, args.baseline)
        return
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
