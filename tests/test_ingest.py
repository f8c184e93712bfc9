"""``cronmetrics ingest``: offsets, malformed lines, re-runs, rotation, partial lines, --follow."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from liveserver import wait_for
from recorder import Answer, recorder
from test_cli_jobs import Run, cm

from cronmetrics.client.http import Client
from cronmetrics.client.ingest import Ingester, parse_line
from cronmetrics.client.tailing import Offset, default_state_path

REPO = Path(__file__).resolve().parent.parent
JOB = "home_rsync"  # host-agnostic, threshold only


@pytest.fixture(scope="module")
def url(bundled_url: str) -> str:
    return bundled_url


def runs(url: str, job: str = JOB) -> int:
    state = httpx.get(f"{url}/api/job/{job}", timeout=5).json()["state"]
    return int(state["runs_total"])


def line(minutes_ago: float, code: int = 0, msg: str = "ok", **extra: object) -> str:
    ts = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
    return json.dumps({"ts": ts.isoformat(), "exit": code, "msg": msg, **extra}) + "\n"


def ingest(url: str, path: Path, *args: str, job: str = JOB) -> Run:
    return cm(["ingest", str(path), "--job", job, "--url", url, *args])


def test_lines_are_submitted_and_malformed_ones_reported_by_number(
    url: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    epoch = int(time.time()) - 600
    log.write_text(
        line(50)
        + "{not json\n"
        + line(40, 2, "disk full")
        + '{"ts": "2025-01-01T00:00:00Z", "msg": "no exit"}\n'
        + "\n"
        + json.dumps({"ts": epoch, "exit": 0, "duration": 12.5}) + "\n"
        + '{"ts": "yesterday", "exit": 0}\n'
    )  # fmt: skip
    before = runs(url)
    result = ingest(url, log)
    assert result.code == 1  # some lines were skipped
    assert "Traceback" not in result.err
    assert f"{log}:2: malformed JSON" in result.err
    assert f"{log}:4: missing 'exit'" in result.err
    assert f"{log}:7: " in result.err
    assert "3 results submitted, 3 lines skipped" in result.err
    assert runs(url) == before + 3
    state = Offset.load(default_state_path(log))
    assert (state.offset, state.line) == (log.stat().st_size, 7)
    assert state.inode == log.stat().st_ino


def test_rerun_adds_nothing_and_appended_lines_are_picked_up(url: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    log.write_text(line(30) + line(20, 1))
    before = runs(url)
    assert ingest(url, log).code == 0
    assert runs(url) == before + 2
    again = ingest(url, log)
    assert again.code == 0
    assert "0 results submitted" in again.err
    assert runs(url) == before + 2
    with log.open("a") as f:
        f.write(line(10))
    assert ingest(url, log).code == 0
    assert runs(url) == before + 3
    with log.open("a") as f:
        f.write(line(9) + line(8) + line(7))
    assert ingest(url, log).code == 0
    assert ingest(url, log).code == 0  # past the fingerprinted head now: still nothing new
    assert runs(url) == before + 6
    assert Offset.load(default_state_path(log)).line == 6


def test_partial_last_line_is_left_for_the_next_run(url: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    full = line(5)
    log.write_text(line(6) + full[:20])
    before = runs(url)
    assert ingest(url, log).code == 0  # the half line is not "malformed"
    assert runs(url) == before + 1
    with log.open("a") as f:
        f.write(full[20:])
    assert ingest(url, log).code == 0
    assert runs(url) == before + 2


def test_rotated_or_truncated_file_is_read_from_the_start(url: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    log.write_text(line(30) + line(29) + line(28))
    before = runs(url)
    assert ingest(url, log).code == 0
    os.rename(log, tmp_path / "runs.jsonl.1")  # logrotate: new inode at the same path
    log.write_text(line(5))
    assert ingest(url, log).code == 0
    assert runs(url) == before + 4
    log.write_text("")  # copytruncate: same inode, smaller
    with log.open("a") as f:
        f.write(line(2))
    assert ingest(url, log).code == 0
    assert runs(url) == before + 5


def test_state_file_option_and_offset_kept_when_server_is_down(url: str, tmp_path: Path) -> None:
    from liveserver import free_port

    log = tmp_path / "runs.jsonl"
    state = tmp_path / "elsewhere.offset"
    log.write_text(line(3) + line(2))
    down = cm(["ingest", str(log), "--job", JOB, "--state", str(state),
               "--url", f"http://127.0.0.1:{free_port()}", "--retry-timeout", "0.5"])  # fmt: skip
    assert down.code == 3
    assert "cannot reach" in down.err
    assert Offset.load(state).offset == 0  # nothing acknowledged, nothing skipped
    before = runs(url)
    assert ingest(url, log, "--state", str(state)).code == 0
    assert runs(url) == before + 2
    assert Offset.load(state).offset == log.stat().st_size
    assert not default_state_path(log).exists()


def test_unknown_job_is_an_error_with_exit_4(url: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    log.write_text(line(1))
    result = ingest(url, log, job="ghost@nowhere")
    assert result.code == 4
    assert Offset.load(default_state_path(log)).offset == 0


def test_items_the_server_refuses_are_reported_and_the_rest_kept(url: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    log.write_text(line(4) + json.dumps({"ts": future, "exit": 0}) + "\n" + line(3))
    before = runs(url)
    result = ingest(url, log)
    assert result.code == 1
    assert f"{log}:2: refused by the server" in result.err
    assert "future" in result.err
    assert runs(url) == before + 2


def test_follow_tails_across_rotation_and_stops_on_sigterm(url: str, tmp_path: Path) -> None:
    log = tmp_path / "follow.jsonl"
    log.write_text(line(9))
    before = runs(url)
    cmd = [sys.executable, "-m", "cronmetrics", "ingest", str(log), "--job", JOB,
           "--url", url, "--follow", "--poll", "0.05"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        wait_for(lambda: runs(url) == before + 1, "1 run", process=proc)
        with log.open("a") as f:
            f.write(line(8) + line(7))
        wait_for(lambda: runs(url) == before + 3, "3 runs", process=proc)
        with log.open("a") as f:
            f.write(line(6, msg="written just before rotation"))
        os.rename(log, tmp_path / "follow.jsonl.1")
        log.write_text(line(5))
        wait_for(lambda: runs(url) == before + 5, "5 runs", process=proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert runs(url) == before + 5
    assert Offset.load(default_state_path(log)).inode == log.stat().st_ino


# -- in process ----------------------------------------------------------------------------


def test_batches_respect_the_batch_size_and_state_follows_acks(tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    log.write_text("".join(line(10 - i) for i in range(5)))
    acked_offsets: list[int] = []
    state_path = tmp_path / "state"
    # a refusal that names no line: not retried, not skipped, the run stops there
    down = Answer(400, {"error": {"code": "VALIDATION_ERROR", "message": "down", "field": None}})
    with recorder(Answer(), Answer(), down) as rec:
        rec.on_request = lambda seen: acked_offsets.append(Offset.load(state_path).offset)
        client = Client(rec.url)
        ingester = Ingester(log, JOB, client, state_path=state_path, batch=2, warn=print,
                            retry_budget=30)  # fmt: skip
        with ingester.open() as handle, pytest.raises(Exception, match="down"):
            ingester.drain(handle)
        bodies = rec.bodies()
    assert [len(b) for b in bodies] == [2, 2, 1]
    lines = log.read_bytes().splitlines(keepends=True)
    # state is written after each acknowledged batch, never before
    assert acked_offsets == [0, len(b"".join(lines[:2])), len(b"".join(lines[:4]))]
    assert Offset.load(state_path).line == 4


def test_parse_line_maps_fields_and_limits_msg() -> None:
    parsed = parse_line(
        b'{"ts": 1700000000, "exit": 3, "msg": "abcdef", "duration": 2}', "job", "h1", 4
    )
    assert parsed == {
        "job_name": "job",
        "host": "h1",
        "status": "failure",
        "timestamp": "2023-11-14T22:13:20Z",
        "exit_code": 3,
        "output": "cdef",
        "duration": 2.0,
    }
    assert parse_line(b"   ", "job", None, 10) is None
    assert parse_line(b'{"ts": 1, "exit": true}', "job", None, 10) == "'exit' must be an integer"
    assert "expected a JSON object" in str(parse_line(b"[1]", "job", None, 10))
