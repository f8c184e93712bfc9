"""Run a real ``cronmetrics serve`` for integration tests and benchmarks.

The project's tests and benchmarks both start the real server (gunicorn, watcher,
scheduler, snapshots) on a loopback port; so can a user's own integration tests of the
jobs they ship. Like :mod:`flask.testing`, this is part of the package so that there is
one way to do it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ServerProcess",
    "free_port",
    "running_server",
    "serve_command",
    "start_server",
    "stop_process",
    "wait_for",
]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    check: Callable[[], T],
    what: str = "condition",
    *,
    timeout: float = 20,
    interval: float = 0.05,
    process: subprocess.Popen[bytes] | None = None,
    log: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy and return that.

    Across processes there is no event to wait on, so callers poll with a deadline; fails
    with AssertionError naming ``what`` (early, with the output, if ``process`` exits)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last  # type: ignore[no-any-return]
        if process is not None and process.poll() is not None:
            if log is not None:
                output = log()
            elif process.stderr is not None:
                output = process.stderr.read().decode(errors="replace")
            else:
                output = ""
            raise AssertionError(
                f"process exited ({process.returncode}) while waiting for {what}:\n{output}"
            )
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class ServerProcess:
    """A running ``cronmetrics serve``; ``started`` is the monotonic time of its start."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    jobs_dir: Path
    state_dir: Path
    log_path: Path
    started: float

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the server (SIGTERM: final state write, clean exit), kill it if it hangs."""
        return stop_process(self.process, sig, timeout)


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30
) -> int:
    """Send ``sig`` (if it still runs), wait up to ``timeout`` s, then SIGKILL; the exit
    status. For the server and the other daemons tests start (Prometheus, Pushgateway)."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def start_server(
    jobs_dir: Path,
    state_dir: Path,
    *,
    args: Sequence[str] = ("--no-auth",),
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    scheme: str = "http",
    cwd: Path | None = None,
) -> ServerProcess:
    """Start ``python -m cronmetrics serve`` on a free loopback port; it is not ready yet
    (see :func:`running_server` for a started-and-ready one). Output goes to
    ``log_path`` (default: ``server-<port>.log`` beside ``state_dir``)."""
    port = free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    if log_path is None:
        log_path = state_dir.parent / f"server-{port}.log"
    cmd = serve_command(jobs_dir, state_dir, port, args)
    full_env = {**os.environ, "CRONMETRICS_LOG__LEVEL": "info", **(env or {})}
    with log_path.open("wb") as log_file:
        started = time.monotonic()
        process = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=cwd
        )
    return ServerProcess(
        f"{scheme}://127.0.0.1:{port}", port, process, jobs_dir, state_dir, log_path, started
    )


def serve_command(jobs_dir: Path, state_dir: Path, port: int, args: Sequence[str]) -> list[str]:
    """The command line of ``cronmetrics serve`` on ``127.0.0.1:port``, run by this Python."""
    return [
        sys.executable,
        "-m",
        "cronmetrics",
        "serve",
        "--jobs-dir",
        str(jobs_dir),
        "--state-dir",
        str(state_dir),
        "--bind",
        f"127.0.0.1:{port}",
        *args,
    ]


@contextlib.contextmanager
def running_server(
    jobs_dir: Path,
    state_dir: Path,
    *,
    ready: Callable[[ServerProcess], object],
    timeout: float = 30,
    **options: Any,
) -> Iterator[ServerProcess]:
    """:func:`start_server`, wait until ``ready(server)`` is truthy, stop it at the end."""
    server = start_server(jobs_dir, state_dir, **options)
    try:
        wait_for(
            lambda: ready(server),
            f"the server on port {server.port} to be ready",
            timeout=timeout,
            process=server.process,
            log=server.log,
        )
        yield server
    finally:
        server.stop()
