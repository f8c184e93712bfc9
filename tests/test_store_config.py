"""The ``store`` setting: embedded by default, a Redis URL from file, env or flag."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cronmetrics.web.server as server_mod
from cronmetrics.cli.main import main
from cronmetrics.config import load_config
from cronmetrics.errors import ConfigError
from cronmetrics.storeurl import SentinelURL, mask_url_password, parse_sentinel_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("CRONMETRICS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


def test_the_default_store_is_the_embedded_engine() -> None:
    config = load_config()
    assert config.store == "embedded"
    assert not config.redis


def test_flag_wins_over_environment_which_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: redis://file:6379/0\n")
    assert load_config(path).store == "redis://file:6379/0"
    monkeypatch.setenv("CRONMETRICS_STORE", "redis://env:6379/1")
    assert load_config(path).store == "redis://env:6379/1"
    assert load_config(path, store="rediss://flag:6380/2").store == "rediss://flag:6380/2"
    assert load_config(path, store="rediss://flag:6380/2").redis


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://redis:6379", "must be 'embedded' or redis://"),
        ("redis://redis:70000/0", "port 70000 is out of range"),
        ("redis://redis:6379/16", "database number must be 0-15"),
        ("redis://redis:6379/0?ssl_ca_certs=/ca.pem", "needs a rediss://"),
        ("redis://redis:6379/0?max_conections=3", "unknown store URL option 'max_conections'"),
        ("redis+sentinel://s1:26379/", "must be redis+sentinel://"),
        ("redis+sentinel://s1:26379,s2:99999/cm/0", "port 99999 is out of range"),
        ("redis+sentinel://s1/cm/0?ssl_ca_certs=/ca.pem", "needs a rediss+sentinel:// (TLS)"),
        ("redis+sentinel://s1/cm/0?max_conections=3", "unknown store URL option"),
        ("rediss+sentinel://s1/cm/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be none, optional"),
        ("rediss://r:6380/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be none, optional"),
        ("rediss://r:6380/0?ssl_check_hostname=perhaps", "must be true or false"),
        ("rediss+sentinal://s1/cm/0", "rediss+sentinel:// with TLS"),
        ("rediss+sentinel://s1/cm/0?ssl_check_hostname=perhaps", "must be true or false"),
        ("redis+sentinel://s1/cm/0?socket_timeout=soon", "socket_timeout must be a number"),
    ],
)
def test_a_bad_store_url_is_refused_with_a_line_naming_it(
    tmp_path: Path, url: str, message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"store: '{url}'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}:1:" in caught.value.message
    assert message in caught.value.message


def test_tls_options_ride_on_a_rediss_url() -> None:
    url = "rediss://:pw@redis.internal:6380/3?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
    assert load_config(None, store=url).store == url


def test_config_show_masks_the_store_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: 'redis://:hunter2@127.0.0.1:6379/0'\n")
    main(["config", "show", "--config", str(path), "-o", "json"])
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "redis://:***@127.0.0.1:6379/0" in out
    assert mask_url_password("redis://user:p@ss@h:1/0") == "redis://user:***@ss@h:1/0"
    assert mask_url_password("redis://h:1/0") == "redis://h:1/0"


def serve_args(jobs_dir: Path, state_dir: Path, *extra: str) -> list[str]:
    return [
        "serve",
        "--jobs-dir",
        str(jobs_dir),
        "--state-dir",
        str(state_dir),
        "--no-auth",
        *extra,
    ]


def test_more_than_one_worker_without_redis_is_refused(
    jobs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(serve_args(jobs_dir, tmp_path / "state", "--workers", "2"))
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--workers 2 needs a Redis store" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("key", ["store_password_file", "store_sentinel_password_file"])
def test_an_unreadable_password_file_is_refused_at_start(
    jobs_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    key: str,
) -> None:
    missing = tmp_path / "nope" / "redis-password"
    monkeypatch.setenv(f"CRONMETRICS_{key.upper()}", str(missing))
    url = "redis+sentinel://127.0.0.1:1/cm/0"
    with pytest.raises(SystemExit) as caught:
        main(serve_args(jobs_dir, tmp_path / "state", "--store", url))
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"{key} {missing} cannot be read" in err
    assert "Traceback" not in err


def test_a_sentinel_password_without_a_sentinel_store_is_refused_at_start(
    jobs_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = tmp_path / "sentinel-password"
    secret.write_text("s3nt\n")
    monkeypatch.setenv("CRONMETRICS_STORE_SENTINEL_PASSWORD_FILE", str(secret))
    with pytest.raises(SystemExit) as caught:
        main(serve_args(jobs_dir, tmp_path / "state", "--store", "redis://127.0.0.1:1/0"))
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "store_sentinel_password_file is set but the store is not redis+sentinel://" in err
    assert "or rediss+sentinel://" in err
    assert "Traceback" not in err


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    url = "redis+sentinel://:s3cret@10.0.0.1,10.0.0.2:26380,[::1]:5000/cronmetrics/3"
    assert load_config(store=url + "?socket_timeout=2").redis
    assert parse_sentinel_url(url + "?socket_timeout=2") == SentinelURL(
        (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 5000)),
        "cronmetrics",
        3,
        "s3cret",
        None,
        {"socket_timeout": 2.0},
    )
    assert mask_url_password(url) == url.replace("s3cret", "***")
    assert parse_sentinel_url("redis://host:6379/0") is None


def test_a_tls_sentinel_url_carries_its_tls_options_for_sentinels_and_primary() -> None:
    url = "rediss+sentinel://:pw@s1,s2:26380/cm/1?ssl_ca_certs=/etc/ca%20s.pem&ssl_check_hostname=false"
    assert load_config(store=url).redis
    spec = parse_sentinel_url(url)
    assert spec is not None and spec.tls
    assert spec.ssl == {"ssl_ca_certs": "/etc/ca s.pem", "ssl_check_hostname": False}
    assert spec.sentinels == (("s1", 26379), ("s2", 26380)) and spec.db == 1
    assert mask_url_password(url).startswith("rediss+sentinel://:***@s1")


@pytest.mark.parametrize(
    ("env", "flags", "threads"),
    [
        ({}, [], 8),
        ({"CRONMETRICS_SNAPSHOT__JOURNAL": "true"}, [], 32),
        ({"CRONMETRICS_SNAPSHOT__JOURNAL": "true"}, ["--threads", "4"], 4),
        ({"CRONMETRICS_SNAPSHOT__JOURNAL": "true"}, ["--store", "redis://127.0.0.1:1/0"], 8),
    ],
)
def test_journaled_submissions_get_more_request_threads_by_default(
    jobs_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    flags: list[str],
    threads: int,
) -> None:
    """A journaled request waits for its group's commit, and a group is as large as the
    threads waiting: the journal gets 32 unless told otherwise."""
    started: list[int] = []

    class Recorded:
        def __init__(self, config: object, *, threads: int, **_: object) -> None:
            started.append(threads)

        def run(self) -> None:
            pass

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(server_mod, "Server", Recorded)
    main(serve_args(jobs_dir, tmp_path / "state", *flags))
    assert started == [threads]
