"""Schemathesis fuzzes a live server from its own OpenAPI document.

Every documented operation, job writes and submissions included, gets a bounded number
of generated requests (valid and invalid ones) with a fixed seed. The run fails on any
5xx, any status code the document does not list for the operation, and any response
whose content type or body does not match the document. The server runs on a temporary
copy of jobs.d (the fuzzer creates, rewrites and deletes jobs there) with
``unknown_jobs: accept``, so random submissions are recorded instead of stopping at 404
and reach the store, the history and ``/metrics``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from liveserver import live_server

pytest.importorskip("schemathesis", reason="pip install -e '.[test]' installs schemathesis")

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
MAX_EXAMPLES = 20
SEED = 8
WORKERS = 1  # schemathesis 4.32 hit an internal KeyError once with 4 workers


def _tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _server_errors(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if '"level": "error"' in line)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_live_server_conforms_to_its_openapi_document(jobs_dir: Path, tmp_path: Path) -> None:
    env = {"CRONMETRICS_UNKNOWN_JOBS": "accept"}
    with live_server(jobs_dir, tmp_path / "state", env=env) as server:
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.url}/api/openapi.yaml",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            str(WORKERS),
            "--request-timeout",
            "30",
            "--generation-database",
            "none",
            "--no-color",
        ]
        run = subprocess.run(
            command,
            cwd=tmp_path,  # no schemathesis.toml or report of the checkout applies
            capture_output=True,
            text=True,
            timeout=280,
        )
        log = server.log()
    assert run.returncode == 0, (
        f"schemathesis found problems (exit {run.returncode}):\n{_tail(run.stdout)}\n"
        f"{_tail(run.stderr, 20)}\nserver errors:\n{_tail(_server_errors(log), 40)}"
    )
    counts = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert counts is not None, _tail(run.stdout)
    assert int(counts.group(1)) == int(counts.group(2)) > 16 * MAX_EXAMPLES
    assert _server_errors(log) == ""


# -- what the fuzzer found, pinned as fast regression tests -------------------------------


def test_creating_a_job_whose_id_cannot_be_a_file_name_is_a_400(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client()
    body = {"job_name": "backup", "host": "h" * 253, "automatic_failure_threshold": 60}
    response = client.post("/api/job", json=body)
    assert response.status_code == 400
    assert response.json["error"]["field"] == "host"


@pytest.mark.parametrize(
    "before",
    [
        "99999999999d",
        "1" + "0" * 5000 + "d",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
    ],
)
def test_purging_with_a_cutoff_beyond_representable_times_is_not_a_server_error(
    make_client,  # type: ignore[no-untyped-def]
    before: str,
) -> None:
    client = make_client({"a.yaml": "job_name: a\nautomatic_failure_threshold: 60\n"})
    for path in ("/api/job/a/results", "/api/job-result"):
        response = client.delete(path, query_string={"before": before})
        assert response.status_code in (200, 400), response.json
