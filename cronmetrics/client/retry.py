"""When the cron host sends a request again, and how long it waits before it does.

A fleet's jobs tend to fire at the same minute, and a server that comes back from a
restart must not meet all of them again in step: the waits are jittered, they fit in the
caller's time budget (a cron run must end), and only what may pass by itself is retried
(network trouble, 5xx, 429), never a refusal that sending it again cannot change.

Standard library only, and Python 3.9-compatible: the one-file client ships it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cronmetrics import errors as err
from cronmetrics.client.failures import Hopeless
from cronmetrics.errors import CronmetricsError, ServerUnavailable

__all__ = ["Retry", "retryable"]


class Retry:
    """Exponential backoff with full jitter inside a total time budget.

    The n-th wait is uniform in ``[0, min(cap, base * 2**n)]``: a fleet whose jobs all fire
    at the same minute spreads its retries instead of hammering a recovering server in
    step. A 429's ``Retry-After`` is honoured when it fits in what is left of the budget.
    """

    def __init__(
        self,
        budget: float,
        *,
        base: float = 0.25,
        cap: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self.deadline = clock() + budget
        self.base = base
        self.cap = cap
        self.clock = clock
        self.rng = rng
        self.attempt = 0

    def _draw(self) -> float:
        if self.rng is None:  # random is imported on the first retry, not at every start
            import random

            self.rng = random.random
        return self.rng()

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def next_wait(self, exc: CronmetricsError) -> float | None:
        """Seconds to wait before the next try, or None: give up (budget spent)."""
        if isinstance(exc, err.RateLimited):
            wait = exc.retry_after
        else:
            wait = self._draw() * min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        if wait >= self.remaining():
            return None
        return wait


def retryable(exc: CronmetricsError) -> bool:
    """Network trouble, 5xx and 429 may pass; a 4xx or a wrong scheme will not change by
    sending it again."""
    return isinstance(exc, (ServerUnavailable, err.RateLimited)) and not isinstance(exc, Hopeless)
