"""Readiness: what ``/health/deep`` answers, and why it is not the same as "all is well".

A load balancer takes a replica out of rotation when its readiness fails, so readiness
means *this process can serve*: the jobs dir can be read, the state can be written, the
background services (scheduler, watchers) run. Problems the server works around, an
invalid job file (its last good definition stays live) or an invalid config file (the
previous config stays in force), are shown in the body as ``warnings`` with the same
detail, and alerted on through ``/metrics``: one merged typo must not pull every replica
out of rotation at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["Check", "as_check", "readiness"]


class Check(NamedTuple):
    """One named check: ``critical`` ones fail readiness (503), the others only warn."""

    ok: bool
    detail: str
    critical: bool = True


def as_check(value: tuple[bool, str] | Check) -> Check:
    """Accept a plain ``(ok, detail)`` pair from a check function: a critical check."""
    return value if isinstance(value, Check) else Check(value[0], value[1])


def readiness(checks: Mapping[str, Check]) -> tuple[dict[str, Any], int]:
    """The ``/health/deep`` body and status code: 503 only for a failed critical check.

    ``status`` is ``ok`` (all passed), ``degraded`` (serving, with ``warnings``) or
    ``fail`` (not ready; ``failing`` names why).
    """
    failing = sorted(n for n, c in checks.items() if not c.ok and c.critical)
    warnings = sorted(n for n, c in checks.items() if not c.ok and not c.critical)
    status = "fail" if failing else "degraded" if warnings else "ok"
    body = {
        "status": status,
        "failing": failing,
        "warnings": warnings,
        "checks": {
            name: {"ok": c.ok, "detail": c.detail, "critical": c.critical}
            for name, c in checks.items()
        },
    }
    return body, 503 if failing else 200
