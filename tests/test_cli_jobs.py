"""``cronmetrics job ...`` and ``result submit``: offline on a jobs dir, online on a live server."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from clirun import Run, cm

from cronmetrics.jobs.repository import load_directory
from cronmetrics.jobs.yamlio import load_fast

REPO = Path(__file__).resolve().parent.parent
TOKEN = "test-admin-token-1234567890"


def one_error_line(run: Run) -> str:
    """User errors are one clean line on stderr, never a traceback."""
    assert "Traceback" not in run.err
    lines = [line for line in run.err.splitlines() if line.startswith(("error:", "Error:"))]
    assert len(lines) >= 1, run.err
    return lines[0]


# -- offline -------------------------------------------------------------------------------


def test_offline_list_table_fits_80_columns(jobs_dir: Path) -> None:
    run = cm(["job", "list", "--jobs-dir", str(jobs_dir)])
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split()[:2] == ["ID", "STATUS"]
    assert all(len(line) <= 80 for line in lines)
    assert {"postgres_basebackup@db1", "cert_renew"} <= {line.split()[0] for line in lines}


def test_offline_list_filters_by_label_status_and_host(jobs_dir: Path) -> None:
    jobs = load_directory(jobs_dir).jobs
    prod = {i for i, jf in jobs.items() if jf.definition.labels.get("env") == "prod"}
    run = cm(["job", "list", "--jobs-dir", str(jobs_dir), "--label", "env=prod", "-o", "json"])
    assert run.code == 0, run.err
    assert {j["id"] for j in json.loads(run.out)} == prod
    paused = cm(["job", "list", "--jobs-dir", str(jobs_dir), "--status", "paused", "-o", "json"])
    assert [j["id"] for j in json.loads(paused.out)] == ["legacy_report"]
    on_db1 = cm(["job", "list", "--jobs-dir", str(jobs_dir), "--host", "db1", "-o", "json"])
    assert [j["id"] for j in json.loads(on_db1.out)] == ["postgres_basebackup@db1"]


def test_offline_get_prints_yaml_with_the_file(jobs_dir: Path) -> None:
    run = cm(["job", "get", "logrotate@web1", "--jobs-dir", str(jobs_dir), "-o", "yaml"])
    assert run.code == 0, run.err
    doc = load_fast(run.out)
    assert doc["job_name"] == "logrotate"
    assert doc["host"] == "web1"
    assert doc["file"] == "platform/logrotate.yml"


def test_offline_get_unknown_job_exits_4_with_one_line(jobs_dir: Path) -> None:
    run = cm(["job", "get", "nope@nowhere", "--jobs-dir", str(jobs_dir)])
    assert run.code == 4
    assert "nope@nowhere" in one_error_line(run)


def test_spec_add_example_writes_a_job_file(jobs_dir: Path) -> None:
    args = ["job", "add", "--name", "backup", "--host", "db1", "--threshold", "600"]
    run = cm([*args, "--label", "env=prod", "--jobs-dir", str(jobs_dir)])
    assert run.code == 0, run.err
    doc = load_fast((jobs_dir / "backup@db1.yaml").read_text())
    assert doc == {
        "job_name": "backup",
        "host": "db1",
        "automatic_failure_threshold": 600,
        "labels": {"env": "prod"},
    }
    again = cm([*args, "--jobs-dir", str(jobs_dir)])
    assert again.code == 5
    assert "already exists" in one_error_line(again)


def test_add_accepts_duration_units_and_schedule(jobs_dir: Path) -> None:
    run = cm(
        [
            "job",
            "add",
            "--jobs-dir",
            str(jobs_dir),
            "--name",
            "report",
            "--schedule",
            "30 2 * * *",
            "--timezone",
            "Europe/Berlin",
            "--grace",
            "15m",
            "--max-runtime",
            "1h30m",
            "--description",
            "nightly report",
            "-o",
            "json",
        ]
    )
    assert run.code == 0, run.err
    job = json.loads(run.out)
    assert (job["id"], job["grace"], job["max_runtime"]) == ("report", 900, 5400)
    assert job["file"] == "report.yaml"


def test_spec_update_maintenance_true_then_false(jobs_dir: Path) -> None:
    run = cm(["job", "update", "postgres_basebackup@db1", "--jobs-dir", str(jobs_dir)])
    assert run.code == 2  # nothing to change
    path = jobs_dir / "backup" / "postgres_basebackup.yaml"
    run = cm(
        [
            "job",
            "update",
            "postgres_basebackup@db1",
            "--maintenance",
            "true",
            "--until",
            "2030-01-01T00:00:00Z",
            "--jobs-dir",
            str(jobs_dir),
        ]
    )
    assert run.code == 0, run.err
    doc = load_fast(path.read_text())
    assert doc["status"] == "maintenance"
    assert str(doc["maintenance_until"]).startswith("2030-01-01")
    run = cm(["job", "update", "postgres_basebackup@db1", "--maintenance", "false",
              "--jobs-dir", str(jobs_dir)])  # fmt: skip
    assert run.code == 0, run.err
    doc = load_fast(path.read_text())
    assert doc.get("status", "active") == "active"
    assert "maintenance_until" not in doc


def test_update_labels_merge_and_none_removes_a_key(jobs_dir: Path) -> None:
    jid = "postgres_basebackup@db1"
    before = load_directory(jobs_dir).jobs[jid].definition
    assert before.labels.get("team") is not None
    run = cm(["job", "update", jid, "--jobs-dir", str(jobs_dir), "--label", "tier=gold",
              "--remove-label", "team", "--max-runtime", "none"])  # fmt: skip
    assert run.code == 0, run.err
    after = load_directory(jobs_dir).jobs[jid].definition
    assert after.labels == {**{k: v for k, v in before.labels.items() if k != "team"},
                            "tier": "gold"}  # fmt: skip
    assert after.max_runtime is None


def test_pause_resume_and_maintenance_shortcuts(jobs_dir: Path) -> None:
    def status() -> tuple[str, object]:
        d = load_directory(jobs_dir).jobs["cert_renew"].definition
        return d.status.value, d.maintenance_until

    assert cm(["job", "pause", "cert_renew", "--jobs-dir", str(jobs_dir)]).code == 0
    assert status() == ("paused", None)
    run = cm(["job", "maintenance", "cert_renew", "--until", "2031-05-01",
              "--jobs-dir", str(jobs_dir)])  # fmt: skip
    assert run.code == 0, run.err
    assert status()[0] == "maintenance"
    assert str(status()[1]).startswith("2031-05-01")
    assert cm(["job", "resume", "cert_renew", "--jobs-dir", str(jobs_dir)]).code == 0
    assert status() == ("active", None)


def test_delete_removes_the_file_then_not_found(jobs_dir: Path) -> None:
    path = jobs_dir / "platform" / "cert_renew.yaml"
    assert cm(["job", "delete", "cert_renew", "--jobs-dir", str(jobs_dir)]).code == 0
    assert not path.exists()
    run = cm(["job", "delete", "cert_renew", "--jobs-dir", str(jobs_dir)])
    assert run.code == 4
    one_error_line(run)


def test_invalid_definition_reports_every_problem_and_writes_nothing(jobs_dir: Path) -> None:
    run = cm(["job", "add", "--jobs-dir", str(jobs_dir), "--name", "x",
              "--label", "bad-name=1", "--label", "job=2"])  # fmt: skip
    assert run.code == 1
    assert "Traceback" not in run.err
    assert "bad-name" in run.err
    assert "'job' is reserved" in run.err
    assert not (jobs_dir / "x.yaml").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--threshold", "ten"], "--threshold"),
        (["--label", "novalue"], "KEY=VALUE"),
        (["--status", "sleeping"], "--status"),
        (["--maintenance", "true", "--status", "paused"], "not both"),
    ],
)
def test_bad_flags_exit_2_with_one_line(jobs_dir: Path, args: list[str], needle: str) -> None:
    run = cm(["job", "add", "--name", "y", "--jobs-dir", str(jobs_dir), *args])
    assert run.code == 2
    assert needle in one_error_line(run)
    assert not (jobs_dir / "y.yaml").exists()


def test_url_and_jobs_dir_together_is_a_usage_error(jobs_dir: Path) -> None:
    run = cm(["job", "list", "--jobs-dir", str(jobs_dir), "--url", "http://127.0.0.1:1"])
    assert run.code == 2
    assert "not both" in one_error_line(run)


def test_jobs_dir_from_environment_selects_offline_mode(jobs_dir: Path) -> None:
    run = cm(
        ["job", "get", "cert_renew", "-o", "json"], env={"CRONMETRICS_JOBS_DIR": str(jobs_dir)}
    )
    assert run.code == 0, run.err
    assert json.loads(run.out)["state"] is None


def test_stats_needs_the_server(jobs_dir: Path) -> None:
    run = cm(["job", "stats", "cert_renew", "--jobs-dir", str(jobs_dir)])
    assert run.code == 2
    assert "--url" in one_error_line(run)


# -- online --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One server for the module (with a token, so auth errors can be tested too)."""
    from liveserver import live_server

    root = tmp_path_factory.mktemp("online")
    jobs = root / "jobs.d"
    shutil.copytree(REPO / "jobs.d", jobs)
    config = root / "config.yaml"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    config.write_text(
        "auth:\n  tokens:\n"
        f"    - {{name: ops, sha256: {digest}, scopes: [admin, read, submit]}}\n"
        f"    - {{name: reader, sha256: {hashlib.sha256(b'reader-token-xyz').hexdigest()},"
        " scopes: [read]}\n"
    )
    with live_server(jobs, root / "state", args=("--config", str(config))) as live:
        yield live.url, jobs


def on(online: tuple[str, Path], args: Sequence[str], **kwargs: object) -> Run:
    url, _ = online
    env = {"CRONMETRICS_URL": url, "CRONMETRICS_TOKEN": TOKEN}
    return cm(args, env=env, **kwargs)  # type: ignore[arg-type]


def test_online_list_by_label_shows_state(online: tuple[str, Path]) -> None:
    run = on(online, ["job", "list", "--label", "env=prod"])
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "STATE", "LAST", "RUN", "DEADLINE", "LABELS"]
    assert all(len(line) <= 80 for line in lines)
    data = json.loads(on(online, ["job", "list", "--label", "env=prod", "-o", "json"]).out)
    assert data
    assert all(j["labels"]["env"] == "prod" and "state" in j for j in data)


def test_online_get_unknown_job_exits_4(online: tuple[str, Path]) -> None:
    run = on(online, ["job", "get", "ghost"])
    assert run.code == 4
    assert "ghost" in one_error_line(run)


def test_result_submit_records_the_result(online: tuple[str, Path]) -> None:
    run = on(
        online,
        ["result", "submit", "--job", "logrotate@web1", "--status", "failure",
         "--duration", "27", "--exit-code", "3", "--output-file", "-"],
        input="disk full\n",
    )  # fmt: skip
    assert run.code == 0, run.err
    job = json.loads(on(online, ["job", "get", "logrotate@web1", "-o", "json"]).out)
    assert job["state"]["last_status"] == "failure"
    assert job["state"]["last_exit_code"] == 3
    assert job["state"]["last_duration"] == 27


def test_result_submit_with_output_limit_zero_sends_empty_output(
    online: tuple[str, Path], tmp_path: Path
) -> None:
    log = tmp_path / "out.log"
    log.write_text("lots of output\n" * 100)
    run = on(
        online,
        ["result", "submit", "--job", "logrotate@web1", "--status", "success",
         "--output-file", str(log), "--output-limit", "0"],
    )  # fmt: skip
    assert run.code == 0, run.err
    job = json.loads(on(online, ["job", "get", "logrotate@web1", "-o", "json"]).out)
    assert job["state"]["last_status"] == "success"


def test_result_submit_unknown_job_exits_4(online: tuple[str, Path]) -> None:
    run = on(online, ["result", "submit", "--job", "ghost@nowhere", "--status", "success"])
    assert run.code == 4
    assert "ghost" in one_error_line(run)


def test_missing_token_exits_6(online: tuple[str, Path]) -> None:
    url, _ = online
    run = cm(["job", "list"], env={"CRONMETRICS_URL": url})
    assert run.code == 6
    one_error_line(run)


def test_read_token_cannot_write_exits_6(online: tuple[str, Path]) -> None:
    url, _ = online
    env = {"CRONMETRICS_URL": url, "CRONMETRICS_TOKEN": "reader-token-xyz"}
    run = cm(["result", "submit", "--job", "cert_renew", "--status", "success"], env=env)
    assert run.code == 6
    one_error_line(run)


def test_unreachable_server_exits_3_with_one_line() -> None:
    from liveserver import free_port

    url = f"http://127.0.0.1:{free_port()}"
    run = cm(["job", "list", "--url", url])
    assert run.code == 3
    assert "cannot reach" in one_error_line(run)


def test_online_spec_examples_add_update_list_delete(online: tuple[str, Path]) -> None:
    _, jobs = online
    run = on(online, ["job", "add", "--name", "backup", "--host", "db1", "--threshold", "600",
                      "--label", "env=prod"])  # fmt: skip
    assert run.code == 0, run.err
    assert (jobs / "backup@db1.yaml").exists()
    assert on(online, ["job", "add", "--name", "backup", "--host", "db1",
                       "--threshold", "600"]).code == 5  # fmt: skip
    run = on(online, ["job", "update", "backup@db1", "--maintenance", "true"])
    assert run.code == 0, run.err
    job = json.loads(on(online, ["job", "get", "backup@db1", "-o", "json"]).out)
    assert job["status"] == "maintenance"
    listed = json.loads(on(online, ["job", "list", "--label", "env=prod", "-o", "json"]).out)
    assert "backup@db1" in {j["id"] for j in listed}
    assert on(online, ["job", "delete", "backup@db1"]).code == 0
    assert on(online, ["job", "get", "backup@db1"]).code == 4


def test_online_stats_prints_what_the_server_returns(online: tuple[str, Path]) -> None:
    url, _ = online
    headers = {"Authorization": f"Bearer {TOKEN}"}
    expected = httpx.get(f"{url}/api/job/cert_renew/stats", headers=headers).json()
    run = on(online, ["job", "stats", "cert_renew", "-o", "json"])
    assert run.code == 0, run.err
    shown = json.loads(run.out)
    assert shown["job_id"] == "cert_renew"
    assert {k: v for k, v in shown.items() if k != "now"} == {
        k: v for k, v in expected.items() if k != "now"
    }
    table = on(online, ["job", "stats", "cert_renew"])
    assert table.code == 0
    assert all(len(line) <= 80 for line in table.out.splitlines())


def test_result_list_shows_the_newest_results_with_their_output(
    online: tuple[str, Path],
) -> None:
    for i, status in enumerate(["success", "failure"]):
        run = on(
            online,
            ["result", "submit", "--job", "logrotate@web1", "--status", status,
             "--exit-code", str(i), "--duration", "2.5", "--output-file", "-", "-q"],
            input=f"rotating\nstep {i} done\n",
        )  # fmt: skip
        assert run.code == 0, run.err
    listed = on(online, ["result", "list", "--job", "logrotate@web1", "-o", "json"])
    assert listed.code == 0, listed.err
    results = json.loads(listed.out)
    assert [(r["status"], r["exit_code"]) for r in results[:2]] == [("failure", 1), ("success", 0)]
    table = on(online, ["result", "list", "--job", "logrotate@web1", "--limit", "2"])
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == ["JOB", "STATUS", "WHEN", "EXIT", "DURATION", "OUTPUT"]
    assert len(lines) == 3
    assert "failure" in lines[1] and "step 1 done" in lines[1] and "2.5s" in lines[1]
    assert all(len(line) <= 80 for line in lines)
    everywhere = json.loads(on(online, ["result", "list", "-o", "json", "--limit", "200"]).out)
    assert {r["job_id"] for r in everywhere} >= {"logrotate@web1"}


def test_result_list_errors_are_one_line(online: tuple[str, Path]) -> None:
    assert on(online, ["result", "list", "--job", "ghost"]).code == 4
    assert on(online, ["result", "list", "--limit", "0"]).code == 2
    bad = on(online, ["result", "list", "--job", "a@b@c"])
    assert bad.code == 2, bad.err
    url, _ = online
    denied = cm(["result", "list"], env={"CRONMETRICS_URL": url, "CRONMETRICS_TOKEN": "nope"})
    assert denied.code == 6
    assert len(denied.err.strip().splitlines()) == 1


def test_tls_needs_the_ca_or_insecure(tmp_path: Path, jobs_dir: Path) -> None:
    from liveserver import live_server
    from test_tls import self_signed

    cert, key = self_signed(tmp_path)
    args = ("--no-auth", "--tls-cert", str(cert), "--tls-key", str(key))
    with live_server(jobs_dir, tmp_path / "state", args=args, scheme="https") as live:
        untrusted = cm(["job", "get", "cert_renew", "--url", live.url])
        assert untrusted.code == 3
        assert "certificate" in one_error_line(untrusted).lower()
        trusted = cm(["job", "get", "cert_renew", "--url", live.url, "--cacert", str(cert)])
        assert trusted.code == 0, trusted.err
        insecure = cm(["job", "get", "cert_renew", "--url", live.url, "--insecure", "-o", "json"])
        assert json.loads(insecure.out)["id"] == "cert_renew"
