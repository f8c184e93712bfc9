"""What the client commands do when the server says no: one line, never a traceback, and
``run`` keeps the wrapped command's exit code whatever the answer.

Every test runs the real command line in a subprocess (the console entry point, as cron
would), against a real server or a real closed port.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
TOKEN = "cm_good-token-for-error-tests"
JOB = "logrotate@web1"


@dataclass(frozen=True)
class Done:
    code: int
    out: str
    err: str


def client(args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path = REPO) -> Done:
    """``python -m cronmetrics ARGS`` with a clean client environment."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CRONMETRICS_") or k == "CRONMETRICS_LOG__LEVEL"
    }
    proc = subprocess.run(
        [sys.executable, "-m", "cronmetrics", *args],
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=90,
        cwd=cwd,
    )
    return Done(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with one token and a failure limit that a few bad tokens exhaust for a
    minute (longer than any client's retry budget)."""
    from liveserver import live_server

    root = tmp_path_factory.mktemp("limited")
    shutil.copytree(REPO / "jobs.d", root / "jobs.d")
    config = root / "config.yaml"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    config.write_text(
        "auth:\n"
        "  failure_limit: {burst: 2, per_minute: 0.5}\n"
        "  tokens:\n"
        f"    - {{name: ops, sha256: {digest}, scopes: [admin, read, submit]}}\n"
    )
    with live_server(root / "jobs.d", root / "state", args=("--config", str(config))) as live:
        for _ in range(4):
            httpx.get(f"{live.url}/api/job", headers={"Authorization": "Bearer wrong"})
        answer = httpx.get(f"{live.url}/api/job", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 429, answer.text
        yield live.url


def assert_one_clean_line(done: Done, *needles: str) -> None:
    assert "Traceback" not in done.err, done.err
    for needle in needles:
        assert needle in done.err, done.err


def test_run_keeps_exit_0_when_rate_limited(limited: str) -> None:
    done = client(
        ["run", "--url", limited, "--token", TOKEN, "--job", JOB, "--", "sh", "-c", "echo ok"]
    )
    assert done.code == 0, done.err
    assert done.out == "ok\n"
    assert_one_clean_line(done, "too many failed authentication attempts")


def test_run_keeps_a_failing_exit_code_when_rate_limited(limited: str) -> None:
    done = client(
        ["run", "--url", limited, "--token", TOKEN, "--job", JOB, "--", "sh", "-c", "exit 7"]
    )
    assert done.code == 7, done.err
    assert_one_clean_line(done, "too many failed authentication attempts")


def test_result_submit_rate_limited_is_one_line(limited: str) -> None:
    args = ["result", "submit", "--url", limited, "--token", TOKEN, "--job", JOB]
    done = client([*args, "--status", "success"])
    assert done.code != 0
    assert_one_clean_line(done, "too many failed authentication attempts")


def test_ingest_rate_limited_is_one_line(limited: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    log.write_text('{"ts": 1700000000, "exit": 0}\n')
    done = client(["ingest", str(log), "--url", limited, "--token", TOKEN, "--job", JOB])
    assert done.code != 0
    assert_one_clean_line(done, "too many failed authentication attempts")
