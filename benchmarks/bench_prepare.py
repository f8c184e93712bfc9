"""CPU cost of Exposition.prepare (the scheduler's 0.25 s warm-up of /metrics bodies).

In process, no server: 10,000 jobs, 200 results/s for 10 simulated seconds, prepare
every 0.25 s with both the plain and the gzip body wanted (the worst case).

    python3 benchmarks/bench_prepare.py
"""

from __future__ import annotations

import random
import time

from cronmetrics.jobs.model import JobDefinition, ResultIn
from cronmetrics.monitor import Monitor
from cronmetrics.web.exposition import Exposition


def main() -> None:
    random.seed(1)
    monitor = Monitor()
    defs = [
        JobDefinition(
            job_name=f"job_{i}",
            host=f"host{i % 50}",
            automatic_failure_threshold=3600,
            labels={"env": "prod", "team": f"t{i % 7}"},
        )
        for i in range(10_000)
    ]
    monitor.apply_definitions({d.id: d for d in defs}, 1000.0)
    monitor.submit(
        [ResultIn(job_name=d.job_name, host=d.host, status="success") for d in defs], 1010.0
    )
    expo = Exposition(monitor)
    expo.render(1020.0, gzip=True)
    expo.render(1020.0)
    now, cpu = 1020.0, 0.0
    for _ in range(40):
        now += 0.25
        for i in random.sample(range(10_000), 50):
            item = ResultIn(
                job_name=f"job_{i}", host=f"host{i % 50}", status="success", duration=i % 97
            )
            monitor.submit([item], now)
        start = time.process_time()
        expo.prepare(now)
        cpu += time.process_time() - start
    print(
        f"prepare CPU over 10 s at 200 results/s, plain+gzip wanted: "
        f"{cpu:.2f} s ({cpu * 10:.0f}% of a core)"
    )


if __name__ == "__main__":
    main()
