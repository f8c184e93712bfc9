"""Issue 13: what a hostile client or file did to the exporter, one test per case at least.

The slow-client cases need a real server and live in ``test_slow_clients.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cronmetrics.cli.main import cli
from cronmetrics.config import DEFAULT_REDACT
from cronmetrics.jobs.model import ResultIn
from cronmetrics.monitor import Monitor
from cronmetrics.web.app import make_redactor

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
