"""Hot reload through the real watcher thread of a running app (and one gunicorn server).

Every test changes files the way a real tool does and then waits (with a timeout) for the
monitor to show the change; the periodic full rescan is pushed out of the way so only
the watcher can make a test pass.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask

from cronmetrics.config import load_config
from cronmetrics.jobs.watcher import Watcher
from cronmetrics.web.app import Services, create_app, services

TIMEOUT = 15.0


def job(name: str, threshold: int = 60, extra: str = "") -> str:
    return f"job_name: {name}\nautomatic_failure_threshold: {threshold}\n{extra}"


@dataclass
class Running:
    app: Flask
    svc: Services
    watcher: Watcher
    root: Path

    def wait(self, predicate: Callable[[], bool]) -> None:
        assert self.watcher.wait(predicate, TIMEOUT), "the change never became live"

    def threshold(self, job_id: str) -> int | None:
        definition = self.svc.monitor.definitions.get(job_id)
        return None if definition is None else definition.automatic_failure_threshold

    def metrics(self) -> str:
        return self.app.test_client().get("/metrics").get_data(as_text=True)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Services] = []

    def run(jobs_dir: Path, **watch: Any) -> Running:
        config = load_config(
            None,
            jobs_dir=jobs_dir,
            state_dir=tmp_path / "state",
            no_auth=True,
            watch={"rescan_interval": 3600.0, **watch},
        )
        app = create_app(config, start_background=True)
        svc = services(app)
        started.append(svc)
        watcher = svc.watcher
        assert watcher is not None
        assert watcher.ready.wait(TIMEOUT)
        return Running(app, svc, watcher, jobs_dir)

    yield run
    for svc in started:
        svc.shutdown()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs.d"
    (jobs / "team").mkdir(parents=True)
    (jobs / "a.yaml").write_text(job("a"))
    (jobs / "team" / "b.yaml").write_text(job("b"))
    return jobs


def test_new_file_is_loaded(start: Callable[..., Running], root: Path) -> None:
    run = start(root)
    (root / "team" / "c.yaml").write_text(job("c"))
    run.wait(lambda: "c" in run.svc.monitor.definitions)


def test_editor_style_atomic_rename_is_loaded(start: Callable[..., Running], root: Path) -> None:
    run = start(root)
    tmp = root / ".a.yaml.swp"
    tmp.write_text(job("a", 120))
    tmp.replace(root / "a.yaml")
    run.wait(lambda: run.threshold("a") == 120)


def test_edit_changes_definition_and_keeps_results(
    start: Callable[..., Running], root: Path
) -> None:
    run = start(root)
    client = run.app.test_client()
    assert client.post("/api/job-result", json={"job_name": "a", "status": "success"}).status_code
    (root / "a.yaml").write_text(job("a", 300, "labels: {env: prod}\n"))
    run.wait(lambda: run.threshold("a") == 300)
    assert run.svc.monitor.view("a").state.runs_total == 1
    assert 'cronjob_threshold_seconds{job_name="a",host="",env="prod"} 300' in run.metrics()


def test_broken_edit_keeps_last_good_definition_and_says_so(
    start: Callable[..., Running], root: Path
) -> None:
    run = start(root)
    (root / "team" / "b.yaml").write_text("job_name: b\nautomatic_failure_threshold: soon\n")
    run.wait(lambda: run.svc.last_reload is not None and not run.svc.last_reload.ok)
    assert run.threshold("b") == 60  # the last good definition is still live
    text = run.metrics()
    assert "cronmetrics_config_last_reload_successful 0.0" in text
    assert "cronmetrics_config_invalid_files 1.0" in text
    deep = run.app.test_client().get("/health/deep")
    assert deep.status_code == 200  # still serving: it stays in rotation, and says why
    assert deep.get_json()["warnings"] == ["reload"]
    assert "team/b.yaml" in deep.get_json()["checks"]["reload"]["detail"]
    (root / "team" / "b.yaml").write_text(job("b", 90))
    run.wait(lambda: run.threshold("b") == 90)
    assert "cronmetrics_config_last_reload_successful 1.0" in run.metrics()


def test_deleted_file_removes_the_job_and_its_series(
    start: Callable[..., Running], root: Path
) -> None:
    run = start(root)
    (root / "team" / "b.yaml").unlink()
    run.wait(lambda: "b" not in run.svc.monitor.definitions)
    assert 'job_name="b"' not in run.metrics()


def test_checkout_of_300_files_is_a_few_reloads(start: Callable[..., Running], root: Path) -> None:
    run = start(root)
    before = run.watcher.reloads
    for index in range(300):  # what `git checkout` does: many files, back to back
        (root / "team" / f"gen{index}.yaml").write_text(job(f"gen{index}", 60 + index))
    run.wait(lambda: "gen299" in run.svc.monitor.definitions)
    assert len(run.svc.monitor.definitions) == 302
    assert run.watcher.reloads - before <= 5


def test_configmap_data_symlink_swap_is_loaded(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    """kubelet's atomic writer: only dot-entries change; the visible names are symlinks."""
    root = tmp_path / "configmap"
    first = root / "..2026_01_01_00_00_00.1"
    first.mkdir(parents=True)
    (first / "a.yaml").write_text(job("a"))
    (root / "..data").symlink_to(first.name)
    (root / "a.yaml").symlink_to("..data/a.yaml")
    run = start(root)
    assert run.threshold("a") == 60

    second = root / "..2026_01_01_00_05_00.2"
    second.mkdir()
    (second / "a.yaml").write_text(job("a", 600))
    (root / "..data_tmp").symlink_to(second.name)
    (root / "..data_tmp").replace(root / "..data")
    for path in first.iterdir():
        path.unlink()
    first.rmdir()
    run.wait(lambda: run.threshold("a") == 600)


def test_git_sync_worktree_flip_is_loaded(start: Callable[..., Running], tmp_path: Path) -> None:
    """git-sync: the jobs dir is a symlink to a worktree; a sync swaps the link atomically.

    The old worktree is left in place, so no event happens below the watched directory:
    only the watcher's check of where the jobs dir resolves can see the flip.
    """
    base = tmp_path / "git"
    old = base / ".worktrees" / "1111"
    old.mkdir(parents=True)
    (old / "a.yaml").write_text(job("a"))
    link = base / "jobs"
    link.symlink_to(".worktrees/1111")
    run = start(link)
    assert run.threshold("a") == 60

    new = base / ".worktrees" / "2222"
    new.mkdir()
    (new / "a.yaml").write_text(job("a", 900))
    (new / "z.yaml").write_text(job("z"))
    (base / "jobs.tmp").symlink_to(".worktrees/2222")
    (base / "jobs.tmp").replace(link)
    run.wait(lambda: run.threshold("a") == 900 and "z" in run.svc.monitor.definitions)
    run.wait(lambda: run.watcher.watching == os.path.realpath(new))

    (new / "a.yaml").write_text(job("a", 901))  # and the new worktree is watched
    run.wait(lambda: run.threshold("a") == 901)


def test_jobs_dir_deleted_and_recreated_is_watched_again(
    start: Callable[..., Running], root: Path
) -> None:
    run = start(root)
    shutil.rmtree(root)
    root.mkdir()
    (root / "a.yaml").write_text(job("a", 77))
    run.wait(lambda: run.threshold("a") == 77 and run.watcher.ready.is_set())
    (root / "a.yaml").write_text(job("a", 78))  # events from the new directory arrive
    run.wait(lambda: run.threshold("a") == 78)


def test_api_write_is_not_reloaded_twice(start: Callable[..., Running], root: Path) -> None:
    run = start(root)
    client = run.app.test_client()
    batches, reloads = run.watcher.batches, run.watcher.reloads
    response = client.post("/api/job", json={"job_name": "n", "automatic_failure_threshold": 5})
    assert response.status_code == 201
    assert run.threshold("n") == 5  # live at once, before any event was handled
    run.wait(lambda: run.watcher.batches > batches)  # the events of our own write arrive...
    assert run.watcher.reloads == reloads  # ...and are recognised as applied already
    assert run.watcher.skipped >= 1


def test_polling_mode_sees_changes(start: Callable[..., Running], root: Path) -> None:
    run = start(root, poll=True, poll_interval=0.2)
    assert run.watcher.polling
    (root / "p.yaml").write_text(job("p"))
    run.wait(lambda: "p" in run.svc.monitor.definitions)


def test_watcher_stops_with_the_app(start: Callable[..., Running], root: Path) -> None:
    run = start(root)
    assert run.svc.health()["watcher"][0]
    run.svc.shutdown()
    assert not run.watcher.alive


@pytest.mark.slow
def test_live_server_shows_a_file_edit_in_metrics(tmp_path: Path, root: Path) -> None:
    from liveserver import live_server

    with live_server(root, tmp_path / "state") as server:
        before = httpx.get(f"{server.url}/metrics").text
        assert 'cronjob_threshold_seconds{job_name="a",host=""} 60' in before
        (root / "a.yaml").write_text(job("a", 4242))
        deadline = time.monotonic() + TIMEOUT
        wanted = 'cronjob_threshold_seconds{job_name="a",host=""} 4242'
        text = before
        while wanted not in text and time.monotonic() < deadline:
            time.sleep(0.05)  # polling an HTTP endpoint: no event to wait on across processes
            text = httpx.get(f"{server.url}/metrics").text
        assert wanted in text, server.log()[-2000:]
