"""The tests' real server: ``cronmetrics serve`` (gunicorn) on a free loopback port.

Starting and stopping is :mod:`cronmetrics.testing` (shared with the benchmarks); this
adds readiness by ``GET /health`` over http or https.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from cronmetrics.testing import ServerProcess, free_port, running_server, wait_for

__all__ = ["LiveServer", "free_port", "kill_9", "live_server", "wait_for", "worker_pid"]

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


def worker_pid(server: ServerProcess) -> int:
    """The pid of the server's one gunicorn worker (where the state lives)."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def kill_9(server: ServerProcess) -> None:
    """``kill -9`` of the worker: it dies without running a line of cleanup. The master
    is frozen first so that it cannot spawn a replacement, then killed too."""
    worker = worker_pid(server)
    os.kill(server.process.pid, signal.SIGSTOP)
    os.kill(worker, signal.SIGKILL)
    server.stop(signal.SIGKILL)
