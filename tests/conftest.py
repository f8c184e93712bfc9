"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path to ``promtool``; skips the test locally, fails it in CI (``CI=true``)."""
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not on PATH (Debian: apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def design_metric_names() -> frozenset[str]:
    """The metric names of DESIGN.md section 6, from tests/data/metric_names.txt."""
    lines = (TESTS_DIR / "data" / "metric_names.txt").read_text().splitlines()
    return frozenset(s for line in lines if (s := line.strip()) and not s.startswith("#"))


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    """A jobs.d with a copy of the bundled example jobs."""
    target = tmp_path / "jobs.d"
    shutil.copytree(REPO_ROOT / "jobs.d", target)
    return target


@pytest.fixture
def server(jobs_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real ``cronmetrics serve --no-auth`` (gunicorn) on a free loopback port."""
    from liveserver import live_server

    with live_server(jobs_dir, tmp_path / "state") as live:
        yield live
