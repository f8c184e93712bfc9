"""``cronmetrics validate``: every problem, precisely located, in one run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cronmetrics.cli.main import cli

REPO_ROOT = Path(__file__).resolve().parent.parent
GOOD = "job_name: backup\nautomatic_failure_threshold: 3600\n"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["validate", *map(str, args)])


def write(root: Path, name: str, text: str | bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def problem_lines(result: Result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line]


def test_clean_directory_exits_zero_and_prints_no_problems(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "team/b.yaml", 'job_name: b\nschedule: "0 3 * * SUN"\n')
    result = run(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "2 files, 2 jobs, 0 problems" in result.stderr


def test_bundled_jobs_dir_validates_clean() -> None:
    result = run(REPO_ROOT / "jobs.d")
    assert result.exit_code == 0, result.output
    assert "0 problems" in result.stderr


def test_default_path_is_jobs_d_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "jobs.d/a.yaml", "job_name: a\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate"])
    assert result.exit_code == 1
    assert problem_lines(result) == [
        "jobs.d/a.yaml:1:1: set automatic_failure_threshold (seconds) or schedule (cron), or both"
    ]


TH = "automatic_failure_threshold: 60\n"

# (file content, the exact line printed after "path:")
PROBLEMS: list[tuple[str, str | bytes, str]] = [
    (
        "yaml-syntax",
        "job_name: [a\n",
        "2:1: YAML: did not find expected ',' or ']' (while parsing a flow sequence)",
    ),
    (
        "tabs",
        "job_name: a\nlabels:\n\tenv: prod\n",
        "3:1: YAML: tab character in indentation (YAML allows only spaces)",
    ),
    ("empty-file", "", "1:1: file is empty"),
    ("only-comments", "# nothing yet\n\n", "1:1: file is empty"),
    ("top-level-list", "- job_name: a\n", "1:1: top level must be a mapping, not a list"),
    ("top-level-scalar", "backup\n", "1:1: top level must be a mapping, not a string"),
    ("unknown-key", f"job_name: a\n{TH}owner: me\n", "3:1: unknown key 'owner'"),
    (
        "typo-did-you-mean",
        "job_name: a\nautomatic_failure_treshold: 60\n",
        "2:1: unknown key 'automatic_failure_treshold' "
        "(did you mean 'automatic_failure_threshold'?)",
    ),
    (
        "typo-schedule",
        f"job_name: a\n{TH}shedule: '@daily'\n",
        "3:1: unknown key 'shedule' (did you mean 'schedule'?)",
    ),
    (
        "wrong-type",
        "job_name: a\nautomatic_failure_threshold: '60'\n",
        "2:1: automatic_failure_threshold: must be a valid integer",
    ),
    (
        "out-of-range",
        f"job_name: a\n{TH}grace: -5\n",
        "3:1: grace: must be greater than or equal to 0",
    ),
    (
        "too-large",
        "job_name: a\nautomatic_failure_threshold: 400000000\n",
        "2:1: automatic_failure_threshold: must be less than or equal to 316224000",
    ),
    ("missing-job-name", f"host: db1\n{TH}", "1:1: job_name is required"),
    (
        "no-deadline",
        "# comment first\njob_name: a\n",
        "2:1: set automatic_failure_threshold (seconds) or schedule (cron), or both",
    ),
    (
        "cron-six-fields",
        "job_name: a\nschedule: '0 0 * * * *'\n",
        "2:1: schedule: cron expression must have 5 fields (minute hour day-of-month month "
        "day-of-week), got 6",
    ),
    (
        "cron-bad-field",
        "job_name: a\nschedule: '0 25 * * *'\n",
        "2:1: schedule: invalid hour field in '0 25 * * *'",
    ),
    (
        "cron-extension",
        "job_name: a\nschedule: '0 0 L * *'\n",
        "2:1: schedule: invalid day-of-month field 'L'",
    ),
    (
        "unknown-timezone",
        "job_name: a\nschedule: '@daily'\ntimezone: Europe/Atlantis\n",
        "3:1: timezone: unknown timezone 'Europe/Atlantis' (use an IANA name like Europe/Berlin)",
    ),
    (
        "bad-timestamp",
        f"job_name: a\n{TH}maintenance_until: next week\n",
        "3:1: maintenance_until: 'next week' is not a timestamp: use RFC 3339 with an offset, "
        "like 2026-12-01T00:00:00Z, or a date like 2026-12-01",
    ),
    (
        "bad-label-name",
        f"job_name: a\n{TH}labels: {{1env: x}}\n",
        "3:10: labels.1env: label name '1env' is not a valid Prometheus label name",
    ),
    (
        "reserved-label-name",
        f"job_name: a\n{TH}labels:\n  status: x\n",
        "4:3: labels.status: label name 'status' is reserved by the exporter",
    ),
    (
        "double-underscore-label",
        f"job_name: a\n{TH}labels:\n  __meta: x\n",
        "4:3: labels.__meta: label name '__meta' must not start with '__' (reserved)",
    ),
    (
        "non-string-label-value",
        f"job_name: a\n{TH}labels:\n  tier: 1\n",
        "4:3: labels.tier: label values must be strings (quote the value)",
    ),
    (
        "unsafe-job-name-slash",
        f"job_name: a/b\n{TH}",
        "1:1: job_name: 'a/b' is not allowed: use letters, digits, '_', '.', '-' "
        "(no spaces or '/'), starting with a letter or '_'",
    ),
    (
        "unsafe-job-name-dotdot",
        f"job_name: a..b\n{TH}",
        "1:1: job_name: 'a..b' must not contain '..'",
    ),
    (
        "unsafe-host-space",
        f"job_name: a\nhost: db 1\n{TH}",
        "2:1: host: 'db 1' is not allowed: use letters, digits, '_', '.', '-' "
        "(no spaces or '/'), starting with a letter, digit or '_'",
    ),
    (
        "duplicate-key",
        f"job_name: a\n{TH}job_name: b\n",
        "3:1: YAML: duplicate key 'job_name' (first defined on line 1)",
    ),
    (
        "python-tag",
        "job_name: !!python/object/apply:os.getpid []\n",
        "1:11: YAML: unsupported tag 'tag:yaml.org,2002:python/object/apply:os.getpid'",
    ),
    (
        "non-utf8",
        b"job_name: a\ndescription: caf\xe9\n" + TH.encode(),
        "2:17: file is not UTF-8 text (byte 0xe9)",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [p[1:] for p in PROBLEMS], ids=[p[0] for p in PROBLEMS]
)
def test_each_problem_kind_is_reported_with_path_line_and_column(
    tmp_path: Path, text: str | bytes, expected: str
) -> None:
    path = write(tmp_path, "job.yaml", text)
    result = run(tmp_path)
    assert result.exit_code == 1
    assert problem_lines(result) == [f"{path}:{expected}"]


@pytest.mark.parametrize(
    "schedule",
    ["0 3 * * 0", "0 3 * * 7", "0 3 * * SUN", "*/15 8-18 * * MON-FRI", "0 0 13 * FRI", "@weekly"],
)
def test_standard_cron_spellings_are_valid(tmp_path: Path, schedule: str) -> None:
    write(tmp_path, "a.yaml", f"job_name: a\nschedule: '{schedule}'\n")
    assert run(tmp_path).exit_code == 0


def test_duplicate_job_ids_across_files_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", GOOD)
    second = write(tmp_path, "team/b.yml", f"# same job\n{GOOD}")
    write(tmp_path, "c.yaml", f"{GOOD}host: db1\n")  # backup@db1 is another id
    result = run(tmp_path)
    assert result.exit_code == 1
    assert problem_lines(result) == [
        f"{second}:2:1: duplicate job id 'backup': already defined in {first}"
    ]


def test_many_problems_in_many_files_are_all_reported_in_one_run(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", GOOD)
    a = write(tmp_path, "a.yaml", "job_name: a\ngrace: -1\nfoo: 1\nlabels: {env: 1}\n")
    b = write(tmp_path, "sub/b.yaml", "")
    c = write(tmp_path, "sub/deeper/c.yaml", "job_name: [\n")
    result = run(tmp_path)
    assert result.exit_code == 1
    assert problem_lines(result) == [
        f"{a}:1:1: set automatic_failure_threshold (seconds) or schedule (cron), or both",
        f"{a}:2:1: grace: must be greater than or equal to 0",
        f"{a}:3:1: unknown key 'foo'",
        f"{a}:4:10: labels.env: label values must be strings (quote the value)",
        f"{b}:1:1: file is empty",
        f"{c}:2:1: YAML: did not find expected node content (while parsing a flow node)",
    ]
    assert "4 files, 1 job, 6 problems in 3 files" in result.stderr


def test_json_format_lists_every_problem_with_its_location(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "job_name: a\nautomatic_failure_treshold: 5\n")
    result = CliRunner().invoke(cli, ["validate", "--format", "json", str(tmp_path)])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc == {
        "files": 1,
        "jobs": 0,
        "problems": [
            {
                "file": str(path),
                "line": 2,
                "column": 1,
                "field": "automatic_failure_treshold",
                "message": "unknown key 'automatic_failure_treshold' "
                "(did you mean 'automatic_failure_threshold'?)",
            }
        ],
    }


def test_json_format_on_a_clean_directory_exits_zero(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    result = CliRunner().invoke(cli, ["validate", "--format", "json", str(tmp_path)])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"files": 1, "jobs": 1, "problems": []}


def test_github_format_prints_error_annotations(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b.yaml", "job_name: a\ngrace: x\nschedule: '@daily'\n")
    result = CliRunner().invoke(cli, ["validate", "--format", "github", str(tmp_path)])
    assert result.exit_code == 1
    escaped = str(path).replace(",", "%2C")
    assert problem_lines(result) == [
        f"::error file={escaped},line=2,col=1::grace: must be a valid integer"
    ]


def test_nonexistent_path_is_a_usage_error(tmp_path: Path) -> None:
    result = run(tmp_path / "nope")
    assert result.exit_code == 2
    assert "no such file or directory" in result.output


def test_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", "--format", "xml", str(tmp_path)])
    assert result.exit_code == 2


def test_dot_files_and_dot_directories_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, ".a.yaml.swp.yaml", "broken: [")
    write(tmp_path, "..data/x.yaml", "broken: [")
    write(tmp_path, ".git/hooks/y.yaml", "broken: [")
    write(tmp_path, "notes.txt", "broken: [")
    result = run(tmp_path)
    assert result.exit_code == 0, result.output
    assert "1 file, 1 job" in result.stderr


def test_symlinked_file_and_symlinked_directory_are_followed(tmp_path: Path) -> None:
    root = tmp_path / "jobs.d"
    elsewhere = root / ".shared"  # inside the jobs dir: links out are refused by default
    write(elsewhere, "real.yaml", "job_name: linked\n")
    write(elsewhere, "team/inner.yaml", "job_name: inner\n")
    (root / "link.yaml").symlink_to(elsewhere / "real.yaml")
    (root / "teamlink").symlink_to(elsewhere / "team", target_is_directory=True)
    result = run(root)
    assert result.exit_code == 1
    message = "set automatic_failure_threshold (seconds) or schedule (cron), or both"
    assert problem_lines(result) == [
        f"{root / 'link.yaml'}:1:1: {message}",
        f"{root / 'teamlink' / 'inner.yaml'}:1:1: {message}",
    ]


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    result = run(tmp_path)
    assert result.exit_code == 0, result.output


def test_yml_suffix_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yml", "job_name: a\n")
    result = run(tmp_path)
    assert result.exit_code == 1
    assert problem_lines(result)[0].startswith(f"{path}:1:1: ")


def test_a_single_file_argument_is_validated_whatever_its_name(tmp_path: Path) -> None:
    path = write(tmp_path, "job.txt", "job_name: a\ngrace: -1\nschedule: '@daily'\n")
    result = run(path)
    assert problem_lines(result) == [f"{path}:2:1: grace: must be greater than or equal to 0"]


def test_several_paths_are_validated_together_and_duplicates_span_them(tmp_path: Path) -> None:
    one = write(tmp_path, "one/a.yaml", GOOD)
    two = write(tmp_path, "two/a.yaml", GOOD)
    result = run(tmp_path / "one", tmp_path / "two")
    assert problem_lines(result) == [
        f"{two}:1:1: duplicate job id 'backup': already defined in {one}"
    ]


def test_large_directories_are_loaded_in_parallel_with_the_same_result(tmp_path: Path) -> None:
    from cronmetrics.jobs import repository

    for index in range(repository.PARALLEL_MIN_FILES + 10):
        write(tmp_path, f"d{index % 7}/j{index}.yaml", f"job_name: j{index}\nschedule: '@daily'\n")
    bad = write(tmp_path, "d9/zz.yaml", "job_name: j1\nschedule: '@daily'\n")
    result = run(tmp_path)
    assert result.exit_code == 1
    lines = problem_lines(result)
    assert len(lines) == 1
    assert lines[0].startswith(f"{bad}:1:1: duplicate job id 'j1': already defined in ")
    assert f"{repository.PARALLEL_MIN_FILES + 11} files" in result.stderr


def test_installed_console_script_reports_problems_and_exit_code(tmp_path: Path) -> None:
    exe = shutil.which("cronmetrics") or str(Path(sys.executable).with_name("cronmetrics"))
    path = write(tmp_path, "a.yaml", "job_name: a\nautomatic_failure_treshold: 5\n")
    proc = subprocess.run(
        [exe, "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == (
        f"{path}:2:1: unknown key 'automatic_failure_treshold' "
        "(did you mean 'automatic_failure_threshold'?)\n"
    )
    assert proc.stderr == "1 file, 0 jobs, 1 problem in 1 file\n"


def test_server_reloads_never_fork_a_process_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forking a threaded server can deadlock the child: only validate may use the pool."""
    from cronmetrics.jobs import repository

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("process pool used")

    monkeypatch.setattr(repository, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(repository, "ProcessPoolExecutor", no_pool)
    for index in range(5):
        write(tmp_path, f"j{index}.yaml", f"job_name: j{index}\nschedule: '@daily'\n")
    assert len(repository.load_directory(tmp_path).jobs) == 5
    assert len(repository.JobsDir(tmp_path).reload().jobs) == 5
    with pytest.raises(AssertionError, match="process pool used"):
        repository.load_paths(
            [(tmp_path / "j0.yaml", "j0"), (tmp_path / "j1.yaml", "j1")], parallel=True
        )
