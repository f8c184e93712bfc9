"""The APScheduler wrapper: deadlines fire on time, re-arm on changes, errors don't kill it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from cronmetrics.jobs.model import JobDefinition
from cronmetrics.monitor import Monitor
from cronmetrics.scheduler import Scheduler

WAIT = 10.0


def job(name: str, threshold: int) -> JobDefinition:
    return JobDefinition.model_validate(
        {"job_name": name, "automatic_failure_threshold": threshold}
    )


class Recorder:
    """Wraps ``Monitor.tick`` to signal, from the scheduler thread, what each tick changed."""

    def __init__(self, monitor: Monitor) -> None:
        self.changed: list[str] = []
        self.event = threading.Event()
        original = monitor.tick

        def tick(now: float) -> list[str]:
            result = original(now)
            if result:
                self.changed.extend(result)
                self.event.set()
            return result

        monitor.tick = tick  # type: ignore[method-assign]


@pytest.fixture
def monitor() -> Monitor:
    return Monitor()


@pytest.fixture
def scheduler(monitor: Monitor) -> Iterator[Scheduler]:
    sched = Scheduler(monitor, time.time)
    yield sched
    sched.shutdown()


def test_deadline_fires_without_anyone_asking(monitor: Monitor, scheduler: Scheduler) -> None:
    monitor.apply_definitions({"quick": job("quick", 1), "slow": job("slow", 3600)}, time.time())
    recorder = Recorder(monitor)
    scheduler.start()
    assert scheduler.alive
    assert recorder.event.wait(WAIT)
    assert recorder.changed == ["quick"]
    assert monitor.view("quick").evaluation.reason == "never reported"
    assert monitor.view("slow").evaluation.reason == "pending"


def test_an_earlier_deadline_after_a_reload_re_arms_the_timer(
    monitor: Monitor, scheduler: Scheduler
) -> None:
    monitor.apply_definitions({"j": job("j", 3600)}, time.time())
    recorder = Recorder(monitor)
    scheduler.start()
    monitor.apply_definitions({"j": job("j", 3600), "k": job("k", 1)}, time.time())
    assert recorder.event.wait(WAIT)
    assert recorder.changed == ["k"]


def test_periodic_task_survives_its_own_errors(scheduler: Scheduler) -> None:
    calls: list[int] = []
    done = threading.Event()

    def task() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first run fails")
        done.set()

    scheduler.every(0.1, task, "flaky")
    scheduler.start()
    assert done.wait(WAIT)
    assert scheduler.alive


def test_shutdown_stops_it(monitor: Monitor) -> None:
    sched = Scheduler(monitor, time.time)
    sched.start()
    sched.shutdown()
    assert not sched.alive
    sched.shutdown()  # twice is fine
