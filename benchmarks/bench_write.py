"""One periodic write of the embedded engine, this tree against another, alternating.

    python benchmarks/bench_write.py [--compare REV] [--rounds 3] [--writes 12]

bench_storage.py measures two trees one after the other; on a shared machine whose
speed drifts by a third within minutes that is not a comparison. This builds one
state.db of 10,000 jobs x 100 results, then runs ``--rounds`` times, alternating the
trees, a fresh process that loads a copy of it and makes ``--writes`` periodic writes of
5,000 results each (as bench_storage.py does: the heap settled first, as in a served
worker) and prints the median and worst write of each process, the first (after the
load) left out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_storage import REPO, T0, build, record_interval, worktree


def writes(state_dir: Path, count: int) -> list[float]:
    """Seconds of each of ``count`` writes of the tree on PYTHONPATH."""
    from cronmetrics.storage.persistence import open_store

    store, _ = open_store(state_dir, 100, durable=False, now=T0)
    try:  # what a served worker does once loaded, as bench_storage.py's writes have it
        from cronmetrics.web.server import settle_heap
    except ImportError:  # a tree from before it
        pass
    else:
        settle_heap()
    seconds = []
    for n in range(count):
        record_interval(store, 10_000, n)
        started = time.perf_counter()
        store.flush(T0)
        seconds.append(time.perf_counter() - started)
    return seconds


def run(root: Path, built: Path, count: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        shutil.copytree(built, state)
        env = {**os.environ, "PYTHONPATH": str(root)}
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(state), "--writes", str(count)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return list(json.loads(out.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compare", metavar="REV", default="HEAD~1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=12)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(writes(args.child, args.writes)))
        return
    with tempfile.TemporaryDirectory() as tmp, worktree(args.compare) as old:
        built = Path(tmp) / "built"
        built.mkdir()
        build(built, 10_000, 100)
        medians: dict[str, list[float]] = {args.compare: [], "this tree": []}
        for _ in range(args.rounds):
            for name, root in ((args.compare, old), ("this tree", REPO)):
                seconds = run(root, built, args.writes + 1)[1:]
                medians[name].append(statistics.median(seconds))
                print(f"{name}: median {statistics.median(seconds) * 1e3:.0f} ms, "
                      f"worst {max(seconds) * 1e3:.0f} ms", flush=True)  # fmt: skip
    ratios = [b / a for a, b in zip(medians[args.compare], medians["this tree"], strict=True)]
    print(f"this tree / {args.compare}, median write, per round: "
          + ", ".join(f"{r:.2f}" for r in ratios))  # fmt: skip


if __name__ == "__main__":
    main()
