"""Start a real ``cronmetrics serve`` (gunicorn) on a free loopback port for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def wait_for(
    check: Callable[[], Any],
    what: str = "condition",
    *,
    timeout: float = 20,
    interval: float = 0.05,
    process: subprocess.Popen[bytes] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy and return that.

    Across processes there is no event to wait on, so tests poll with a deadline; fails
    naming ``what`` (and early, with its stderr, if ``process`` exits meanwhile).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        if process is not None and process.poll() is not None:
            err = process.stderr.read() if process.stderr is not None else b""
            raise AssertionError(f"process exited early while waiting for {what}: {err!r}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    jobs_dir: Path
    state_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    verify = False
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited early ({process.returncode}):\n{log_path.read_text()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1, verify=verify).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout}s:\n{log_path.read_text()}")


@contextlib.contextmanager
def live_server(
    jobs_dir: Path,
    state_dir: Path,
    *,
    args: Sequence[str] = ("--no-auth",),
    env: dict[str, str] | None = None,
    scheme: str = "http",
) -> Iterator[LiveServer]:
    """Run ``cronmetrics serve`` until the block ends (SIGTERM, then kill)."""
    port = free_port()
    log_path = state_dir.parent / f"server-{port}.log"
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
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
    full_env = {**os.environ, "CRONMETRICS_LOG__LEVEL": "info", **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env)
    server = LiveServer(
        f"{scheme}://127.0.0.1:{port}", port, process, jobs_dir, state_dir, log_path
    )
    try:
        wait_ready(server.url, process, log_path)
        yield server
    finally:
        server.stop()
