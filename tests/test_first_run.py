"""What a new user meets on the first day: install, curl, tokens, --help, docs in step."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from cronmetrics.cli.main import cli
from cronmetrics.cli.output import age
from cronmetrics.config import load_config
from cronmetrics.web.auth import TokenAuth

REPO = Path(__file__).resolve().parent.parent
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def commands(
    group: click.Group = cli, prefix: str = "cronmetrics"
) -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix} {name}")


def groups() -> list[tuple[str, click.Group]]:
    found = [(n, c) for n, c in commands() if isinstance(c, click.Group)]
    return [("cronmetrics", cli), *found]


def options(command: click.Command) -> dict[str, click.Option]:
    return {
        name: p
        for p in command.params
        if isinstance(p, click.Option)
        for name in p.opts
        if name.startswith("--")
    }


# -- 1. install --------------------------------------------------------------------------


def test_no_guide_installs_cronmetrics_from_pypi() -> None:
    # `pip install cronmetrics` (from PyPI), not `pip install "cronmetrics @ git+..."`
    bare = re.compile(r"pip3? install (-\S+ )*['\"]?cronmetrics(\[[\w,]+\])?['\"]?(?=\s|$)(?!\s+@)")
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            assert not bare.search(line), f"{doc.name}:{number}: {line.strip()}"
    install = (REPO / "docs" / "getting-started.md").read_text().split("## 2.")[0]
    assert "python3 -m pip install ." in install
    assert "not on PyPI" in install


# -- 4. curl shows JSON errors -------------------------------------------------------------


def test_docs_curl_never_hides_error_bodies() -> None:
    hiding = re.compile(r"curl\b[^\n]*?\s(-[a-zA-Z]*f[a-zA-Z]*|--fail)(\s|$)")
    for doc in DOCS:
        for block in FENCE.finditer(doc.read_text()):
            for line in block.group(2).splitlines():
                if re.search(r"\s-o\s", line):
                    continue  # a download: an error body must not land in the file
                assert not hiding.search(line), f"{doc.name}: {line.strip()}"


def test_fail_with_body_shows_the_json_error(bundled_url: str, curl_bin: str) -> None:
    curl = curl_bin
    done = subprocess.run(
        [
            curl,
            "-sS",
            "--fail-with-body",
            "-X",
            "POST",
            f"{bundled_url}/api/ping/nosuchjob/success",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 22  # still a failure for `set -e` scripts
    assert json.loads(done.stdout)["error"]["code"] == "NOT_FOUND"


# -- 6. token new pastes cleanly -----------------------------------------------------------


def _entry(output: str) -> tuple[str, str]:
    lines = [line for line in output.splitlines() if line and not line.startswith("#")]
    token, entry = lines
    return token, entry


@pytest.mark.parametrize(
    "before",
    [
        "auth:\n  tokens:\n",
        "bind: 127.0.0.1:9479\nauth:\n  tokens:\n"
        '    - {name: ops, sha256: "' + "a" * 64 + '", scopes: [admin]}\n',
    ],
    ids=["first entry", "after the docs' entries"],
)
def test_token_new_entry_is_valid_pasted_under_auth_tokens(before: str, tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["token", "new", "--scope", "submit", "--job", "backup*"])
    assert out.exit_code == 0, out.output
    token, entry = _entry(out.output)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(before + entry + "\nlog: {level: info}\n")  # pasted as printed
    config = load_config(config_file)
    who = TokenAuth.from_config(config).identify(f"Bearer {token}")
    assert who.scopes == frozenset({"submit"}) and who.jobs == ("backup*",)
    assert "under tokens:" in out.output


def test_configuration_guide_shows_a_whole_config_file_that_loads(tmp_path: Path) -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    section = text.split("## A whole config file")[1].split("\n## ")[0]
    (block,) = [m.group(2) for m in FENCE.finditer(section) if m.group(1) == "yaml"]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(block)
    config = load_config(config_file)
    assert len(config.auth.tokens) == 3
    assert config.state_dir == Path("/var/lib/cronmetrics")


# -- 8. --help -----------------------------------------------------------------------------


@pytest.mark.parametrize("name,group", groups(), ids=lambda v: v if isinstance(v, str) else "")
def test_command_lists_never_cut_a_summary(name: str, group: click.Group) -> None:
    out = CliRunner().invoke(group, ["--help"], env={"COLUMNS": "80"}, prog_name=name)
    assert out.exit_code == 0
    listing = out.output.split("Commands:")[1].split("\n\n")[0]
    for summary in re.split(r"\n  (?=\S)", listing.strip()):
        assert not summary.endswith("..."), summary  # click's cut
        assert summary.count("(") == summary.count(")"), summary


@pytest.mark.parametrize(
    "path,names",
    [
        (["serve"], ["--jobs-dir", "--state-dir", "--tls-cert", "--tls-key", "--threads"]),
        (["token", "hash"], ["--job", "--name"]),
    ],
)
def test_options_have_help(path: list[str], names: list[str]) -> None:
    command: click.Command = cli
    for part in path:
        assert isinstance(command, click.Group)
        found = command.get_command(click.Context(command), part)
        assert found is not None
        command = found
    opts = options(command)
    for name in names:
        assert opts[name].help, f"cronmetrics {' '.join(path)} {name} has no help"


@pytest.mark.parametrize(
    "path,names",
    [
        (["ingest"], ["--batch", "--poll", "--output-limit"]),
        (["result", "submit"], ["--output-file", "--output-limit"]),
    ],
)
def test_cron_host_options_have_help_and_defaults(path: list[str], names: list[str]) -> None:
    """run/result submit/ingest are argparse (the one-file client): the same rule."""
    import argparse

    from cronmetrics.client.cli import build_parser

    parser: argparse.ArgumentParser = build_parser()
    for part in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[part]
    actions = {o: a for a in parser._actions for o in a.option_strings}
    for name in names:
        help_text = actions[name].help
        assert help_text and help_text != argparse.SUPPRESS, f"{name} has no help"
        if actions[name].default is not None:
            assert "default" in help_text, f"{name} shows no default"
    assert actions.get("--output") is None or actions["--output"].help == argparse.SUPPRESS


def test_every_output_option_is_a_format() -> None:
    for name, command in commands():
        option = options(command).get("--output")
        if option is None or option.hidden:
            continue
        assert isinstance(option.type, click.Choice), f"{name} --output"
        assert "json" in option.type.choices, f"{name} --output"


def test_job_stats_offers_no_jobs_dir(tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["job", "stats", "--help"])
    assert "--jobs-dir" not in out.output
    bad = CliRunner().invoke(cli, ["job", "stats", "x", "--jobs-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "use --url, not --jobs-dir" in bad.output


def test_result_submit_output_file_and_its_old_spelling(bundled_url: str, tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("step 1\nall done\n")
    env = {"CRONMETRICS_URL": bundled_url, "CRONMETRICS_TOKEN": None}
    runner = CliRunner()
    base = ["result", "submit", "--job", "home_rsync", "--status", "success"]
    new = runner.invoke(cli, [*base, "--output-file", str(log)], env=env)
    assert new.exit_code == 0, new.output
    assert "deprecated" not in new.output
    old = runner.invoke(cli, [*base, "--output", str(log)], env=env)
    assert old.exit_code == 0, old.output
    assert "warning: --output FILE is deprecated: use --output-file FILE" in old.stderr
    both = runner.invoke(cli, [*base, "--output", str(log), "--output-file", str(log)], env=env)
    assert both.exit_code == 2
    results = httpx.get(f"{bundled_url}/api/job/home_rsync/results?limit=2", timeout=5).json()
    outputs = [r["output"] for r in results["results"]]
    assert outputs == ["step 1\nall done\n"] * 2


# -- 9. docs and messages in step ----------------------------------------------------------


def test_ping_action_failure_is_documented_and_works(bundled_url: str) -> None:
    ping = (REPO / "docs" / "api.md").read_text().split("`POST /api/ping/<job_id>/<action>`")
    assert "`failure`" in ping[1][:400]
    answer = httpx.post(f"{bundled_url}/api/ping/home_rsync/failure", content=b"boom", timeout=5)
    assert answer.status_code == 200, answer.text
    job = httpx.get(f"{bundled_url}/api/job/home_rsync", timeout=5).json()
    assert job["state"]["last_status"] == "failure"


def test_validate_summary_is_pluralised(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("job_name: one\nautomatic_failure_threshold: 60\n")
    out = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert out.exit_code == 0
    assert out.output.strip().splitlines()[-1] == "1 file, 1 job, 0 problems in 0 files"
    (tmp_path / "two.yaml").write_text("job_name: two\nautomatic_failure_treshold: 60\n")
    out = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert out.output.strip().splitlines()[-1] == "2 files, 1 job, 1 problem in 1 file"


@pytest.mark.parametrize(
    "seconds,text",
    [
        (-45, "45s ago"),
        (-2 * 3600 - 60, "2h1m ago"),
        (-3 * 86400 - 5 * 3600, "3d5h ago"),
        (-45 * 86400 - 3600, "45d ago"),
        (-(488 * 86400 + 17 * 3600), "1y 123d ago"),
        (-730 * 86400, "2y ago"),
        (600, "in 10m"),
    ],
)
def test_ages_read_sanely(seconds: int, text: str) -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    when = (now + dt.timedelta(seconds=seconds)).isoformat()
    assert age(when, now) == text


def test_schemathesis_dir_is_ignored_by_git() -> None:
    done = subprocess.run(
        ["git", "check-ignore", "-q", ".schemathesis/examples.db"], cwd=REPO, timeout=30
    )
    assert done.returncode == 0


def test_ingest_warns_about_results_older_than_retention(bundled_url: str, tmp_path: Path) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=45)
    lines = [
        json.dumps({"ts": (old + dt.timedelta(minutes=i)).isoformat(), "exit": 0, "msg": "ok"})
        for i in range(3)
    ]
    lines.append(json.dumps({"ts": dt.datetime.now(dt.UTC).isoformat(), "exit": 0}))
    log = tmp_path / "replay.jsonl"
    log.write_text("\n".join(lines) + "\n")
    env = {"CRONMETRICS_URL": bundled_url, "CRONMETRICS_TOKEN": None}
    out = CliRunner().invoke(cli, ["ingest", str(log), "--job", "home_rsync"], env=env)
    assert out.exit_code == 0, out.output
    assert "4 results submitted" in out.output
    assert (
        "warning: 3 results are older than the server keeps history (30 days): they count "
        "now but are purged at its next retention pass"
    ) in out.stderr


def test_submit_answer_names_results_older_than_retention(bundled_url: str) -> None:
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=31)).isoformat()
    fresh = {"job_name": "home_rsync", "status": "success"}
    answer = httpx.post(f"{bundled_url}/api/job-result", json=[fresh], timeout=5).json()
    assert "older_than_retention" not in answer
    stale = {**fresh, "timestamp": old}
    answer = httpx.post(f"{bundled_url}/api/job-result", json=[stale, fresh], timeout=5).json()
    assert answer["older_than_retention"] == 1 and answer["retention_days"] == 30
