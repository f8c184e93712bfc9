"""Live config: a reload applies tokens, limits, redaction, policy and log level at once;
an invalid file keeps the running config; keys that need a restart are refused by name."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronmetrics.web.app import create_app, services
from cronmetrics.web.auth import hash_token
from cronmetrics.web.reconfigure import ConfigReloader, ConfigSource

OLD, NEW = "cm_old-token-0123456789abcdef", "cm_new-token-0123456789abcdef"
JOB = "job_name: backup\nautomatic_failure_threshold: 3600\n"


def config_text(token: str = OLD, *, extra: str = "", name: str = "ops") -> str:
    return (
        "auth:\n  tokens:\n"
        f'    - {{name: {name}, sha256: "{hash_token(token)}", scopes: [admin, submit, read]}}\n'
        + extra
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Live:
    """An app built from a config file, and its reloader (no thread: reload() by hand)."""

    def __init__(self, tmp_path: Path, fake_clock: Any, text: str) -> None:
        self.path = tmp_path / "cronmetrics.yaml"
        self.path.write_text(text)
        jobs = tmp_path / "jobs.d"
        jobs.mkdir(exist_ok=True)
        (jobs / "backup.yaml").write_text(JOB)
        self.source = ConfigSource(self.path, {"jobs_dir": jobs, "state_dir": tmp_path / "state"})
        app = create_app(
            self.source.load(), clock=fake_clock, start_background=False, source=self.source
        )
        self.client: FlaskClient = app.test_client()
        self.svc = services(app)
        reloader = self.svc.config_reloader
        assert reloader is not None
        self.reloader: ConfigReloader = reloader

    def rewrite(self, text: str) -> Any:
        self.path.write_text(text)
        return self.reloader.reload("test")

    def ping(self, token: str, data: bytes = b"", job: str = "backup") -> int:
        response = self.client.post(f"/api/ping/{job}/success", headers=bearer(token), data=data)
        return response.status_code

    def metric(self, name: str) -> float:
        for line in self.client.get("/metrics").get_data(as_text=True).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not exported")


@pytest.fixture
def live(tmp_path: Path, fake_clock: Any) -> Callable[..., Live]:
    return lambda text=None: Live(tmp_path, fake_clock, text or config_text())


def test_a_rotated_token_works_at_once_and_the_old_one_is_refused(
    live: Callable[..., Live],
) -> None:
    run = live()
    assert (run.ping(OLD), run.ping(NEW)) == (200, 401)
    outcome = run.rewrite(config_text(NEW))
    assert outcome.ok and outcome.changed == ("auth",)
    assert (run.ping(OLD), run.ping(NEW)) == (401, 200)
    assert run.metric("cronmetrics_config_file_last_reload_successful") == 1
    assert run.metric("cronmetrics_config_file_last_reload_success_timestamp_seconds") > 0


def test_scopes_and_job_globs_change_with_the_tokens(live: Callable[..., Live]) -> None:
    run = live()
    entry = f'    - {{name: ro, sha256: "{hash_token(NEW)}", scopes: [read]}}\n'
    run.rewrite(config_text() + entry)
    assert run.client.get("/api/job", headers=bearer(NEW)).status_code == 200
    assert run.ping(NEW) == 403
    narrowed = f'    - {{name: ro, sha256: "{hash_token(NEW)}", scopes: [submit], jobs: ["x*"]}}\n'
    run.rewrite(config_text() + narrowed)
    assert run.ping(NEW) == 403  # backup is outside its glob
    assert run.client.get("/api/job", headers=bearer(NEW)).status_code == 403


def test_limits_redaction_unknown_jobs_and_retention_apply_on_reload(
    live: Callable[..., Live],
) -> None:
    run = live()
    assert run.ping(OLD, b"x" * 3000) == 200
    assert run.ping(OLD, job="ghost") == 404
    extra = (
        "limits: {max_body_bytes: 2048, max_output_bytes: 100}\n"
        "redact: ['hunter\\d']\n"
        "unknown_jobs: accept\n"
        "retention: {max_results_per_job: 2}\n"
    )
    outcome = run.rewrite(config_text(extra=extra))
    assert set(outcome.changed) == {"limits", "redact", "unknown_jobs", "retention"}
    too_big = run.client.post("/api/ping/backup/success", headers=bearer(OLD), data=b"x" * 3000)
    assert too_big.status_code == 413
    assert "2048" in too_big.get_json()["error"]["message"]
    assert run.ping(OLD, b"pw hunter2 " + b"y" * 500) == 200
    history = run.svc.monitor.store.history("backup")
    assert len(history) == 2  # cut to the new max_results_per_job
    output = history[0].output or ""  # newest first
    assert "hunter2" not in output and len(output.encode()) <= 100
    assert run.ping(OLD, job="ghost") == 200  # accepted as unmanaged now


def test_maintenance_bounds_apply_on_reload(live: Callable[..., Live]) -> None:
    run = live()

    def ask(duration: str) -> Any:
        body = {"matchers": ["job_name=backup"], "duration": duration, "comment": "swap"}
        return run.client.post("/api/maintenance", headers=bearer(OLD), json=body)

    assert ask("2h").status_code == 201
    outcome = run.rewrite(config_text(extra="maintenance: {max_duration: 3600}\n"))
    assert outcome.ok and outcome.changed == ("maintenance",)
    refused = ask("2h")
    assert refused.status_code == 400
    assert "maintenance.max_duration" in refused.get_json()["error"]["message"]
    assert ask("30m").status_code == 201


def test_the_log_level_changes_on_reload(live: Callable[..., Live]) -> None:
    run = live()
    package = logging.getLogger("cronmetrics")
    assert package.level == logging.INFO
    run.rewrite(config_text(extra="log: {level: debug}\n"))
    assert package.level == logging.DEBUG
    run.rewrite(config_text())
    assert package.level == logging.INFO


def test_an_invalid_file_keeps_the_running_config_and_says_where(
    live: Callable[..., Live], package_log: pytest.LogCaptureFixture
) -> None:
    run = live()
    bad = config_text(NEW, extra="limits: {max_body_bytes: 10}\nretention: {dayz: 3}\n")
    with package_log.at_level(logging.ERROR, logger="cronmetrics"):
        outcome = run.rewrite(bad)
    assert not outcome.ok and len(outcome.problems) == 2
    lines = [r.getMessage() for r in package_log.records if "invalid config" in r.getMessage()]
    assert len(lines) == 2  # every problem, each with file:line
    assert any(f"{run.path}:4:" in line and "max_body_bytes" in line for line in lines)
    assert any(f"{run.path}:5:" in line and "dayz" in line for line in lines)
    assert (run.ping(OLD), run.ping(NEW)) == (200, 401)  # the old config is in force
    assert run.metric("cronmetrics_config_file_last_reload_successful") == 0
    deep = run.client.get("/health/deep")
    assert deep.status_code == 200  # still serving, on the old config
    body = deep.get_json()
    assert body["warnings"] == ["config_file"]
    assert "max_body_bytes" in body["checks"]["config_file"]["detail"]
    run.rewrite(config_text(NEW))
    assert run.metric("cronmetrics_config_file_last_reload_successful") == 1
    assert run.client.get("/health/deep").get_json()["warnings"] == []


def test_a_yaml_error_and_a_missing_file_keep_the_running_config(
    live: Callable[..., Live],
) -> None:
    run = live()
    outcome = run.rewrite("auth: {tokens: [\n")
    assert not outcome.ok and str(run.path) in outcome.problems[0]
    run.path.unlink()
    outcome = run.reloader.reload("test")
    assert not outcome.ok and "cannot read config file" in outcome.problems[0]
    assert run.ping(OLD) == 200


def test_removing_every_token_is_refused_not_an_open_server(live: Callable[..., Live]) -> None:
    run = live()
    outcome = run.rewrite("auth: {tokens: []}\n")
    assert not outcome.ok and "--no-auth" in outcome.problems[0]
    assert run.ping(OLD) == 200
    assert run.client.post("/api/ping/backup/success").status_code == 401


def test_keys_that_need_a_restart_are_refused_by_name_and_the_rest_applies(
    live: Callable[..., Live], tmp_path: Path, package_log: pytest.LogCaptureFixture
) -> None:
    run = live()
    extra = "bind: 127.0.0.1:1\nsnapshot: {interval: 5}\n"
    with package_log.at_level(logging.WARNING, logger="cronmetrics"):
        outcome = run.rewrite(config_text(NEW, extra=extra))
    assert outcome.ok
    assert outcome.changed == ("auth",)
    assert outcome.restart_required == ("bind", "snapshot")
    refused = [r.getMessage() for r in package_log.records if "needs a restart" in r.getMessage()]
    assert len(refused) == 2
    assert refused[0].startswith("config key 'bind' changed in")
    assert "0.0.0.0:9479" in refused[0]
    assert run.svc.config.bind == "0.0.0.0:9479"  # what really runs
    assert run.svc.config.snapshot.interval == 10
    assert run.ping(NEW) == 200
    assert run.metric("cronmetrics_config_file_restart_required") == 1
    deep = run.client.get("/health/deep").get_json()
    assert deep["warnings"] == ["config_file"]
    assert "needs a restart for bind, snapshot" in deep["checks"]["config_file"]["detail"]


def test_the_failure_limiter_keeps_its_counts_across_a_token_rotation(
    live: Callable[..., Live],
) -> None:
    run = live()
    limiter = run.svc.auth.limiter
    run.ping("cm_wrong")
    run.rewrite(config_text(NEW))
    assert run.svc.auth.limiter is limiter and len(limiter) == 1
    run.rewrite(config_text(NEW, extra="auth_extra: 1\n"))  # invalid: nothing changes
    assert run.svc.auth.limiter is limiter


def test_the_watcher_reloads_when_the_file_changes_on_disk(live: Callable[..., Live]) -> None:
    run = live()
    run.reloader.interval = 0.05
    run.reloader.start()
    try:
        run.path.write_text(config_text(NEW))
        deadline = time.monotonic() + 10
        while run.ping(NEW) != 200:
            assert time.monotonic() < deadline, "the change on disk was never applied"
            time.sleep(0.05)
        assert run.ping(OLD) == 401
        reloads = run.reloader.reloads
        run.path.touch()  # same bytes: nothing to do
        time.sleep(0.3)
        assert run.reloader.reloads == reloads
        run.reloader.request()  # SIGHUP: reads it whatever the stat says
        deadline = time.monotonic() + 10
        while run.reloader.reloads == reloads:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        run.reloader.stop()
    check = run.svc.health()["config_file"]  # a watcher that died fails readiness
    assert (check.ok, check.critical) == (False, True)


def test_the_whole_config_file_of_the_docs_loads(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parent.parent / "docs"
    text = (docs / "configuration.md").read_text()
    block = text.split("A whole config file", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "config.yaml"
    path.write_text(block.replace("<hex>", hash_token(OLD)))
    config = ConfigSource(path).load()
    assert [t.name for t in config.auth.tokens] == ["ops", "backups", "grafana"]
    assert config.tls is not None


def test_a_smaller_history_limit_applies_on_reload_with_the_redis_engine(
    live: Callable[..., Live], redis: Any
) -> None:
    store = f"store: {redis.url}\n"
    run = live(config_text(extra=store + "retention: {max_results_per_job: 5}\n"))
    for _ in range(4):
        assert run.ping(OLD) == 200
    assert len(run.svc.store.history("backup")) == 4
    outcome = run.rewrite(config_text(extra=store + "retention: {max_results_per_job: 2}\n"))
    assert outcome.changed == ("retention",)
    assert len(run.svc.store.history("backup")) == 2  # cut in Redis at once
    assert run.ping(OLD) == 200
    assert len(run.svc.store.history("backup")) == 2  # and at each result after
    run.svc.shutdown()
