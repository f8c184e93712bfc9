"""Maintenance windows on the Redis engine: two replicas on one real redis-server see the
same windows (each one's every-second sync reads what the other wrote)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from liveserver import wait_for
from redisserver import RedisServer

from cronmetrics.jobs.model import JobDefinition
from cronmetrics.maintenance import Maintenance
from cronmetrics.monitor import Monitor
from cronmetrics.storage.redisstore import RedisStore

T0 = 1_767_571_200.0
JOBS = {
    "backup@db1": {"job_name": "backup", "host": "db1", "automatic_failure_threshold": 600},
    "sync@web1": {"job_name": "sync", "host": "web1", "automatic_failure_threshold": 600},
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def replicas(redis: RedisServer) -> Iterator[tuple[Maintenance, Maintenance, Clock]]:
    clock = Clock()
    stores = [RedisStore(redis.url, max_results_per_job=5) for _ in range(2)]
    services = []
    for store in stores:
        assert store.mirror.wait_loaded(10)
        monitor = Monitor(store)
        definitions = {k: JobDefinition.model_validate(v) for k, v in JOBS.items()}
        monitor.apply_definitions(definitions, clock())
        services.append(Maintenance(store, monitor, clock))
    yield services[0], services[1], clock
    for store in stores:
        store.close()


def test_a_window_made_on_one_replica_silences_the_job_on_the_other(
    replicas: tuple[Maintenance, Maintenance, Clock],
) -> None:
    a, b, _ = replicas
    window = a.create({"matchers": ["host=db1"], "duration": "2h"}, "oncall")
    assert a.monitor.evaluations["backup@db1"].value == -1
    assert b.sync() == ["backup@db1"]  # what b's scheduler does every second
    assert b.monitor.evaluations["backup@db1"].reason == "maintenance"
    assert b.monitor.evaluations["sync@web1"].value == 1
    assert b.get(window.id) == window

    b.end(window.id, "ops")  # ended on the other replica
    assert a.sync() == ["backup@db1"]
    assert a.monitor.evaluations["backup@db1"].value == 1
    assert a.get(window.id).ended_by == "ops"


def test_expired_windows_are_forgotten_after_keep_expired_and_deadlines_stay_counted_from_their_end(
    replicas: tuple[Maintenance, Maintenance, Clock],
) -> None:
    a, b, clock = replicas
    window = a.create({"matchers": ["job_name=backup"], "duration": 3600}, "oncall")
    clock.now = T0 + 3600 + a.keep_expired  # long after the end
    a.sync()
    assert a.records.get_record("maintenance", window.id) is None
    b.sync()
    assert b.monitor.windows == {}
    settled = wait_for(
        lambda: (
            (s := b.monitor.store.state("backup@db1")) is not None and s.active_since == T0 + 3600
        ),
        "the other replica to see active_since at the window's end",
        timeout=5,
    )
    assert settled
