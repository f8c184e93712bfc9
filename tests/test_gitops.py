"""The GitOps kit: the pre-commit hook, the CI workflow of docs/gitops.md, schema modelines."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from cronmetrics.cli.main import cli

REPO = Path(__file__).resolve().parent.parent
GITOPS = REPO / "docs" / "gitops.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def doc_blocks(language: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(GITOPS.read_text()) if m.group(1) == language]


def hooks() -> list[dict[str, Any]]:
    data = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert isinstance(data, list)
    return data


def check_command_line(line: str) -> None:
    """A ``cronmetrics ...`` line parses with the real CLI (options and arguments)."""
    args = shlex.split(line)
    assert args[0] == "cronmetrics", line
    command: click.Command = cli
    rest = args[1:]
    while isinstance(command, click.Group):
        name, rest = rest[0], rest[1:]
        found = command.get_command(click.Context(command), name)
        assert found is not None, f"no command {name!r} in {line!r}"
        command = found
    command.make_context(command.name or "", rest)  # raises on an unknown option or value


def test_pre_commit_hook_declares_validate() -> None:
    (hook,) = hooks()
    assert hook["id"] == "cronmetrics-validate"
    assert hook["entry"] == "cronmetrics validate"
    assert hook["language"] == "python"  # pre-commit installs this repo into the hook env
    assert hook["pass_filenames"] is True
    files = re.compile(hook["files"])
    assert files.search("jobs.d/backup/db.yaml")
    assert files.search("teams/a/jobs.d/x.yml")
    assert not files.search("docs/alerts.yaml")
    assert not files.search("jobs.d/README.md")


def test_pre_commit_hook_entry_runs_on_the_files_it_is_given(tmp_path: Path) -> None:
    (hook,) = hooks()
    good = tmp_path / "jobs.d" / "good.yaml"
    bad = tmp_path / "jobs.d" / "bad.yaml"
    good.parent.mkdir()
    good.write_text("job_name: good\nautomatic_failure_threshold: 60\n")
    bad.write_text("job_name: bad\nautomatic_failure_treshold: 60\n")
    program, *args = shlex.split(hook["entry"])
    entry = [str(Path(sys.executable).parent / program), *args]
    ok = subprocess.run([*entry, str(good)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run([*entry, str(good), str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1
    assert failed.stdout.startswith(f"{bad}:2:1: unknown key 'automatic_failure_treshold'")


def test_docs_pre_commit_examples_use_the_shipped_hook_id() -> None:
    configs = [yaml.safe_load(b) for b in doc_blocks("yaml") if "pre-commit-config" in b]
    assert len(configs) == 2
    ids = {h["id"] for c in configs for r in c["repos"] for h in r["hooks"]}
    assert ids == {hooks()[0]["id"]}


def test_docs_github_workflow_validates_and_posts_the_plan() -> None:
    (workflow,) = [yaml.safe_load(b) for b in doc_blocks("yaml") if "runs-on" in b]
    steps = workflow["jobs"]["check"]["steps"]
    runs = [line for s in steps for line in str(s.get("run", "")).splitlines()]
    commands = [line.split(">")[0].strip() for line in runs if line.startswith("cronmetrics ")]
    assert "cronmetrics validate --format github jobs.d" in commands
    assert any(c.startswith("cronmetrics diff") and "--format markdown" in c for c in commands)
    assert workflow["permissions"]["pull-requests"] == "write"
    for command in commands:
        check_command_line(command)
    assert not any(re.match(r"pip install cronmetrics\b", line) for line in runs)


def test_every_cronmetrics_line_of_the_gitops_guide_parses() -> None:
    lines = []
    for block in doc_blocks("yaml") + doc_blocks("sh"):
        for raw in block.splitlines():
            line = raw.strip().removeprefix("- ").removeprefix("run: ")
            if line.startswith("cronmetrics "):
                lines.append(line.split(" > ")[0])
    assert len(lines) >= 4
    for line in lines:
        check_command_line(line)


@pytest.mark.parametrize("path", sorted((REPO / "jobs.d").rglob("*.yaml")), ids=lambda p: p.name)
def test_bundled_job_files_name_the_schema_on_their_first_line(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    match = MODELINE.match(first)
    assert match, f"{path}: first line {first!r}"
    assert (path.parent / match.group(1)).resolve() == REPO / "schemas" / "job.schema.json"


def test_docs_modeline_example_is_the_bundled_file() -> None:
    (example,) = [b for b in doc_blocks("yaml") if MODELINE.match(b.splitlines()[0])]
    target = REPO / "jobs.d" / "backup" / "db_import.yaml"
    actual = target.read_text().splitlines()
    lines = example.splitlines()
    assert lines[0] == actual[0]
    assert all(line in actual for line in lines[1:]), "the example quotes the file"
    assert (target.parent / MODELINE.match(lines[0]).group(1)).resolve().exists()  # type: ignore[union-attr]
