"""The tests' redis-server: its own port and dir, and a kill -9 that keeps what AOF kept."""

from __future__ import annotations

import redis as redis_py
from redisserver import RedisServer


def test_the_fixture_runs_a_private_redis_with_an_fsynced_aof(redis: RedisServer) -> None:
    client = redis_py.Redis.from_url(redis.url)
    config = client.config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "always"
    assert config["save"] == ""
    assert config["dir"] == str(redis.dir)
    assert config["bind"] == "127.0.0.1"
    client.close()


def test_a_kill_9_and_a_restart_keep_every_acknowledged_write(redis: RedisServer) -> None:
    client = redis_py.Redis.from_url(redis.url)
    for i in range(200):
        client.rpush("acked", i)
    client.close()
    redis.restart_after_kill()
    assert (redis.dir / "appendonlydir").is_dir()
    client = redis_py.Redis.from_url(redis.url, decode_responses=True)
    assert client.lrange("acked", 0, -1) == [str(i) for i in range(200)]
    client.close()
