"""Shared pytest fixtures."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def required_tool(name: str, package: str = "prometheus") -> str:
    """Path to a program of a Debian package (``prometheus`` by default); skips the test
    locally, fails it in CI (``CI=true``), where .ci/run installs it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not on PATH (Debian: apt-get install {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return required_tool("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    """Alertmanager's config checker (Debian: prometheus-alertmanager)."""
    return required_tool("amtool")


@pytest.fixture(scope="session")
def design_metric_names() -> frozenset[str]:
    """The exported metric names (docs/prometheus.md), from tests/data/metric_names.txt."""
    lines = (TESTS_DIR / "data" / "metric_names.txt").read_text().splitlines()
    return frozenset(s for line in lines if (s := line.strip()) and not s.startswith("#"))


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    """A jobs.d with a copy of the bundled example jobs."""
    target = tmp_path / "jobs.d"
    shutil.copytree(REPO_ROOT / "jobs.d", target)
    return target


@pytest.fixture
def threshold_jobs(tmp_path: Path) -> Callable[..., Path]:
    """Make ``tmp_path/jobs.d`` with one job per name (host-agnostic, 3600 s threshold)."""

    def make(*names: str) -> Path:
        root = tmp_path / "jobs.d"
        root.mkdir()
        for name in names:
            (root / f"{name}.yaml").write_text(
                f"job_name: {name}\nautomatic_failure_threshold: 3600\n"
            )
        return root

    return make


@pytest.fixture(scope="module")
def bundled_url(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One real server on a copy of the bundled jobs.d for a whole test module: for
    client commands that only need something to talk to."""
    from liveserver import live_server

    root = tmp_path_factory.mktemp("bundled")
    shutil.copytree(REPO_ROOT / "jobs.d", root / "jobs.d")
    with live_server(root / "jobs.d", root / "state") as live:
        yield live.url


@pytest.fixture
def server(jobs_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real ``cronmetrics serve --no-auth`` (gunicorn) on a free loopback port."""
    from liveserver import live_server

    with live_server(jobs_dir, tmp_path / "state") as live:
        yield live


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return required_tool("prometheus")


@pytest.fixture(scope="session")
def redis_server_bin() -> str:
    return required_tool("redis-server", "redis-server")


@pytest.fixture(scope="session")
def curl_bin() -> str:
    return required_tool("curl", "curl")


@pytest.fixture
def redis(redis_server_bin: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real ``redis-server`` on a free loopback port with its own dir and AOF
    (``appendfsync always``); ``redis.kill()`` / ``redis.start()`` for crash tests."""
    from redisserver import redis_server

    with redis_server(redis_server_bin, tmp_path / "redis") as server:
        yield server


#: 2026-01-05T00:00:00Z, a Monday: the fake clock's start in API tests
T0 = 1_767_571_200.0


class FakeClock:
    """A clock tests move by hand: ``create_app(config, clock=fake_clock)``."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def package_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """``caplog`` that sees the ``cronmetrics`` logger, which does not propagate.

    The app installs its own handler and turns propagation off (no line printed twice
    under gunicorn), so the root handler ``caplog`` uses sees nothing on every pytest
    version; this hangs it on the package logger itself.
    """
    package = logging.getLogger("cronmetrics")
    package.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        package.removeHandler(caplog.handler)


@pytest.fixture
def make_client(tmp_path: Path, fake_clock: FakeClock):  # type: ignore[no-untyped-def]
    """Build an app (no background threads, fake clock) and return its Flask test client.

    ``make_client({"a.yaml": "job_name: a\\n..."}, unknown_jobs="accept")`` writes the job
    files into a fresh jobs.d; a Path uses that directory as it is. Extra keyword arguments
    are config overrides.
    """
    from cronmetrics.config import load_config
    from cronmetrics.web.app import create_app

    def build(jobs: dict[str, str] | Path | None = None, **overrides: object):  # type: ignore[no-untyped-def]
        if isinstance(jobs, Path):
            root = jobs
        else:
            root = tmp_path / "jobs.d"
            root.mkdir(exist_ok=True)
            for name, text in (jobs or {}).items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text(text)
        if "state_dir" not in overrides:
            overrides["state_dir"] = tmp_path / "state"
            (tmp_path / "state").mkdir(exist_ok=True)
        overrides.setdefault("no_auth", True)
        config = load_config(None, jobs_dir=root, **overrides)
        app = create_app(config, clock=fake_clock, start_background=False)
        return app.test_client()

    return build
