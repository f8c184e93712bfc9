"""``cronmetrics diff`` against a real server: the plan of a jobs.d change before merging."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOKEN = "diff-reader-token-0123456789"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server on a copy of the bundled jobs.d, with a read token."""
    from liveserver import live_server

    root = tmp_path_factory.mktemp("diff")
    shutil.copytree(REPO / "jobs.d", root / "jobs.d")
    config = root / "config.yaml"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    config.write_text(f"auth:\n  tokens:\n    - {{name: ci, sha256: {digest}, scopes: [read]}}\n")
    with live_server(root / "jobs.d", root / "state", args=("--config", str(config))) as live:
        yield live.url


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A PR's jobs.d: a copy of what the server runs, to be edited by the test."""
    target = tmp_path / "jobs.d"
    shutil.copytree(REPO / "jobs.d", target)
    return target


def diff(*args: str, url: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    """The installed command, as CI runs it."""
    env = {"PATH": str(Path(sys.executable).parent), "CRONMETRICS_URL": url}
    if token is not None:
        env["CRONMETRICS_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "cronmetrics", "diff", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_unchanged_checkout_has_no_changes(server_url: str, checkout: Path) -> None:
    done = diff(str(checkout), "--exit-code", url=server_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"No changes: {server_url} already runs the ")


def test_a_pr_shows_adds_removes_deadline_and_label_changes(
    server_url: str, checkout: Path
) -> None:
    db_import = checkout / "backup" / "db_import.yaml"
    text = db_import.read_text()
    text = text.replace("grace: 900", "grace: 600").replace("team: data", "team: dba")
    db_import.write_text(text)
    (checkout / "backup" / "home_rsync.yaml").unlink()
    (checkout / "fresh.yaml").write_text("job_name: fresh\nschedule: '0 3 * * *'\n")

    done = diff(str(checkout), "--format", "json", url=server_url)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["summary"]["add"] == 1
    assert plan["summary"]["remove"] == 1
    assert plan["summary"]["change"] == 1
    changes = {c["id"]: c for c in plan["changes"]}
    assert changes["fresh"]["action"] == "add"
    assert changes["fresh"]["file"] == str(checkout / "fresh.yaml")
    assert changes["home_rsync"]["action"] == "remove"
    changed = changes["db_import@backup3"]
    assert changed["new_series"] is True
    fields = {f["field"]: (f["old"], f["new"]) for f in changed["fields"]}
    assert fields == {"grace": (900, 600), "labels.team": ("data", "dba")}

    text = diff(str(checkout), url=server_url)
    assert "~ db_import@backup3" in text.stdout and "[new series]" in text.stdout
    assert "    grace: 900 (15m) -> 600 (10m)" in text.stdout

    md = diff(str(checkout), "--format", "markdown", "--exit-code", url=server_url)
    assert md.returncode == 1  # --exit-code: there are changes
    assert md.stdout.startswith("### cronmetrics diff: 1 to add, 1 to remove, 1 to change")
    assert "| `labels.team` (new series) | `data` | `dba` |" in md.stdout


def test_invalid_files_give_problems_and_no_plan(server_url: str, checkout: Path) -> None:
    (checkout / "typo.yaml").write_text("job_name: typo\nautomatic_failure_treshold: 60\n")
    done = diff(str(checkout), url=server_url)
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"{checkout / 'typo.yaml'}:2:1: " in done.stderr
    assert "no plan until they are fixed" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_a_token_the_server_refusal_is_one_line(server_url: str, checkout: Path) -> None:
    done = diff(str(checkout), url=server_url, token=None)
    assert done.returncode == 6, done.stderr
    assert done.stderr.startswith("error: ")
    assert "Traceback" not in done.stderr


def test_a_server_that_is_down_exits_3(checkout: Path) -> None:
    from liveserver import free_port

    done = diff(str(checkout), url=f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
