"""A real Debian ``redis-server`` for the tests of the Redis engine and of replicas.

Each server gets a free loopback port and a directory of its own; its append-only file
(``appendonly yes``, ``appendfsync always``) and its log live there and nowhere else (no
RDB snapshots). :meth:`RedisServer.kill` is a real ``kill -9``; :meth:`RedisServer.start`
again brings it back on the same port and directory, reading the AOF, as a restarted
Redis in production would. With ``tls`` (a certificate and its key), it also answers
TLS on ``tls_port``; :class:`SentinelServer` is ``redis-server --sentinel`` watching one.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cronmetrics.testing import free_port, stop_process, wait_for

__all__ = ["RedisServer", "SentinelServer", "redis_server"]


def _answers_ping(port: int, password: str | None) -> bool:
    """A raw RESP PING: readiness without needing the client library."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
        if password is not None:
            s.sendall(f"AUTH {password}\r\n".encode())
            if not s.recv(64).startswith(b"+OK"):
                return False
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")
    return False


@dataclass
class RedisServer:
    """One ``redis-server`` process (or none, between :meth:`kill` and :meth:`start`)."""

    binary: str
    dir: Path
    port: int = field(default_factory=free_port)
    password: str | None = None
    extra: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = None
    #: (certificate, key): TLS on ``tls_port`` too (the plain port stays, for the checks)
    tls: tuple[Path, Path] | None = None
    tls_port: int = field(default_factory=free_port)

    def tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        cert, key = self.tls
        return [
            *("--tls-port", str(self.tls_port)),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"),
        ]

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command(self) -> list[str]:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
            "--protected-mode",
            "yes",
        ]
        if self.password is not None:
            args += ["--requirepass", self.password]
        return [*args, *self.tls_args(), *self.extra]

    def start(self, timeout: float = 20) -> RedisServer:
        """Start (or restart) on the same port and directory; return when it answers."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("redis-server is already running")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for(
            lambda: _answers_ping(self.port, self.password),
            f"redis-server on port {self.port}",
            timeout=timeout,
            process=self.process,
            log=self.log,
        )
        return self

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final write; what the AOF holds is what survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._close_pipe()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM)."""
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM, timeout=10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        """The stderr pipe (read only by a failed start) of a process that ended."""
        process = self.process
        if process is not None and process.stderr is not None and process.poll() is not None:
            process.stderr.close()

    def restart_after_kill(self, down_for: float = 0.0) -> None:
        """``kill -9``, stay down ``down_for`` seconds, start again on the same port."""
        self.kill()
        if down_for:
            time.sleep(down_for)
        self.start()


@dataclass
class SentinelServer(RedisServer):
    """``redis-server sentinel.conf --sentinel`` watching the master on ``master_port``
    as ``service`` (with ``password``: the sentinel's own ``requirepass``; with ``tls``:
    TLS to its clients and to the master, whose ``master_port`` is then its TLS port)."""

    master_port: int = 0
    service: str = "cm"

    def command(self) -> list[str]:
        conf = self.dir / "sentinel.conf"
        if not conf.exists():  # the sentinel rewrites it with what it learns
            conf.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"logfile {self.log_path}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} 1\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 10000\n"
                + (f"requirepass {self.password}\n" if self.password is not None else "")
                + ("tls-replication yes\n" if self.tls is not None else "")
            )
        return [self.binary, str(conf), "--sentinel", *self.tls_args()]


@contextlib.contextmanager
def redis_server(binary: str, directory: Path, **options: object) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped at the end of the block."""
    server = RedisServer(binary, directory, **options)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
