"""Redis behind Sentinel: a real master, a real replica and a real sentinel (Debian's
redis-server in ``--sentinel`` mode); ``kill -9`` of the master, the sentinel promotes the
replica, and a real ``cronmetrics serve`` on ``redis+sentinel://`` writes to the promoted
one without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_py
from liveserver import LiveServer, live_server, wait_for
from redisserver import RedisServer, SentinelServer

from cronmetrics.storage.redismirror import reason

pytestmark = pytest.mark.slow

SERVICE = "cm"


@pytest.fixture
def cluster(
    redis_server_bin: str, tmp_path: Path
) -> Iterator[tuple[RedisServer, RedisServer, SentinelServer]]:
    master = RedisServer(redis_server_bin, tmp_path / "master").start()
    replica = RedisServer(
        redis_server_bin,
        tmp_path / "replica",
        extra=("--replicaof", "127.0.0.1", str(master.port)),
    ).start()
    sentinel = SentinelServer(redis_server_bin, tmp_path / "sentinel", master_port=master.port)
    sentinel.start()
    try:
        ask = redis_py.Redis(port=sentinel.port, decode_responses=True)
        on_replica = redis_py.Redis(port=replica.port, decode_responses=True)
        wait_for(
            lambda: (
                bool(ask.sentinel_slaves(SERVICE))
                and on_replica.info("replication")["master_link_status"] == "up"
            ),
            "the sentinel to know the replica, in sync",
            timeout=30,
        )
        yield master, replica, sentinel
    finally:
        for server in (sentinel, replica, master):
            server.stop()


def submit(server: LiveServer, job: str) -> int:
    try:
        body = {"job_name": job, "status": "success"}
        return httpx.post(f"{server.url}/api/job-result", json=body, timeout=10).status_code
    except httpx.HTTPError:
        return 0


def runs(server: LiveServer, job: str) -> int:
    response = httpx.get(f"{server.url}/api/job/{job}", timeout=5)
    return int(response.json()["state"]["runs_total"])


def test_a_sentinel_failover_moves_the_writes_to_the_promoted_replica(
    cluster: tuple[RedisServer, RedisServer, SentinelServer], tmp_path: Path
) -> None:
    master, replica, sentinel = cluster
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "backup.yaml").write_text("job_name: backup\nautomatic_failure_threshold: 3600\n")
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}/0"
    args = ("--no-auth", "--store", url)
    with live_server(jobs, tmp_path / "state", args=args) as server:
        wait_for(
            lambda: httpx.get(f"{server.url}/health/deep", timeout=5).status_code == 200,
            "the replica to be ready",
        )
        for _ in range(10):
            assert submit(server, "backup") == 200
        # replication is asynchronous: what reached the replica survives a failover
        on_master = redis_py.Redis(port=master.port)
        assert on_master.wait(1, 5000) == 1
        master.kill()
        began = time.monotonic()
        wait_for(lambda: submit(server, "backup") == 200, "a write after the failover", timeout=60)
        failover = time.monotonic() - began
        role = redis_py.Redis(port=replica.port).execute_command("ROLE")[0]
        assert role in (b"master", "master")  # the promoted replica holds the writes
        wait_for(lambda: runs(server, "backup") == 11, "every acknowledged run", timeout=10)
        assert failover < 60
        assert "Traceback" not in server.log()


@pytest.fixture
def guarded_sentinel(
    redis_server_bin: str, tmp_path: Path
) -> Iterator[tuple[RedisServer, SentinelServer]]:
    """A master watched by a sentinel that asks for a password of its own."""
    master = RedisServer(redis_server_bin, tmp_path / "master").start()
    sentinel = SentinelServer(
        redis_server_bin, tmp_path / "sentinel", master_port=master.port, password="s3nt"
    )
    sentinel.start()
    try:
        yield master, sentinel
    finally:
        for server in (sentinel, master):
            server.stop()


def jobs_dir(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir(exist_ok=True)
    (jobs / "backup.yaml").write_text("job_name: backup\nautomatic_failure_threshold: 3600\n")
    return jobs


def test_a_sentinel_with_its_own_password_is_asked_with_the_sentinel_password_file(
    guarded_sentinel: tuple[RedisServer, SentinelServer], tmp_path: Path
) -> None:
    _, sentinel = guarded_sentinel
    secret = tmp_path / "sentinel-password"
    secret.write_text("s3nt\n")
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}/0"
    env = {"CRONMETRICS_STORE_SENTINEL_PASSWORD_FILE": str(secret)}
    args = ("--no-auth", "--store", url)
    with live_server(jobs_dir(tmp_path), tmp_path / "state", args=args, env=env) as server:
        wait_for(
            lambda: httpx.get(f"{server.url}/health/deep", timeout=5).status_code == 200,
            "the replica to be ready",
        )
        assert submit(server, "backup") == 200
        assert runs(server, "backup") == 1


@pytest.mark.parametrize("password", [None, "wrong"])
def test_a_sentinel_refusing_us_is_one_clear_line_and_a_failing_readiness(
    guarded_sentinel: tuple[RedisServer, SentinelServer], tmp_path: Path, password: str | None
) -> None:
    _, sentinel = guarded_sentinel
    env = {}
    if password is not None:
        secret = tmp_path / "sentinel-password"
        secret.write_text(password)
        env["CRONMETRICS_STORE_SENTINEL_PASSWORD_FILE"] = str(secret)
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}/0"
    args = ("--no-auth", "--store", url)
    with live_server(jobs_dir(tmp_path), tmp_path / "state", args=args, env=env) as server:
        wait_for(lambda: "sentinel" in server.log() and "password" in server.log(), "the line")
        deep = httpx.get(f"{server.url}/health/deep", timeout=5)
        assert deep.status_code == 503 and "store" in deep.text
        assert submit(server, "backup") == 503
        lines = [line for line in server.log().splitlines() if "refused the password" in line]
        assert len(lines) == 1, server.log()
        assert "store_sentinel_password_file" in lines[0]
        assert f"sentinel 127.0.0.1:{sentinel.port}" in lines[0]  # not redis-py's repr
        assert "ConnectionPool" not in server.log()
        assert "s3nt" not in server.log() and "Traceback" not in server.log()


def sentinel_client_repr(port: int) -> str:
    """How redis-py 8 names a sentinel's client in MasterNotFoundError (abridged)."""
    return (
        "<redis.client.Redis(<redis.connection.ConnectionPool(<redis.connection.Connection("
        "db=0,username=<REDACTED>,password=<REDACTED>,socket_timeout=1.0,"
        "retry=<redis.retry.Retry object at 0x7f27e3f49f10>,health_check_interval=0,"
        "driver_info=DriverInfo(name='redis-py', lib_version='8.1.0', _upstream=[]),"
        f"host=127.0.0.1,port={port},socket_connect_timeout=0.5,"
        "socket_keepalive_options=<object object at 0x7fbaddcc5b40>,"
        "orig_host_address=127.0.0.1)>)>)>"
    )


def test_sentinel_errors_name_each_sentinel_by_host_and_port() -> None:
    message = (
        f"No master found for 'cm' : {sentinel_client_repr(26379)} - auth:AuthenticationError, "
        f"{sentinel_client_repr(26380)} - ConnectionError('refused')"
    )
    assert reason(Exception(message)) == (
        "No master found for 'cm' : sentinel 127.0.0.1:26379 - auth:AuthenticationError, "
        "sentinel 127.0.0.1:26380 - ConnectionError('refused')"
    )
    # a repr without a host is left alone, and does not swallow the next one
    odd = "<redis.client.Redis(<redis.connection.ConnectionPool(<x(db=0)>)>)> - a"
    assert reason(Exception(f"{odd}, {sentinel_client_repr(1)} - b")) == (
        f"{odd}, sentinel 127.0.0.1:1 - b"
    )
    assert reason(Exception()) == "Exception"
