"""``store: rediss://`` and ``rediss+sentinel://``: a real ``cronmetrics serve`` on a real
redis-server (and sentinel) that speak TLS (Debian's build, ``--tls-port``), with a
self-signed certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_py
from certs import self_signed
from liveserver import live_server, wait_for
from redisserver import RedisServer, SentinelServer

pytestmark = pytest.mark.slow


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    certs = tmp_path / "certs"
    certs.mkdir()
    return self_signed(certs)


@pytest.fixture
def tls_redis(
    redis_server_bin: str, tls_files: tuple[Path, Path], tmp_path: Path
) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_bin, tmp_path / "redis", tls=tls_files).start()
    try:
        yield server
    finally:
        server.stop()


def jobs_dir(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "backup.yaml").write_text("job_name: backup\nautomatic_failure_threshold: 3600\n")
    return jobs


def report_through(url: str, redis: RedisServer, tmp_path: Path) -> None:
    """A replica on ``url`` gets ready, takes a report, and ``redis`` (read on its plain
    port: its TLS port speaks nothing else) holds it."""
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
    plain = redis_py.Redis(port=redis.port, decode_responses=True)
    assert any("backup" in key for key in plain.scan_iter("cm:*"))


def test_a_replica_on_rediss_verifies_the_certificate_and_writes_over_tls(
    tls_redis: RedisServer, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    url = f"rediss://127.0.0.1:{tls_redis.tls_port}/0?ssl_ca_certs={tls_files[0]}"
    report_through(url, tls_redis, tmp_path)


def test_a_certificate_the_replica_cannot_verify_is_one_clear_line_and_no_write(
    tls_redis: RedisServer, tmp_path: Path
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


@pytest.fixture
def tls_sentinel(
    redis_server_bin: str, tls_redis: RedisServer, tls_files: tuple[Path, Path], tmp_path: Path
) -> Iterator[SentinelServer]:
    sentinel = SentinelServer(
        redis_server_bin, tmp_path / "sentinel", master_port=tls_redis.tls_port, tls=tls_files
    ).start()
    try:
        yield sentinel
    finally:
        sentinel.stop()


def test_a_replica_behind_tls_sentinels_finds_the_primary_and_writes_over_tls(
    tls_sentinel: SentinelServer,
    tls_redis: RedisServer,
    tls_files: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    ca = tls_files[0]
    url = f"rediss+sentinel://127.0.0.1:{tls_sentinel.tls_port}/cm/0?ssl_ca_certs={ca}"
    report_through(url, tls_redis, tmp_path)


def test_a_sentinel_certificate_the_replica_cannot_verify_is_named_at_start(
    tls_sentinel: SentinelServer, tmp_path: Path
) -> None:
    url = f"rediss+sentinel://127.0.0.1:{tls_sentinel.tls_port}/cm/0"  # the system CAs
    args = ("--no-auth", "--store", url)
    with live_server(jobs_dir(tmp_path), tmp_path / "state", args=args) as server:
        wait_for(lambda: "cannot be reached" in server.log(), "the line at start")
        lines = [line for line in server.log().splitlines() if "cannot be reached:" in line]
        assert len(lines) == 1, lines
        assert f"sentinel 127.0.0.1:{tls_sentinel.tls_port}: " in lines[0]
        assert "certificate verify failed" in lines[0]
        deep = httpx.get(f"{server.url}/health/deep", timeout=5)
        assert deep.status_code == 503 and "store" in deep.text
