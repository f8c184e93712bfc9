"""Configuration: file < CRONMETRICS_* environment < flags, with located errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cronmetrics.cli.main import cli, main
from cronmetrics.config import DEFAULT_REDACT, Config, load_config
from cronmetrics.errors import ConfigError

HASH = "0123456789abcdef" * 4


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("CRONMETRICS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cronmetrics.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_env_or_flags(tmp_path: Path) -> None:
    config = load_config()
    assert config.jobs_dir == Path("jobs.d")
    assert config.state_dir.parent == tmp_path / "xdg-state" / "cronmetrics"
    assert config.state_dir.name.startswith("jobs.d-")
    assert config.bind == "0.0.0.0:9479"
    assert config.host_port == ("0.0.0.0", 9479)
    assert config.snapshot.interval == 10
    assert config.retention.days == 30
    assert config.redact == DEFAULT_REDACT
    assert config.log.level == "info"
    assert config.auth.tokens == []


def test_file_values_are_used(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f"jobs_dir: {tmp_path}/jobs\nbind: '[::1]:9000'\nretention: {{days: 7}}\n"
        f"auth:\n  tokens:\n    - {{name: ops, sha256: '{HASH}', scopes: [admin]}}\n",
    )
    config = load_config(path)
    assert config.jobs_dir == tmp_path / "jobs"
    assert config.host_port == ("::1", 9000)
    assert config.retention.days == 7
    assert config.retention.max_results_per_job == 100
    assert config.auth.tokens[0].scopes == ["admin"]


def test_environment_wins_over_file_and_merges_nested_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        tmp_path, "bind: 127.0.0.1:1\nlog: {level: info, format: text}\nretention: {days: 5}\n"
    )
    monkeypatch.setenv("CRONMETRICS_BIND", "127.0.0.1:2")
    monkeypatch.setenv("CRONMETRICS_LOG__LEVEL", "debug")
    monkeypatch.setenv("CRONMETRICS_RETENTION__MAX_RESULTS_PER_JOB", "7")
    monkeypatch.setenv("CRONMETRICS_NO_AUTH", "true")
    monkeypatch.setenv("CRONMETRICS_SNAPSHOT__INTERVAL", "2.5")
    config = load_config(path)
    assert config.bind == "127.0.0.1:2"
    assert (config.log.level, config.log.format) == ("debug", "text")
    assert (config.retention.days, config.retention.max_results_per_job) == (5, 7)
    assert config.no_auth is True
    assert config.snapshot.interval == 2.5


def test_flags_win_over_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "bind: 127.0.0.1:1\njobs_dir: from-file\n")
    monkeypatch.setenv("CRONMETRICS_BIND", "127.0.0.1:2")
    monkeypatch.setenv("CRONMETRICS_JOBS_DIR", "from-env")
    config = load_config(path, bind="127.0.0.1:3", jobs_dir=None)
    assert config.bind == "127.0.0.1:3"
    assert config.jobs_dir == Path("from-env")  # an unset flag (None) does not override


def test_environment_list_value_is_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONMETRICS_REDACT", '["secret=\\\\S+"]')
    assert load_config().redact == ["secret=\\S+"]


def test_file_keeps_strict_types(tmp_path: Path) -> None:
    path = write_config(tmp_path, "retention:\n  days: '30'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == f"{path}:2:3: retention.days: must be a valid integer"


def test_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write_config(tmp_path, "jobs_dir: jobs.d\nlog:\n  level: verbose\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == (
        f"{path}:3:3: log.level: must be 'debug', 'info', 'warning' or 'error'"
    )
    assert info.value.exit_code == 2


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    path = write_config(tmp_path, "bind: nowhere\nretention: {days: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message.splitlines() == [
        "invalid configuration:",
        f"  {path}:1:1: bind: 'nowhere' is not HOST:PORT (e.g. 0.0.0.0:9479 or [::1]:9479)",
        f"  {path}:2:13: retention.days: must be greater than or equal to 1",
    ]


def test_unknown_key_is_an_error_with_a_hint(tmp_path: Path) -> None:
    path = write_config(tmp_path, "bind: 0.0.0.0:1\njob_dir: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == f"{path}:2:1: unknown key 'job_dir'"


def test_unknown_nested_key_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "snapshot:\n  intervall: 5\n")
    with pytest.raises(ConfigError, match=r":2:3: unknown key 'intervall'"):
        load_config(path)


def test_yaml_syntax_error_in_config_is_located(tmp_path: Path) -> None:
    path = write_config(tmp_path, "log: {level: info\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2:1: YAML: "):
        load_config(path)


def test_config_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "- a\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, "# nothing\n")).bind == "0.0.0.0:9479"


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


def test_bad_regex_in_redact_is_an_error_naming_the_entry(tmp_path: Path) -> None:
    path = write_config(tmp_path, "redact:\n  - 'ok=\\S+'\n  - '(unclosed'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message.startswith(
        f"{path}:1:1: redact: redact[1] is not a valid regular expression: missing )"
    )


@pytest.mark.parametrize("state", ["{jobs}", "{jobs}/state", "{jobs}/a/b"])
def test_state_dir_inside_jobs_dir_is_rejected(tmp_path: Path, state: str) -> None:
    jobs = tmp_path / "jobs"
    with pytest.raises(ConfigError, match="--state-dir: state_dir: must not be inside jobs_dir"):
        load_config(jobs_dir=jobs, state_dir=Path(state.format(jobs=jobs)))


def test_state_dir_inside_jobs_dir_names_where_state_dir_was_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, f"jobs_dir: {tmp_path}/jobs\nlog: {{level: info}}\n")
    monkeypatch.setenv("CRONMETRICS_STATE_DIR", str(tmp_path / "jobs" / "state"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == (
        f"CRONMETRICS_STATE_DIR: state_dir: must not be inside jobs_dir {tmp_path}/jobs "
        "(it would be watched)"
    )
    monkeypatch.delenv("CRONMETRICS_STATE_DIR")
    path.write_text(path.read_text() + f"state_dir: {tmp_path}/jobs/state\n")
    with pytest.raises(ConfigError, match=f"^{path}:3:1: state_dir: must not be inside"):
        load_config(path)


def test_state_dir_next_to_jobs_dir_is_fine(tmp_path: Path) -> None:
    config = load_config(jobs_dir=tmp_path / "jobs", state_dir=tmp_path / "jobs-state")
    assert config.state_dir == tmp_path / "jobs-state"


def test_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "retention: {days: 5}\n")
    monkeypatch.setenv("CRONMETRICS_RETENTION__DAYS", "many")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == (
        "CRONMETRICS_RETENTION__DAYS: retention.days: must be a valid integer"
    )


def test_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(bind="::")
    assert info.value.message.startswith("--bind: bind: '::' is not HOST:PORT")


@pytest.mark.parametrize("bind", ["0.0.0.0:0", "0.0.0.0:65536", "host", ":99999"])
def test_bind_needs_a_port_between_1_and_65535(bind: str) -> None:
    with pytest.raises(ConfigError):
        load_config(bind=bind)


def test_duplicate_token_names_are_rejected(tmp_path: Path) -> None:
    token = f"{{name: ops, sha256: '{HASH}', scopes: [read]}}"
    path = write_config(tmp_path, f"auth:\n  tokens:\n    - {token}\n    - {token}\n")
    with pytest.raises(ConfigError, match="token names must be unique: ops"):
        load_config(path)


def test_config_is_immutable() -> None:
    config = load_config()
    with pytest.raises(Exception, match="frozen"):
        config.bind = "x:1"  # type: ignore[misc]


# -- cronmetrics config show ---------------------------------------------------------------


def test_config_show_masks_token_hashes(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, f"auth:\n  tokens:\n    - {{name: ops, sha256: '{HASH}', scopes: [admin]}}\n"
    )
    for output in ("yaml", "json"):
        result = CliRunner().invoke(cli, ["config", "show", "--config", str(path), "-o", output])
        assert result.exit_code == 0, result.output
        assert HASH not in result.output
        assert "'***'" in result.output or '"***"' in result.output
    doc = json.loads(
        CliRunner().invoke(cli, ["config", "show", "--config", str(path), "-o", "json"]).output
    )
    assert doc["auth"]["tokens"] == [
        {"name": "ops", "sha256": "***", "scopes": ["admin"], "jobs": None, "ping_key": False}
    ]


def test_config_show_prints_the_effective_merged_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "bind: 127.0.0.1:1\nlog: {format: text}\n")
    monkeypatch.setenv("CRONMETRICS_LOG__LEVEL", "warning")
    monkeypatch.setenv("CRONMETRICS_BIND", "127.0.0.1:2")
    result = CliRunner().invoke(
        cli,
        ["config", "show", "--config", str(path), "--bind", "127.0.0.1:3", "-o", "json"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["bind"] == "127.0.0.1:3"
    assert doc["log"] == {"level": "warning", "format": "text"}


def test_config_show_reads_the_config_path_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRONMETRICS_CONFIG", str(write_config(tmp_path, "bind: 10.0.0.1:80\n")))
    result = CliRunner().invoke(cli, ["config", "show", "-o", "json"])
    assert json.loads(result.output)["bind"] == "10.0.0.1:80"


def test_config_show_error_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "bind: 1\n")
    with pytest.raises(SystemExit) as info:
        main(["config", "show", "--config", str(path)])
    assert info.value.code == 2
    assert capsys.readouterr().err == (f"error: {path}:1:1: bind: must be a valid string\n")


def test_redacted_config_keeps_everything_but_secrets() -> None:
    config = Config.model_validate(
        {"auth": {"tokens": [{"name": "a", "sha256": HASH, "scopes": ["read"]}]}}
    )
    data = config.redacted()
    assert data["auth"]["tokens"][0]["sha256"] == "***"
    assert data["auth"]["tokens"][0]["name"] == "a"
    assert data["bind"] == config.bind


def test_job_writes_accepts_only_its_three_modes(tmp_path: Path) -> None:
    assert load_config().job_writes == "auto"
    assert load_config(write_config(tmp_path, "job_writes: disabled\n")).job_writes == "disabled"
    path = write_config(tmp_path, "job_writes: never\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == (
        f"{path}:1:1: job_writes: must be 'auto', 'enabled' or 'disabled'"
    )


def test_the_default_state_dir_belongs_to_the_jobs_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers on two jobs dirs (the README's and the guide's) must not share state."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    first, second = tmp_path / "a" / "jobs.d", tmp_path / "b" / "jobs.d"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    a = load_config(None, jobs_dir=first).state_dir
    b = load_config(None, jobs_dir=second).state_dir
    assert a != b
    assert a.parent == b.parent == tmp_path / "xdg" / "cronmetrics"
    assert a.name.startswith("jobs.d-") and len(a.name) == len("jobs.d-") + 8
    monkeypatch.chdir(tmp_path / "a")  # the same directory by a relative path
    assert load_config(None, jobs_dir=Path("jobs.d")).state_dir == a
    assert load_config(None).state_dir == a  # the default jobs dir, ./jobs.d
    explicit = tmp_path / "mine"
    assert load_config(None, jobs_dir=first, state_dir=explicit).state_dir == explicit
    monkeypatch.setenv("CRONMETRICS_STATE_DIR", str(explicit))
    assert load_config(None, jobs_dir=first).state_dir == explicit
