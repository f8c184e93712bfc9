"""A reload of jobs.d that fails or runs too long is reported, never silent.

A reload reads every changed file of a directory anyone with merge rights can fill; a
stalled network filesystem can still make one hang. So each reload is timed against a
budget (``watch.reload_budget``): one that fails for any reason sets
``cronmetrics_config_last_reload_successful`` to 0 and is logged with its error; one
that overruns is logged and counted, and while one is running past the budget
``/health/deep`` fails, naming it: later rescans wait behind it, so it must not hide.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from cronmetrics.logs import get_logger
from cronmetrics.web.metrics import SelfMetrics

__all__ = ["ReloadGuard"]

log = get_logger("reload")


class ReloadGuard:
    def __init__(self, metrics: SelfMetrics, budget: float) -> None:
        self.metrics = metrics
        self.budget = budget
        self.started: float | None = None  # time.monotonic() of the reload running now
        self.last_duration: float | None = None
        self.error: str | None = None
        self.overruns = 0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Around one reload (inside the reload lock, so waiting for it is not timed)."""
        start = self.started = time.monotonic()
        try:
            yield
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.metrics.reload_ok.set(0)
            log.exception("reload of the jobs directory failed", extra={"error": self.error})
            raise
        else:
            self.error = None
        finally:
            took = time.monotonic() - start
            self.started = None
            self.last_duration = took
            self.metrics.reload_duration.set(took)
            if took > self.budget:
                self.overruns += 1
                self.metrics.reload_overruns.inc()
                log.warning(
                    "reload of the jobs directory overran its budget",
                    extra={"seconds": round(took, 3), "budget": self.budget},
                )

    def health(self, now: float | None = None) -> tuple[bool, str]:
        """The ``reload_budget`` check of ``/health/deep``; ``now`` is ``time.monotonic()``."""
        now = time.monotonic() if now is None else now
        started = self.started
        if started is not None and now - started > self.budget:
            return False, (
                f"a reload has been running for {now - started:.1f} s, over its budget of "
                f"{self.budget:g} s; later reloads wait behind it"
            )
        if self.error is not None:
            return False, f"the last reload failed: {self.error}"
        if self.last_duration is None:
            return True, "no reload yet"
        over = f"; {self.overruns} over the budget so far" if self.overruns else ""
        return True, f"last reload took {self.last_duration:.3f} s (budget {self.budget:g} s){over}"
