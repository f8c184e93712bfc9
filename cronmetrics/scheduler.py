"""Background timing with APScheduler 3: deadlines, periodic work.

The deadline job is a one-shot date trigger armed at the monitor's earliest pending
change (a deadline, a timeout, the end of maintenance); after it fires it re-arms for the
next one, so a job goes "missed deadline" on time without any scan over all jobs.
Submissions that move the earliest change earlier re-arm it (see :meth:`poke`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from cronmetrics.logs import get_logger
from cronmetrics.monitor import Monitor

__all__ = ["Scheduler"]

log = get_logger("scheduler")
_DEADLINE_JOB = "deadlines"


class Scheduler:
    def __init__(self, monitor: Monitor, clock: Callable[[], float]) -> None:
        self.monitor = monitor
        self.clock = clock
        self._sched = BackgroundScheduler(
            timezone=dt.UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._armed: float | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self.last_tick: float | None = None

    def every(self, seconds: float, func: Callable[[], object], name: str) -> None:
        """Run ``func`` every ``seconds`` (errors are logged, never kill the scheduler)."""

        def run() -> None:
            try:
                func()
            except Exception:
                log.exception("periodic task failed", extra={"task": name})

        self._sched.add_job(run, "interval", seconds=seconds, id=name, name=name)

    def start(self) -> None:
        self.every(30, self.tick, "deadline-sweep")  # a safety net; the armed job does the work
        self._sched.start()
        self.monitor.subscribe(self.poke)
        self._arm()

    def shutdown(self) -> None:
        """Stop without racing the scheduler thread.

        APScheduler 3 marks itself stopped before it takes its job-store lock, so a
        one-shot job being retired by the scheduler thread at that moment raises
        ``JobLookupError`` there and kills the thread. Pausing first and removing every
        job (which waits for the lock) leaves nothing to race.
        """
        with self._lock:
            self._stopping = True
        if self._sched.running:
            self._sched.pause()
            self._sched.remove_all_jobs()
            self._sched.shutdown(wait=False)

    @property
    def alive(self) -> bool:
        return bool(self._sched.running)

    def tick(self) -> None:
        now = self.clock()
        self.last_tick = now
        changed = self.monitor.tick(now)
        if changed:
            log.info("deadline passed", extra={"jobs": len(changed), "sample": changed[:5]})
        self._arm()

    def poke(self) -> None:
        """Re-arm if the earliest pending change moved earlier than the armed one."""
        when = self.monitor.next_wakeup()
        armed = self._armed
        if when is not None and (armed is None or when < armed):
            self._arm()

    def _arm(self) -> None:
        with self._lock:
            when = self.monitor.next_wakeup()
            if when == self._armed or not self._sched.running or self._stopping:
                return
            self._armed = when
            with contextlib.suppress(JobLookupError):
                self._sched.remove_job(_DEADLINE_JOB)
            if when is not None:
                # APScheduler waits on the wall clock; ``when`` is on our clock (a fake one
                # in tests), so arm after the same delay rather than at the same instant.
                delay = max(0.0, when - self.clock())
                run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
                self._sched.add_job(self._fire, "date", run_date=run_at, id=_DEADLINE_JOB)

    def _fire(self) -> None:
        with self._lock:
            self._armed = None
        try:
            self.tick()
        except Exception:
            log.exception("deadline tick failed")
