"""The Redis engine against a real redis-server: two engines on one Redis are replicas."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py
from liveserver import wait_for
from redisserver import RedisServer

from cronmetrics.errors import StoreUnavailable
from cronmetrics.storage.interface import Result, Store
from cronmetrics.storage.redisstore import RedisStore

T0 = 1_767_571_200.0


def result(job: str, status: str = "success", ts: float = T0, **kw: object) -> Result:
    return Result(job, status, ts, ts, **kw)  # type: ignore[arg-type]


@pytest.fixture
def replicas(redis: RedisServer) -> Iterator[tuple[RedisStore, RedisStore]]:
    """Two engines on one Redis, as two replicas would have."""
    a = RedisStore(redis.url, max_results_per_job=5)
    b = RedisStore(redis.url, max_results_per_job=5)
    for store in (a, b):
        assert store.mirror.wait_loaded(10)
    yield a, b
    a.close()
    b.close()


def test_the_redis_engine_is_a_store(replicas: tuple[RedisStore, RedisStore]) -> None:
    assert isinstance(replicas[0], Store)


def test_a_result_recorded_on_one_replica_reaches_the_other(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    (rec,) = a.record([result("backup", duration=3.0, exit_code=0)], T0)
    assert rec.changed and not rec.duplicate
    assert rec.state.runs_total == 1 and rec.state.last_duration == 3.0
    assert a.state("backup") == rec.state  # its own write at once
    seen = wait_for(lambda: b.state("backup"), "B to mirror the state", timeout=5)
    assert seen == rec.state
    changed, cursor = b.changes("")
    assert "backup" in changed
    assert b.changes(cursor) == ([], cursor)
    assert [r.duration for r in b.history("backup")] == [3.0]


def test_start_on_one_replica_and_success_on_the_other_pair_into_one_run(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    a.record([result("nightly", "start", T0, run_id="r1")], T0)
    (rec,) = b.record([result("nightly", "success", T0 + 42, run_id="r1")], T0 + 42)
    assert rec.state.running is False
    assert rec.state.last_duration == 42.0
    assert rec.state.runs_total == 1


def test_the_same_run_id_sent_to_both_replicas_counts_once(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    first = a.record([result("db", run_id="x")], T0)
    again = b.record([result("db", run_id="x")], T0)
    assert not first[0].duplicate and again[0].duplicate
    in_one_batch = a.record([result("db", run_id="y"), result("db", run_id="y")], T0)
    assert [r.duplicate for r in in_one_batch] == [False, True]
    assert b.record([result("db", "failure", run_id="x")], T0)[0].duplicate is False
    state = wait_for(lambda: (s := b.state("db")) and s.runs_total == 3 and s, "3 runs")
    assert state.failures_total == 1
    assert len(a.history("db")) == 3


def test_concurrent_replicas_lose_no_run_of_the_same_job(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    per_thread = 40

    def send(store: RedisStore, n: int) -> None:
        for i in range(per_thread):
            store.record([result("hot", ts=T0 + i, run_id=f"{n}-{i}")], T0 + i)

    threads = [threading.Thread(target=send, args=(s, n)) for n, s in enumerate([a, b, a, b])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    expected = 4 * per_thread
    for store in (a, b):
        wait_for(
            lambda s=store: (st := s.state("hot")) is not None and st.runs_total == expected,
            "every run counted on both replicas",
        )


def test_history_is_newest_first_bounded_and_paged(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = replicas
    a.record([result("h", ts=T0 + i, exit_code=i) for i in range(8)], T0 + 8)
    assert [r.exit_code for r in a.history("h")] == [7, 6, 5, 4, 3]  # max_results_per_job 5
    assert [r.exit_code for r in a.history("h", limit=2)] == [7, 6]
    assert [r.exit_code for r in a.history("h", before=T0 + 6)] == [5, 4, 3]
    a.record([result("h", ts=T0 + 1, exit_code=99)], T0 + 9)  # late: history, not state
    state = a.state("h")
    assert state is not None and state.last_exit_code == 7 and state.runs_total == 9
    assert a.history("unknown") == []


def test_recent_merges_jobs_newest_first(replicas: tuple[RedisStore, RedisStore]) -> None:
    a, _ = replicas
    a.record([result("x", ts=T0), result("y", ts=T0 + 1), result("x", ts=T0 + 2)], T0 + 2)
    assert [(r.job_id, r.timestamp) for r in a.recent(None, 2)] == [("x", T0 + 2), ("y", T0 + 1)]
    assert [r.job_id for r in a.recent(["y"], 10)] == ["y"]


def test_purge_removes_history_but_keeps_counters_and_tells_replicas(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    a.record([result("p", ts=T0 + i, output=f"secret-{i}") for i in range(4)], T0 + 4)
    a.record([result("q", ts=T0)], T0)
    _, cursor = b.changes("")
    assert a.purge(T0 + 2, ["p"]) == 2
    assert [r.output for r in a.history("p")] == ["secret-3", "secret-2"]
    assert len(a.history("q")) == 1
    assert "secret-0" not in str(a.recent(None, 100))
    wait_for(lambda: "p" in b.changes(cursor)[0], "B to hear of the purge")
    assert a.purge(T0 + 10) == 3
    state = a.state("p")
    assert state is not None and state.runs_total == 4
    assert a.recent(None, 10) == []


def test_detach_keeps_everything_until_it_expires_and_ensure_brings_it_back(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    a.record([result("blink")], T0)
    a.detach(["blink"], T0 + 1)
    detached = a.state("blink")
    assert detached is not None and detached.detached_since == T0 + 1
    wait_for(lambda: (s := b.state("blink")) and s.detached_since, "B to mirror the detach")
    back = b.ensure("blink", T0 + 2)
    assert back.detached_since is None and back.runs_total == 1
    a.detach(["blink"], T0 + 3)  # A may not have mirrored the attach yet: it reads Redis
    assert a.expire_detached(T0 + 2) == []
    assert a.expire_detached(T0 + 4) == ["blink"]
    assert a.state("blink") is None and a.history("blink") == []
    wait_for(lambda: b.state("blink") is None, "B to drop it")
    assert a.drop("blink") is False


def test_activate_restarts_deadlines(replicas: tuple[RedisStore, RedisStore]) -> None:
    a, _ = replicas
    first = a.ensure("j", T0)
    assert first.first_seen == T0 and a.ensure("j", T0 + 5) == first
    assert a.activate("j", T0 + 10).active_since == T0 + 10


def test_definitions_and_runtime_records_are_shared(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    a.put_definitions({"j": {"job_name": "j", "automatic_failure_threshold": 60}})
    assert b.definitions() == {"j": {"job_name": "j", "automatic_failure_threshold": 60}}
    a.put_record("window", "w2", {"end": 2}, T0)
    a.put_record("window", "w1", {"end": 1}, T0)
    assert [r.key for r in b.list_records("window")] == ["w1", "w2"]
    got = b.get_record("window", "w1")
    assert got is not None and got.value == {"end": 1} and got.updated == T0
    assert b.delete_record("window", "w1") and not b.delete_record("window", "w1")
    assert b.get_record("window", "w1") is None


def test_a_replica_starting_late_loads_every_state(redis: RedisServer) -> None:
    writer = RedisStore(redis.url)
    writer.mirror.wait_loaded(10)
    batch = [result(f"job-{i}", ts=T0) for i in range(5000)]
    for start in range(0, len(batch), 1000):
        writer.record(batch[start : start + 1000], T0)
    late = RedisStore(redis.url)
    try:
        assert late.mirror.wait_loaded(10)
        assert len(late.ids()) == 5000
        assert late.states(["job-4999"])["job-4999"].runs_total == 1
    finally:
        late.close()
        writer.close()


def test_kill_9_of_redis_loses_nothing_acknowledged_and_both_recover(
    redis: RedisServer, replicas: tuple[RedisStore, RedisStore]
) -> None:
    a, b = replicas
    for i in range(50):
        a.record([result("k", ts=T0 + i)], T0 + i)
    redis.kill()
    with pytest.raises(StoreUnavailable) as caught:
        a.record([result("k", ts=T0 + 60)], T0 + 60)
    assert "unreachable" in caught.value.message and caught.value.http_status == 503
    wait_for(lambda: not b.health().ok, "B to notice")
    assert "unreachable" in b.health().detail
    redis.start()  # empty script cache: the next call must reload its script
    wait_for(lambda: a.health().ok and b.health().ok, "both to reconnect", timeout=15)
    (rec,) = b.record([result("k", ts=T0 + 61)], T0 + 61)
    assert rec.state.runs_total == 51
    wait_for(lambda: (s := a.state("k")) is not None and s.runs_total == 51, "A to mirror")


def test_a_redis_down_at_start_is_reported_and_picked_up_when_it_comes(
    redis: RedisServer,
) -> None:
    redis.stop()
    store = RedisStore(redis.url)
    try:
        assert store.problems()[0].startswith("the Redis store redis://127.0.0.1:")
        provisional = store.ensure("early", T0)  # served as new meanwhile
        assert provisional.runs_total == 0
        wait_for(lambda: store.mirror.error is not None, "the first failed connect")
        assert not store.health().ok
        redis.start()
        wait_for(lambda: store.health().ok, "the store to come up", timeout=15)
        wait_for(lambda: store.state("early") is not None, "the pending job written")
        assert "early" in redis_py.Redis.from_url(redis.url).hkeys("cm:states")[0].decode()
    finally:
        store.close()


def test_problems_name_an_evicting_policy_and_a_wrong_password(redis: RedisServer) -> None:
    client = redis_py.Redis.from_url(redis.url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    store = RedisStore(redis.url, start=False)
    assert any("maxmemory-policy allkeys-lru" in p for p in store.problems())
    client.config_set("requirepass", "right")
    wrong = RedisStore(redis.url.replace("//", "//:wrong@"), start=False)
    assert "refused the password" in wrong.problems()[0]
    assert "wrong" not in wrong.problems()[0]


def test_the_tail_skips_what_this_process_wrote_and_takes_the_rest() -> None:
    """Stream entries of the mirror's own writes are not decoded again nor announced;
    another replica's are, the newest entry of a job winning within a batch."""
    from cronmetrics.storage.interface import new_state
    from cronmetrics.storage.redismirror import Mirror, encode_state

    calls: list[int] = []
    mirror = Mirror(None, "cm:", on_change=lambda: calls.append(1))
    own = dataclasses.replace(new_state("own", T0), version=3)
    mirror.put([own])
    mirror._apply([("1-0", {"j": "own", "s": encode_state(own)})])
    assert calls == []  # our own write, already held
    other = [dataclasses.replace(new_state("b", T0), version=v, runs_total=v) for v in (1, 2)]
    mirror._apply([("2-0", {"j": "b", "s": encode_state(s)}) for s in other])
    assert calls == [1]
    assert mirror.get("b") == other[1] and mirror.get("own") == own


def test_a_replica_does_not_reevaluate_its_own_results_from_the_stream(
    redis: RedisServer, make_client: Any, fake_clock: Any
) -> None:
    client = make_client(
        {"a.yaml": "job_name: a\nautomatic_failure_threshold: 60\n"}, store=redis.url
    )
    svc = client.application.extensions["cronmetrics"]
    svc.store.mirror.subscribe(lambda: None)  # the test calls sync, not the tail
    assert (
        client.post("/api/job-result", json={"job_name": "a", "status": "success"}).status_code
        == 200
    )
    state = svc.store.state("a")
    assert state is not None and state.runs_total == 1
    assert svc.monitor.sync(fake_clock()) == []  # evaluated when it was recorded
    other = RedisStore(redis.url)
    try:
        other.record([result("a", ts=fake_clock())], fake_clock())
        wait_for(lambda: svc.monitor.sync(fake_clock()) == ["a"], "A to take in B's result")
    finally:
        other.close()
    svc.shutdown()


def test_a_smaller_history_limit_cuts_every_history_now_and_on_the_next_result(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    for job in ("x", "y"):
        a.record([result(job, ts=T0 + i, exit_code=i) for i in range(5)], T0 + 5)
    a.record([result("z", ts=T0)], T0)
    wait_for(lambda: {"x", "y", "z"} <= set(b.ids()), "B to mirror the jobs")
    assert b.set_max_results(5) == []  # unchanged: nothing to do
    assert sorted(b.set_max_results(2)) == ["x", "y"]
    assert [r.exit_code for r in a.history("x")] == [4, 3]  # on every replica at once
    assert len(a.history("z")) == 1
    b.record([result("y", ts=T0 + 9, exit_code=9)], T0 + 9)
    assert [r.exit_code for r in b.history("y")] == [9, 4]
    assert b.set_max_results(10) == []
    b.record([result("y", ts=T0 + 10, exit_code=10)], T0 + 10)
    assert [r.exit_code for r in b.history("y")] == [10, 9, 4]


def test_a_first_start_writes_new_job_states_in_batches(redis: RedisServer) -> None:
    store = RedisStore(redis.url)
    try:
        assert store.mirror.wait_loaded(10)
        client = redis_py.Redis.from_url(redis.url)
        store.ensure("first", T0)  # loads the script
        client.config_resetstat()
        ids = [f"job{i}" for i in range(1200)]
        states = store.ensure_many(ids, T0)
        assert set(states) == set(ids) and all(s.first_seen == T0 for s in states.values())
        calls = client.info("commandstats")["cmdstat_evalsha"]["calls"]
        assert calls == 3  # 500 jobs a call
        assert client.hlen("cm:states") == 1201
        assert store.ensure_many(ids, T0 + 5) == states  # held already: no call
        assert client.info("commandstats")["cmdstat_evalsha"]["calls"] == calls
    finally:
        store.close()
