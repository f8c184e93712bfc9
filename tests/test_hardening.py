"""Issue 13: what a hostile client or file did to the exporter, one test per case at least.

The slow-client cases need a real server and live in ``test_slow_clients.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from cronmetrics.cli.main import cli
from cronmetrics.config import DEFAULT_REDACT
from cronmetrics.errors import ValidationError
from cronmetrics.jobs.model import ResultIn
from cronmetrics.monitor import Monitor
from cronmetrics.web.app import Services, make_redactor, services

T0 = 1_767_571_200.0

# -- our own tokens and ping keys are redacted -----------------------------------------------


def printed_tokens() -> list[str]:
    """Every token ``cronmetrics token new`` prints, for each option it has."""
    runner = CliRunner()
    tokens = []
    for args in (
        ["--scope", "submit"],
        ["--scope", "admin", "--scope", "read", "--name", "ops"],
        ["--scope", "submit", "--job", "backup*"],
        ["--scope", "metrics"],
    ):
        result = runner.invoke(cli, ["token", "new", *args])
        assert result.exit_code == 0, result.output
        found = re.findall(r"cm_\S+", result.output)
        assert found, result.output
        tokens.extend(found)
    return tokens


CONTEXTS = [
    "the token is {t}",
    "cronmetrics run --token {t} --job x -- backup.sh",
    "CRONMETRICS_TOKEN={t}",
    "export CRONMETRICS_TOKEN='{t}'",
    "curl -H 'Authorization: Bearer {t}' https://cronmetrics:9479/api/job",
    '{{"token": "{t}"}}',
    "token:{t}.",
    "({t})",
    "x_{t}",
    "curl -fsS https://cronmetrics:9479/ping/{t}/backup@db1/start?rid=1",
    "GET /ping/{t}/backup 200",
]


def test_every_token_the_cli_prints_is_redacted_wherever_it_appears() -> None:
    redact = make_redactor(DEFAULT_REDACT)
    assert redact is not None
    tokens = printed_tokens()
    for token in tokens:
        for context in CONTEXTS:
            text = context.format(t=token)
            cleaned = redact(text)
            assert token not in cleaned, text
            assert token[3:] not in cleaned, text
            assert "[REDACTED]" in cleaned


def test_a_ping_key_from_elsewhere_is_redacted_by_the_url_shape() -> None:
    redact = make_redactor(DEFAULT_REDACT)
    assert redact is not None
    key = "k3yFromAS3cretManager"  # not cm_-shaped: only the URL says it is a key
    out = redact(f"curl https://cm.example/ping/{key}/backup@db1/fail --data-binary @log")
    assert key not in out
    assert "/ping/[REDACTED]/backup@db1/fail" in out
    # the token-free API ping names a job, not a secret: it stays readable
    assert redact("POST /api/ping/backup@db1/success") == "POST /api/ping/backup@db1/success"
    # an ordinary word that merely starts like a token stays
    assert redact("macm_setting=cm_on") == "macm_setting=cm_on"


def test_a_token_glued_to_what_precedes_it_is_redacted() -> None:
    """Coloured log lines put an ANSI code ending in 'm' right before the token."""
    redact = make_redactor(DEFAULT_REDACT)
    assert redact is not None
    token = "cm_z3WkdPBF6eKjwHobQKlIgXBv1eU"
    for text in (f"\033[1;32m{token}\033[0m", f"xx{token}", f"{'x' * 200}{token}yyyyy"):
        assert token[3:] not in redact(text), text


# -- a big output costs what the stored tail costs -------------------------------------------


def test_only_the_stored_tail_and_a_margin_are_redacted() -> None:
    seen: list[int] = []

    def redact(text: str) -> str:
        seen.append(len(text))
        return re.sub(r"password=\S+", "[REDACTED]", text)

    monitor = Monitor(max_output_bytes=10_000, redact=redact, accept_unknown=True)
    output = "x" * 1_000_000 + " password=hunter2 " + "y" * 9_990
    result = ResultIn.model_validate({"job_name": "big", "status": "success", "output": output})
    monitor.submit([result], T0)
    assert len(seen) == 1 and seen[0] <= 30_000  # the tail and a margin, not 1 MB
    stored = monitor.store.history("big")[0].output
    assert stored is not None
    assert len(stored.encode()) == 10_000
    assert "hunter2" not in stored  # it straddled the cut, yet it was redacted whole


def test_a_private_key_straddling_the_cut_is_redacted() -> None:
    redact = make_redactor(DEFAULT_REDACT)
    monitor = Monitor(max_output_bytes=1000, redact=redact, accept_unknown=True)
    body = "\n".join("MIIEow" + "A" * 58 for _ in range(50))  # a 3.2 kB key body
    pem = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
    output = "log " * 100_000 + pem + "\nbackup done\n" + "z" * 900
    result = ResultIn.model_validate({"job_name": "pem", "status": "success", "output": output})
    monitor.submit([result], T0)
    stored = monitor.store.history("pem")[0].output
    assert stored is not None
    assert "MIIEow" not in stored
    assert "backup done" in stored


# -- validate's text output cannot be forged by file names -----------------------------------

FORGED = "x.yaml:1:1: all good\nfake.yaml"


def test_validate_text_output_escapes_control_characters_in_paths(tmp_path: Path) -> None:
    (tmp_path / f"{FORGED}\x1b[2K.yaml").write_text("job_name: [\n")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines  # one problem, one line: the newline did not split it
    assert "\x1b" not in result.stdout
    assert lines[0].startswith(f"{tmp_path}/x.yaml:1:1: all good\\nfake.yaml\\x1b[2K.yaml:")


def test_validate_json_and_github_formats_keep_the_real_name(tmp_path: Path) -> None:
    name = f"{FORGED}\x1b.yaml"
    (tmp_path / name).write_text("job_name: [\n")
    out = CliRunner().invoke(cli, ["validate", "--format", "json", str(tmp_path)]).stdout
    assert json.loads(out)["problems"][0]["file"] == str(tmp_path / name)
    out = CliRunner().invoke(cli, ["validate", "--format", "github", str(tmp_path)]).stdout
    assert len(out.splitlines()) == 1
    assert "all good%0Afake.yaml" in out


@pytest.mark.parametrize("char", ["\r", "\x1b", "\x07", "\u202e", "\t"])
def test_validate_text_escapes_every_control_character(tmp_path: Path, char: str) -> None:
    (tmp_path / f"a{char}b.yaml").write_text("job_name: [\n")
    out = CliRunner().invoke(cli, ["validate", str(tmp_path)]).stdout
    assert char not in out
    assert ascii(char)[1:-1] in out


# -- only regular files are job files --------------------------------------------------------

GOOD = "job_name: {name}\nautomatic_failure_threshold: 600\n"


def validate_process(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``cronmetrics validate`` in a child with 1 GiB of address space: the old reader
    read /dev/zero until MemoryError (2.6 GB), and hung forever on a FIFO."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run(
        [sys.executable, "-m", "cronmetrics", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit_memory,
        check=False,
    )


@pytest.fixture
def fifo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "jobs.d"
    root.mkdir()
    (root / "good.yaml").write_text(GOOD.format(name="good"))
    os.mkfifo(root / "pipe.yaml")
    os.mkfifo(root / ".fifo")
    (root / "linked.yaml").symlink_to(".fifo")  # a symlink to a FIFO, inside the dir
    return root


def test_validate_reports_fifos_as_not_regular_files_and_does_not_hang(fifo_dir: Path) -> None:
    proc = validate_process(fifo_dir)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{fifo_dir / name}: not a regular file (a FIFO); job files must be regular files"
        for name in ("linked.yaml", "pipe.yaml")
    ]
    assert "Traceback" not in proc.stderr
    direct = validate_process(fifo_dir / "pipe.yaml")  # named on the command line
    assert "not a regular file (a FIFO)" in direct.stdout


def test_validate_refuses_dev_zero_without_reading_it(tmp_path: Path) -> None:
    root = tmp_path / "jobs.d"
    root.mkdir()
    (root / "zero.yaml").symlink_to("/dev/zero")
    proc = validate_process("--follow-external-symlinks", root)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == (
        f"{root / 'zero.yaml'}: not a regular file (a character device); "
        "job files must be regular files\n"
    )
    assert "MemoryError" not in proc.stderr


def test_a_file_over_the_limit_is_refused_after_reading_the_limit(tmp_path: Path) -> None:
    from cronmetrics.jobs.files import read_job_bytes

    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 300_000)
    with pytest.raises(ValidationError, match="too large"):
        read_job_bytes(big, "big.yaml", limit=1000)
    assert read_job_bytes(big, "big.yaml", limit=300_000) == b"#" * 300_000


def reload_in_thread(svc: Services, timeout: float = 20) -> None:
    """A reload that must finish: the old one blocked forever in open() on a FIFO."""
    done = threading.Event()

    def run() -> None:
        with contextlib.suppress(Exception):
            svc.reload(full=True)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(timeout), "the reload hung"


def metric(client: FlaskClient, name: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, name
    return float(found.group(1))


def test_a_fifo_in_jobs_d_is_an_invalid_file_and_reloads_go_on(
    make_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    root = tmp_path / "jobs.d"
    root.mkdir()
    (root / "good.yaml").write_text(GOOD.format(name="good"))
    client = make_client(root)
    svc = services(client.application)
    os.mkfifo(root / "pipe.yaml")
    reload_in_thread(svc)
    assert metric(client, "cronmetrics_config_invalid_files") == 1
    assert metric(client, "cronmetrics_config_last_reload_successful") == 0
    deep = client.get("/health/deep").get_json()  # serving (good.yaml), with a warning
    assert deep["status"] == "degraded"
    assert deep["warnings"] == ["reload"]
    assert "pipe.yaml" in deep["checks"]["reload"]["detail"]
    (root / "new.yaml").write_text(GOOD.format(name="new"))  # later files are still seen
    reload_in_thread(svc)
    assert client.get("/api/job/new").status_code == 200
    (root / "pipe.yaml").unlink()
    reload_in_thread(svc)
    assert metric(client, "cronmetrics_config_last_reload_successful") == 1


def test_a_reload_that_fails_for_any_reason_is_reported(
    make_client: Callable[..., FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client({"a.yaml": GOOD.format(name="a")})
    svc = services(client.application)
    assert metric(client, "cronmetrics_config_last_reload_successful") == 1

    def broken(*, full: bool = False) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(svc.jobs_dir, "reload", broken)
    with pytest.raises(OSError):
        svc.reload()
    assert metric(client, "cronmetrics_config_last_reload_successful") == 0
    deep = client.get("/health/deep")
    assert deep.status_code == 503
    assert "the last reload failed" in deep.get_json()["checks"]["reload_budget"]["detail"]
    monkeypatch.undo()
    svc.reload()
    assert client.get("/health/deep").status_code == 200


def test_a_reload_over_its_budget_is_logged_counted_and_shown(
    make_client: Callable[..., FlaskClient], capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client({"a.yaml": GOOD.format(name="a")}, watch={"reload_budget": 1e-6})
    assert "overran its budget" in capfd.readouterr().err
    assert metric(client, "cronmetrics_config_reload_overruns_total") >= 1
    assert metric(client, "cronmetrics_config_last_reload_duration_seconds") > 0
    detail = client.get("/health/deep").get_json()["checks"]["reload_budget"]["detail"]
    assert "over the budget so far" in detail


def test_a_reload_running_past_its_budget_fails_readiness() -> None:
    from cronmetrics.web.metrics import SelfMetrics
    from cronmetrics.web.reloads import ReloadGuard

    guard = ReloadGuard(SelfMetrics(lambda: {"by_status": {}, "failing": 0}), budget=30)
    guard.started = 1000.0  # a reload stuck since then (a stalled NFS read)
    assert guard.health(now=1020.0)[0]
    ok, detail = guard.health(now=1045.0)
    assert not ok
    assert "running for 45.0 s, over its budget of 30 s" in detail


def test_sigterm_is_fast_and_reloads_go_on_with_a_fifo_in_jobs_d(
    jobs_dir: Path, tmp_path: Path
) -> None:
    from liveserver import live_server, wait_for

    os.mkfifo(jobs_dir / "pipe.yaml")
    with live_server(jobs_dir, tmp_path / "state") as live:
        text = httpx.get(f"{live.url}/metrics", timeout=10).text
        assert "cronmetrics_config_last_reload_successful 0.0" in text
        (jobs_dir / "late.yaml").write_text(GOOD.format(name="late"))
        wait_for(
            lambda: httpx.get(f"{live.url}/api/job/late", timeout=5).status_code == 200,
            "the watcher to load a file added after the FIFO",
        )
        started = time.monotonic()
        assert live.stop(timeout=30) == 0
        assert time.monotonic() - started < 10  # not gunicorn's 20 s graceful timeout


# -- symlinks out of jobs.d ------------------------------------------------------------------

SHADOW = "root:$6$s3cr3tHash$abc:19000:0:99999:7:::\nbackup:$6$0therHash:19000::::::\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "etc" / "shadow"
    secret.parent.mkdir()
    secret.write_text(SHADOW)
    return secret


def test_a_symlink_out_of_jobs_d_is_refused_and_never_quoted(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "jobs.d"
    root.mkdir()
    (root / "shadow.yaml").symlink_to(outside)
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 1
    assert result.stdout == (
        f"{root / 'shadow.yaml'}: symbolic link to {outside} leaves the jobs directory; "
        "not read (set follow_external_symlinks: true to allow links out of it)\n"
    )
    for shown in ("--format", "json"), ("--format", "github"), ():
        out = CliRunner().invoke(cli, ["validate", *shown, str(root)]).output
        assert "s3cr3tHash" not in out and "root:" not in out


def test_allowed_external_links_are_read_but_their_errors_quote_nothing(
    tmp_path: Path, outside: Path
) -> None:
    root = tmp_path / "jobs.d"
    root.mkdir()
    (root / "shadow.yaml").symlink_to(outside)
    (root / "team").symlink_to(tmp_path / "etc", target_is_directory=True)
    (tmp_path / "etc" / "ok.yaml").write_text(GOOD.format(name="shared"))
    result = CliRunner().invoke(cli, ["validate", "--follow-external-symlinks", str(root)])
    assert "s3cr3tHash" not in result.output and "root:" not in result.output
    assert f"{root / 'shadow.yaml'}:1:1: not a valid job file (outside the jobs directory" in (
        result.stdout
    )
    assert "1 job," in result.stderr  # team/ok.yaml was read through the allowed link


def test_the_server_refuses_links_out_and_logs_no_line_of_them(
    make_client: Callable[..., FlaskClient],
    tmp_path: Path,
    outside: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "jobs.d"
    root.mkdir()
    (root / "a.yaml").write_text(GOOD.format(name="a"))
    (root / "shadow.yaml").symlink_to(outside)
    client = make_client(root)
    assert metric(client, "cronmetrics_config_invalid_files") == 1
    logged = capfd.readouterr().err
    assert "leaves the jobs directory" in logged
    assert "s3cr3tHash" not in logged
    allowed = make_client(root, follow_external_symlinks=True)
    assert metric(allowed, "cronmetrics_config_invalid_files") == 1
    logged = capfd.readouterr().err
    assert "details withheld" in logged
    assert "s3cr3tHash" not in logged and "root:" not in logged


def test_a_link_to_usr_is_refused_at_the_link_not_walked(tmp_path: Path) -> None:
    root = tmp_path / "jobs.d"
    root.mkdir()
    (root / "a.yaml").write_text(GOOD.format(name="a"))
    (root / "usr").symlink_to("/usr", target_is_directory=True)
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{root / 'usr'}: symbolic link to /usr leaves the jobs directory; not read "
        "(set follow_external_symlinks: true to allow links out of it)"
    ]
    assert result.stderr.startswith("2 files, 1 job,")  # a.yaml and the link, nothing below


def test_links_inside_jobs_d_are_followed_like_configmaps_and_git_sync(tmp_path: Path) -> None:
    from cronmetrics.jobs.repository import load_directory

    # a ConfigMap volume: name.yaml -> ..data/name.yaml, ..data -> ..2026_12_01
    cm = tmp_path / "configmap"
    (cm / "..2026_12_01").mkdir(parents=True)
    (cm / "..2026_12_01" / "a.yaml").write_text(GOOD.format(name="a"))
    (cm / "..data").symlink_to("..2026_12_01", target_is_directory=True)
    (cm / "a.yaml").symlink_to("..data/a.yaml")
    loaded = load_directory(cm)
    assert set(loaded.jobs) == {"a"} and not loaded.invalid
    # git-sync: the jobs dir itself is a link to the current worktree
    worktree = tmp_path / ".worktrees" / "abc123"
    (worktree / "team").mkdir(parents=True)
    (worktree / "team" / "b.yaml").write_text(GOOD.format(name="b"))
    (worktree / "also.yaml").symlink_to("team/b.yaml")
    (tmp_path / "repo").symlink_to(worktree, target_is_directory=True)
    loaded = load_directory(tmp_path / "repo")
    assert set(loaded.jobs) == {"b"}
    assert list(loaded.invalid) == ["team/b.yaml"]  # the duplicate id, not a refusal


def test_a_link_named_on_the_command_line_is_refused_too(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CI often runs: cronmetrics validate $(git diff --name-only)
    repo = tmp_path / "repo"
    (repo / "jobs.d").mkdir(parents=True)
    (repo / "jobs.d" / "shadow.yaml").symlink_to(outside)
    (repo / "jobs.d" / "ok.yaml").write_text(GOOD.format(name="ok"))
    (repo / "jobs.d" / "alias.yaml").symlink_to("ok.yaml")
    monkeypatch.chdir(repo)
    args = ["validate", "jobs.d/shadow.yaml", "jobs.d/alias.yaml"]
    result = CliRunner().invoke(cli, args)
    assert result.stdout.splitlines() == [
        f"jobs.d/shadow.yaml: symbolic link to {outside} leaves the jobs directory; not read "
        "(set follow_external_symlinks: true to allow links out of it)"
    ]
    result = CliRunner().invoke(cli, [*args[:1], "--follow-external-symlinks", *args[1:]])
    assert "s3cr3tHash" not in result.output and "root:" not in result.output
