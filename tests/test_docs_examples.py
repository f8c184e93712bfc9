"""Every shell example of docs/getting-started.md works as pasted, against a live server.

The ``sh`` blocks before "Start the server" run first in an empty directory (they write
``jobs.d/hello.yaml`` and validate it); then a real ``cronmetrics serve --no-auth`` starts
on that jobs.d, as the guide says to, and the remaining ``sh`` blocks run against it with
``http://localhost:9479`` pointed at the test server's port. ``text`` and ``yaml`` blocks
are shown, not run, and ``pip install`` lines are skipped (the package is installed).
Each block runs with ``bash -e``: one failing command fails the test, naming the block.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from liveserver import live_server

DOCS = Path(__file__).resolve().parent.parent / "docs"
GUIDE = DOCS / "getting-started.md"
API_GUIDE = DOCS / "api.md"
DOC_URL = "http://localhost:9479"
SERVER_HEADING = re.compile(r"^#+\s.*Start the server", re.MULTILINE)
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
PIP_LINE = re.compile(r"^\s*(python3? -m )?pip3? install\b")


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    code: str

    @property
    def runnable(self) -> str:
        lines = [line for line in self.code.splitlines() if not PIP_LINE.match(line)]
        return "\n".join(lines).strip()


def sh_blocks(text: str) -> list[Block]:
    return [
        Block(text.count("\n", 0, m.start()) + 1, "sh", m.group(2))
        for m in FENCE.finditer(text)
        if m.group(1) == "sh"
    ]


def guide_blocks(text: str) -> tuple[list[Block], list[Block]]:
    """The shell blocks before and after the "Start the server" heading."""
    heading = SERVER_HEADING.search(text)
    assert heading is not None, f"{GUIDE.name} has no 'Start the server' heading"
    line = text.count("\n", 0, heading.start()) + 1
    blocks = sh_blocks(text)
    before = [b for b in blocks if b.line < line]
    after = [b for b in blocks if b.line > line]
    return before, after


def run_block(block: Block, cwd: Path, env: dict[str, str], doc: Path = GUIDE) -> None:
    code = block.runnable
    if not code:
        return
    done = subprocess.run(
        ["bash", "-e", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (
        f"{doc.name} line {block.line}: block exited {done.returncode}\n"
        f"--- block ---\n{code}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    )


def test_guide_has_setup_and_server_examples() -> None:
    before, after = guide_blocks(GUIDE.read_text())
    assert any("jobs.d/hello.yaml" in b.code for b in before)
    assert any(DOC_URL in b.code for b in after)
    assert all(DOC_URL not in b.code for b in before), "a setup block needs the server"
    served = re.search(r"^cronmetrics serve .*--jobs-dir jobs\.d", GUIDE.read_text(), re.M)
    assert served is not None, "the guide no longer says how to start the server"


def test_pip_install_lines_are_skipped() -> None:
    block = Block(1, "sh", "python3 -m pip install cronmetrics   # or .\necho ok")
    assert block.runnable == "echo ok"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_getting_started_shell_examples_work_as_pasted(tmp_path: Path) -> None:
    assert shutil.which("curl"), "the guide's examples need curl"
    before, after = guide_blocks(GUIDE.read_text())
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONMETRICS_")}
    for block in before:
        run_block(block, workdir, env)

    jobs_dir = workdir / "jobs.d"
    assert (jobs_dir / "hello.yaml").is_file(), "the setup blocks did not create jobs.d"
    with live_server(jobs_dir, tmp_path / "state") as server:
        for block in after:
            url_block = Block(block.line, block.language, block.code.replace(DOC_URL, server.url))
            run_block(url_block, workdir, env)
        hello = httpx.get(f"{server.url}/api/job/hello", timeout=10).json()

    # the ping, the JSON result and `cronmetrics run` each recorded one successful run
    # (`cronmetrics run` exits 0 even when it cannot report, so count what arrived)
    reports = sum(1 for b in after if "/api/ping/hello/success" in b.code)
    reports += sum(1 for b in after if "/api/job-result" in b.code)
    reports += sum(1 for b in after if "cronmetrics run " in b.code)
    assert hello["state"]["runs_total"] == reports
    assert hello["state"]["last_status"] == "success"
    assert hello["state"]["value"] == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_api_guide_examples_work_with_a_real_token(jobs_dir: Path, tmp_path: Path) -> None:
    """docs/api.md's curl examples, in order, against a server that requires tokens."""
    from cronmetrics.web.auth import hash_token, new_token

    assert shutil.which("curl"), "the guide's examples need curl"
    token, ping_key = new_token(), new_token()
    config = tmp_path / "config.yaml"
    config.write_text(
        "auth:\n  tokens:\n"
        f"    - {{name: ops, sha256: {hash_token(token)}, scopes: [admin, read, submit]}}\n"
        f"    - {{name: pinger, sha256: {hash_token(ping_key)}, scopes: [submit],"
        " ping_key: true}\n"
    )
    blocks = sh_blocks(API_GUIDE.read_text())
    assert len(blocks) >= 5
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "backup.log").write_text("dumped 3 databases\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONMETRICS_")}
    env["TOKEN"], env["PING_KEY"] = token, ping_key
    with live_server(jobs_dir, tmp_path / "state", args=("--config", str(config))) as server:
        assert httpx.get(f"{server.url}/api/job", timeout=10).status_code == 401
        for block in blocks:
            url_block = Block(block.line, block.language, block.code.replace(DOC_URL, server.url))
            run_block(url_block, workdir, env, API_GUIDE)
