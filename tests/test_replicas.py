"""Two real ``cronmetrics serve`` replicas on one real redis-server.

Each replica has its own state dir (the lock stays per host) and the same jobs.d, as a
git-synced checkout would give them; Redis holds the truth. Waits are polls with a
deadline (across processes there is no event to wait on); speed is measured in
benchmarks/bench_replicas.py, not here.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from liveserver import LiveServer, live_server, wait_for
from redisserver import RedisServer

pytestmark = pytest.mark.slow

JOBS = {
    "nightly.yaml": "job_name: nightly\nautomatic_failure_threshold: 3600\n",
    "busy.yaml": "job_name: busy\nautomatic_failure_threshold: 3600\n",
}


def write_jobs(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in JOBS.items():
        (root / name).write_text(text)
    return root


def sample(text: str, metric: str, job: str) -> float | None:
    """The value of ``metric`` for job ``job`` in a /metrics body (None: absent)."""
    match = re.search(rf'^{metric}{{[^}}]*job_name="{job}"[^}}]*}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else None


def metric(server: LiveServer, name: str, job: str) -> float | None:
    return sample(httpx.get(f"{server.url}/metrics", timeout=5).text, name, job)


def submit(server: LiveServer, body: object, timeout: float = 5) -> httpx.Response:
    return httpx.post(f"{server.url}/api/job-result", json=body, timeout=timeout)


@contextlib.contextmanager
def replica(jobs: Path, state: Path, redis: RedisServer, *extra: str) -> Iterator[LiveServer]:
    with live_server(jobs, state, args=("--no-auth", "--store", redis.url, *extra)) as server:
        yield server


@pytest.fixture
def pair(redis: RedisServer, tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    jobs = write_jobs(tmp_path / "jobs.d")
    with (
        replica(jobs, tmp_path / "a" / "state", redis) as a,
        replica(jobs, tmp_path / "b" / "state", redis) as b,
    ):
        for server in (a, b):
            wait_for(
                lambda s=server: httpx.get(f"{s.url}/health/deep", timeout=5).status_code == 200,
                "the replica to be ready",
            )
        yield a, b


def test_a_result_sent_to_a_is_in_the_metrics_of_b(pair: tuple[LiveServer, LiveServer]) -> None:
    a, b = pair
    response = submit(a, {"job_name": "nightly", "status": "success", "duration": 7})
    assert response.status_code == 200, response.text
    wait_for(lambda: metric(b, "cronjob_runs_total", "nightly") == 1, "B to export the run")
    assert metric(b, "cronjob_last_duration_seconds", "nightly") == 7
    assert metric(b, "cronjob_status", "nightly") == 1


def test_start_on_a_and_success_on_b_pair_into_one_run_with_its_duration(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    start = "2026-01-05T10:00:00Z"
    end = "2026-01-05T10:00:30Z"
    body = {"job_name": "nightly", "run_id": "run-1"}
    assert submit(a, {**body, "status": "start", "timestamp": start}).status_code == 200
    wait_for(lambda: metric(b, "cronjob_running", "nightly") == 1, "B to see it running")
    assert submit(b, {**body, "status": "success", "timestamp": end}).status_code == 200
    for server in (a, b):
        wait_for(
            lambda s=server: metric(s, "cronjob_last_duration_seconds", "nightly") == 30,
            "the paired duration on both",
        )
        assert metric(server, "cronjob_runs_total", "nightly") == 1
        assert metric(server, "cronjob_running", "nightly") == 0


def test_the_same_run_id_sent_to_both_replicas_counts_once(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    body = {"job_name": "nightly", "status": "success", "run_id": "retried"}
    assert submit(a, body).status_code == 200
    assert submit(b, body).status_code == 200  # a client retrying on the other replica
    assert submit(a, {**body, "run_id": "other"}).status_code == 200
    for server in (a, b):
        wait_for(lambda s=server: metric(s, "cronjob_runs_total", "nightly") == 2, "2 runs")


def test_runs_total_is_equal_on_both_under_concurrent_load(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    per_client, errors = 50, []

    def client(server: LiveServer, n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for i in range(per_client):
                r = http.post(
                    "/api/job-result",
                    json={"job_name": "busy", "status": "success", "run_id": f"{n}-{i}"},
                )
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=client, args=(s, n)) for n, s in enumerate([a, b] * 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    total = 6 * per_client
    for server in (a, b):
        wait_for(
            lambda s=server: metric(s, "cronjob_runs_total", "busy") == total,
            f"{total} runs on {server.url}",
        )


class Streamer:
    """Clients that send results like a load balancer would: to A, else to B."""

    def __init__(self, servers: list[LiveServer]) -> None:
        self.servers = servers
        self.acked: list[str] = []
        self.refused = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(3)]

    def _run(self, n: int) -> None:
        i = 0
        while not self.stop.is_set() and i < 5000:
            run_id = f"s{n}-{i}"
            i += 1
            for server in self.servers:
                try:
                    r = submit(
                        server, {"job_name": "busy", "status": "success", "run_id": run_id}, 2
                    )
                except httpx.HTTPError:
                    continue  # that replica is gone: the next one
                if r.status_code == 200:
                    self.acked.append(run_id)
                    break
                self.refused += 1

    def __enter__(self) -> Streamer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_kill_9_of_a_while_clients_stream_b_goes_on_and_nothing_acknowledged_is_lost(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    with Streamer([a, b]) as stream:
        wait_for(lambda: len(stream.acked) >= 30, "results flowing")
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)
        at_kill = len(stream.acked)
        wait_for(lambda: len(stream.acked) >= at_kill + 30, "B taking the traffic")
    acked = len(stream.acked)
    assert len(set(stream.acked)) == acked
    runs = wait_for(
        lambda: (v := metric(b, "cronjob_runs_total", "busy")) is not None and v >= acked and v,
        "every acknowledged run on B",
    )
    assert runs <= acked + 3  # at most the in-flight ones A recorded but never answered


def test_kill_9_of_redis_then_restart_both_recover_without_a_restart(
    pair: tuple[LiveServer, LiveServer], redis: RedisServer
) -> None:
    a, b = pair
    for i in range(20):
        assert (
            submit(a if i % 2 else b, {"job_name": "busy", "status": "success"}).status_code == 200
        )
    redis.kill()
    refused = submit(a, {"job_name": "busy", "status": "success"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "STORE_UNAVAILABLE"
    assert refused.headers.get("Retry-After")
    for server in (a, b):
        wait_for(
            lambda s=server: (
                "cronmetrics_store_up 0.0" in httpx.get(f"{s.url}/metrics", timeout=5).text
            ),
            "store_up 0",
        )
        assert metric(server, "cronjob_runs_total", "busy") == 20  # last states still served
    redis.start()
    for server in (a, b):
        wait_for(
            lambda s=server: httpx.get(f"{s.url}/health/deep", timeout=5).status_code == 200,
            "the replica to recover",
        )
    assert submit(b, {"job_name": "busy", "status": "success"}).status_code == 200
    for server in (a, b):
        wait_for(lambda s=server: metric(s, "cronjob_runs_total", "busy") == 21, "21 runs")


def test_redis_stopped_gives_503_and_health_deep_names_the_store(
    pair: tuple[LiveServer, LiveServer], redis: RedisServer
) -> None:
    a, _ = pair
    redis.stop()
    response = submit(a, {"job_name": "nightly", "status": "success"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "STORE_UNAVAILABLE"
    assert f"127.0.0.1:{redis.port}" in error["message"]
    deep = wait_for(
        lambda: (r := httpx.get(f"{a.url}/health/deep", timeout=5)).status_code == 503 and r,
        "readiness to fail",
    )
    assert "store" in deep.text and "unreachable" in deep.text
    assert "Traceback" not in a.log()


def test_a_server_starts_while_redis_is_down_and_recovers_without_a_restart(
    redis: RedisServer, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs.d")
    redis.stop()
    with replica(jobs, tmp_path / "state", redis) as server:
        assert httpx.get(f"{server.url}/health/deep", timeout=5).status_code == 503
        assert "cronmetrics_store_up 0.0" in httpx.get(f"{server.url}/metrics", timeout=5).text
        assert "cannot be reached" in server.log()
        redis.start()
        wait_for(
            lambda: httpx.get(f"{server.url}/health/deep", timeout=5).status_code == 200,
            "readiness once Redis is up",
        )
        assert submit(server, {"job_name": "nightly", "status": "success"}).status_code == 200


def test_two_workers_on_redis_serve_one_state(redis: RedisServer, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.d")
    with replica(jobs, tmp_path / "state", redis, "--workers", "2") as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for i in range(40):
                body = {"job_name": "busy", "status": "success", "run_id": str(i)}
                assert http.post("/api/job-result", json=body).status_code == 200
        for _ in range(6):  # each scrape may reach either worker: all agree
            wait_for(lambda: metric(server, "cronjob_runs_total", "busy") == 40, "40 runs")


def test_a_window_made_on_a_silences_the_job_on_b_and_ends_there_too(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    """Runtime maintenance is shared: one command against either replica silences the job
    everywhere, and ending it early on the other replica brings it back everywhere."""
    a, b = pair
    made = httpx.post(
        f"{a.url}/api/maintenance",
        json={"matchers": ["job_name=nightly"], "duration": "2h", "comment": "disk swap"},
        timeout=5,
    )
    assert made.status_code == 201, made.text
    wid = made.json()["id"]
    for server in (a, b):
        wait_for(
            lambda s=server: metric(s, "cronjob_status", "nightly") == -1,
            "the window to silence the job on both replicas",
        )
    assert metric(b, "cronjob_status", "busy") == 1
    ended = httpx.delete(f"{b.url}/api/maintenance/{wid}", timeout=5)
    assert ended.status_code == 200, ended.text
    for server in (a, b):
        wait_for(
            lambda s=server: metric(s, "cronjob_status", "nightly") == 1,
            "the job to be back on both replicas",
        )
