"""``store: rediss://``: a real ``cronmetrics serve`` on a real redis-server that speaks
TLS (Debian's build, ``--tls-port``), with a self-signed certificate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis as redis_py
from certs import self_signed
from liveserver import live_server, wait_for
from redisserver import RedisServer

from cronmetrics.testing import free_port

pytestmark = pytest.mark.slow


@dataclass
class TLSRedisServer(RedisServer):
    """A redis-server answering TLS on ``tls_port`` (and plain RESP on ``port``, which
    only the fixture uses: to know it is up, and to look at what was written)."""

    tls_port: int = field(default_factory=free_port)
    cert: Path = Path()
    key: Path = Path()

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--tls-port",
            str(self.tls_port),
            "--tls-cert-file",
            str(self.cert),
            "--tls-key-file",
            str(self.key),
            "--tls-ca-cert-file",
            str(self.cert),
            "--tls-auth-clients",
            "no",
        ]


@pytest.fixture
def tls_redis(redis_server_bin: str, tmp_path: Path) -> Iterator[TLSRedisServer]:
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = self_signed(certs)
    server = TLSRedisServer(redis_server_bin, tmp_path / "redis", cert=cert, key=key).start()
    try:
        yield server
    finally:
        server.stop()


def jobs_dir(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "backup.yaml").write_text("job_name: backup\nautomatic_failure_threshold: 3600\n")
    return jobs


def test_a_replica_on_rediss_verifies_the_certificate_and_writes_over_tls(
    tls_redis: TLSRedisServer, tmp_path: Path
) -> None:
    url = f"rediss://127.0.0.1:{tls_redis.tls_port}/0?ssl_ca_certs={tls_redis.cert}"
    args = ("--no-auth", "--store", url)
    with live_server(jobs_dir(tmp_path), tmp_path / "state", args=args) as server:
        wait_for(
            lambda: httpx.get(f"{server.url}/health/deep", timeout=5).status_code == 200,
            "the replica to be ready",
        )
        body = {"job_name": "backup", "status": "success"}
        assert httpx.post(f"{server.url}/api/job-result", json=body, timeout=5).status_code == 200
        state = httpx.get(f"{server.url}/api/job/backup", timeout=5).json()["state"]
        assert state["runs_total"] == 1
        assert "Traceback" not in server.log()
    plain = redis_py.Redis(port=tls_redis.port, decode_responses=True)
    # the TLS port speaks nothing else, so this Redis got it over TLS
    assert any("backup" in key for key in plain.scan_iter("cm:*"))


def test_a_certificate_the_replica_cannot_verify_is_one_clear_line_and_no_write(
    tls_redis: TLSRedisServer, tmp_path: Path
) -> None:
    url = f"rediss://127.0.0.1:{tls_redis.tls_port}/0"  # the system CAs: not ours
    args = ("--no-auth", "--store", url)
    with live_server(jobs_dir(tmp_path), tmp_path / "state", args=args) as server:
        wait_for(lambda: "cannot be reached" in server.log(), "the line at start")
        lines = [line for line in server.log().splitlines() if "cannot be reached" in line]
        assert len(lines) == 1 and "certificate verify failed" in lines[0], lines
        deep = httpx.get(f"{server.url}/health/deep", timeout=5)
        assert deep.status_code == 503 and "store" in deep.text
        body = {"job_name": "backup", "status": "success"}
        refused = httpx.post(f"{server.url}/api/job-result", json=body, timeout=10)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "STORE_UNAVAILABLE"
        assert "Traceback" not in server.log()
    plain = redis_py.Redis(port=tls_redis.port, decode_responses=True)
    assert not any("backup" in key for key in plain.scan_iter("cm:*"))
