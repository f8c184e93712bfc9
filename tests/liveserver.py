"""The tests' real server: ``cronmetrics serve`` (gunicorn) on a free loopback port.

Starting and stopping is :mod:`cronmetrics.testing` (shared with the benchmarks); this
adds readiness by ``GET /health`` over http or https.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from cronmetrics.testing import ServerProcess, free_port, running_server, wait_for

__all__ = ["LiveServer", "free_port", "live_server", "wait_for"]

LiveServer = ServerProcess


def healthy(server: ServerProcess) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{server.url}/health", timeout=1, verify=False).status_code == 200
    return False


@contextlib.contextmanager
def live_server(
    jobs_dir: Path,
    state_dir: Path,
    *,
    args: Sequence[str] = ("--no-auth",),
    env: dict[str, str] | None = None,
    scheme: str = "http",
) -> Iterator[ServerProcess]:
    """Run ``cronmetrics serve`` until the block ends (SIGTERM, then kill)."""
    with running_server(
        jobs_dir, state_dir, ready=healthy, args=args, env=env, scheme=scheme
    ) as server:
        yield server
