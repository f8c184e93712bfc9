"""Rate limiting of failed authentication, per client address: a small token bucket.

Why not flask-limiter: we limit only *failures* (a request with a good token is never
counted or slowed, so a fleet of hosts reporting every minute costs nothing), the key is
the client address alone, and the state is a few bytes per address that may be lost on
restart, so no storage backend, decorator or per-route configuration is needed. A
maintained library would add a dependency for about forty lines of arithmetic.

Each address has a bucket of ``burst`` tokens refilled at ``rate`` per second; a failed
authentication takes one. An address whose bucket is empty is refused with 429 before
its token is even looked at, so a dictionary attack on a weak token gets ``rate``
guesses per second at most. A full bucket is the same as no bucket, so the table only
holds addresses that failed recently, and it is capped (:attr:`max_addresses`) so that
an attacker with many addresses cannot grow it without bound.

Time is an argument (``now``), never read here: the app passes its clock, tests a fake one.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

__all__ = ["FailureLimiter"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class FailureLimiter:
    """Token buckets of failed-authentication allowances, keyed by client address."""

    def __init__(
        self, *, burst: int = 10, rate: float = 1 / 6, max_addresses: int = 10_000
    ) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("burst must be >= 1 and rate > 0")
        self.burst = float(burst)
        self.rate = rate
        self.max_addresses = max_addresses
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def _level(self, bucket: _Bucket, now: float) -> float:
        elapsed = max(0.0, now - bucket.updated)
        return min(self.burst, bucket.tokens + elapsed * self.rate)

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again; 0 when it may try now."""
        with self._lock:
            bucket = self._buckets.get(address)
            if bucket is None:
                return 0.0
            level = self._level(bucket, now)
            if level >= 1.0:
                return 0.0
            return (1.0 - level) / self.rate

    def failed(self, address: str, now: float) -> None:
        """Take one allowance from ``address`` (never below zero)."""
        with self._lock:
            bucket = self._buckets.get(address)
            level = self.burst if bucket is None else self._level(bucket, now)
            self._buckets[address] = _Bucket(max(0.0, level - 1.0), now)
            if len(self._buckets) > self.max_addresses:
                self._prune(now)

    def _prune(self, now: float) -> None:
        """Drop refilled buckets; if still too many, the least recently failed ones."""
        self._buckets = {a: b for a, b in self._buckets.items() if self._level(b, now) < self.burst}
        excess = len(self._buckets) - self.max_addresses
        if excess > 0:
            oldest = sorted(self._buckets, key=lambda a: self._buckets[a].updated)[:excess]
            for address in oldest:
                del self._buckets[address]

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` wants whole seconds; round up so a client never retries too early."""
    return str(max(1, math.ceil(seconds)))
