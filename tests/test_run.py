"""``cronmetrics run``: real child processes, a real server, signals, timeouts, big output."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from recorder import Answer, recorder

from cronmetrics.client.http import Client
from cronmetrics.client.retry import Retry
from cronmetrics.client.runner import Outcome, OutputTail, Reporter, run_command
from cronmetrics.errors import RateLimited, ServerUnavailable, ValidationError

REPO = Path(__file__).resolve().parent.parent
JOB = "logrotate@web1"


@pytest.fixture(scope="module")
def url(bundled_url: str) -> str:
    return bundled_url


def cronmetrics_run(
    url: str, *args: str, job: str = JOB, **popen: object
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cronmetrics", "run", "--job", job, *args]
    env = {**os.environ, "CRONMETRICS_URL": url}
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
        **popen,
    )


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, bytes, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err.decode(errors="replace")


def last_results(url: str, job: str = JOB, limit: int = 2) -> list[dict[str, object]]:
    """The job's newest results (newest first), from the history API."""
    body = httpx.get(f"{url}/api/job/{job}/results", params={"limit": limit}, timeout=5).json()
    return body["results"]  # type: ignore[no-any-return]


def state(url: str, job: str = JOB) -> dict[str, object]:
    body = httpx.get(f"{url}/api/job/{job}", timeout=5).json()
    return body["state"]  # type: ignore[no-any-return]


# -- end to end ----------------------------------------------------------------------------


def test_exit_code_output_and_result_are_the_commands_own(url: str) -> None:
    before = state(url)["runs_total"]
    proc = cronmetrics_run(url, "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 3")
    code, out, err = finish(proc)
    assert code == 3
    assert out == b"to-out\n"
    assert "to-err" in err
    after = state(url)
    assert after["last_status"] == "failure"
    assert after["last_exit_code"] == 3
    assert after["runs_total"] == before + 1  # type: ignore[operator]
    assert after["running"] is False
    final, start = last_results(url)
    assert (start["status"], final["status"]) == ("start", "failure")
    assert start["run_id"] == final["run_id"]
    assert len(str(final["run_id"])) == 32
    assert "to-out" in str(final["output"])
    assert "to-err" in str(final["output"])


def test_arguments_after_double_dash_reach_the_command_untouched(url: str) -> None:
    proc = cronmetrics_run(url, "--", "printf", "%s|", "-a", "b c", "--job")
    code, out, _ = finish(proc)
    assert (code, out) == (0, b"-a|b c|--job|")
    assert state(url)["last_status"] == "success"


def test_start_is_reported_while_the_command_runs(url: str) -> None:
    probe = (  # stdlib only: a quick start
        "import json, sys, time, urllib.request\n"
        "end = time.monotonic() + 20\n"
        "while time.monotonic() < end:\n"
        f"    s = json.load(urllib.request.urlopen({url!r} + '/api/job/{JOB}'))['state']\n"
        "    if s['running']:\n"
        "        sys.exit(0)\n"
        "    time.sleep(0.05)\n"
        "sys.exit(9)\n"
    )
    code, _, err = finish(cronmetrics_run(url, "--", sys.executable, "-c", probe))
    assert code == 0, err
    assert state(url)["running"] is False


def test_big_output_passes_through_whole(url: str) -> None:
    script = "import sys; sys.stdout.write('x' * 2_000_000 + 'END'); sys.stdout.flush()"
    code, out, err = finish(cronmetrics_run(url, "--", sys.executable, "-c", script))
    assert code == 0, err
    assert len(out) == 2_000_003
    assert out.endswith(b"END")
    reported = str(last_results(url, limit=1)[0]["output"])
    assert reported.endswith("END")
    assert len(reported) <= 10_000  # the tail only (the server may cut it further)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_are_forwarded_to_the_command(url: str, sig: signal.Signals) -> None:
    script = (
        f'trap "echo got {sig.name}; exit 42" {sig.name[3:]}; echo ready; '
        "while :; do sleep 0.05; done"
    )
    proc = cronmetrics_run(url, "--", "sh", "-c", script)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(sig)
    code, out, err = finish(proc)
    assert code == 42, err
    assert f"got {sig.name}".encode() in out
    assert state(url)["last_exit_code"] == 42


def test_timeout_kills_the_command_and_reports_failure(url: str) -> None:
    proc = cronmetrics_run(url, "--timeout", "1", "--", "sh", "-c", "echo started; sleep 60")
    code, out, err = finish(proc)
    assert code == 128 + signal.SIGTERM
    assert out == b"started\n"
    assert "timed out after 1s" in err
    s = state(url)
    assert (s["last_status"], s["last_exit_code"]) == ("failure", 143)
    assert "timed out after 1s" in str(last_results(url, limit=1)[0]["output"])


def test_timeout_escalates_to_sigkill_when_term_is_ignored(url: str) -> None:
    args = ["--timeout", "1", "--kill-after", "1", "--"]
    proc = cronmetrics_run(url, *args, "sh", "-c", "trap '' TERM; sleep 60")
    code, _, err = finish(proc)
    assert code == 128 + signal.SIGKILL
    assert "SIGKILL" in err


def test_command_not_found_exits_127_and_reports_failure(url: str) -> None:
    code, _, err = finish(cronmetrics_run(url, "--", "/nonexistent/backup.sh"))
    assert code == 127
    assert "command not found" in err
    assert "Traceback" not in err
    s = state(url)
    assert (s["last_status"], s["last_exit_code"]) == ("failure", 127)


def test_unknown_job_warns_but_keeps_the_exit_code(url: str) -> None:
    code, _, err = finish(cronmetrics_run(url, "--", "sh", "-c", "exit 4", job="ghost@db9"))
    assert code == 4
    assert "warning" in err
    assert "ghost@db9" in err


def test_server_down_keeps_exit_code_and_costs_little_time() -> None:
    from liveserver import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = cronmetrics_run(closed, "--report-timeout", "1", "--", "sh", "-c", "exit 7")
    code, _, err = finish(proc)
    elapsed = time.monotonic() - started
    assert code == 7
    assert "could not report" in err
    assert "Traceback" not in err
    # the reporting budget (1 s) plus interpreter start-up; without a budget it would hang
    assert elapsed < 10


def test_invalid_job_id_runs_the_command_and_keeps_its_exit_code(url: str) -> None:
    code, _, err = finish(cronmetrics_run(url, "--", "sh", "-c", "exit 4", job="bad/id"))
    assert code == 4
    assert "--job 'bad/id'" in err


# -- in process: what gets reported ---------------------------------------------------------


def test_output_tail_memory_is_bounded() -> None:
    tail = OutputTail(10_000)
    chunk = b"y" * 65536
    for _ in range(200):  # 13 MB through
        tail.feed(chunk)
        assert tail.held <= 10_000 + len(chunk)
    tail.feed(b"LAST")
    assert tail.total == 200 * 65536 + 4
    text = tail.text()
    assert len(text) == 10_000
    assert text.endswith("yLAST")


def test_run_command_keeps_only_the_tail_of_big_output() -> None:
    script = "import sys; sys.stdout.write('x' * 1_500_000 + 'TAIL-END')"
    sink = io.BytesIO()
    outcome = run_command(
        [sys.executable, "-c", script], output_limit=4096, stdout=sink, stderr=io.BytesIO()
    )
    assert outcome.exit_code == 0
    assert len(sink.getvalue()) == 1_500_008
    assert len(outcome.output) == 4096
    assert outcome.output.endswith("TAIL-END")


def test_reports_share_one_run_id_and_carry_output_and_note() -> None:
    warnings: list[str] = []
    with recorder() as rec:
        client = Client(rec.url)
        reporter = Reporter(lambda: client, JOB, "abc123", budget=5, warn=warnings.append)
        reporter.start()
        assert reporter.finish(Outcome(143, 1.25, "last words\n", "killed by SIGTERM", 15))
    start, final = rec.bodies()
    assert start["status"] == "start"
    assert (start["job_name"], start["host"], start["run_id"]) == ("logrotate", "web1", "abc123")
    assert final["status"] == "failure"
    assert (final["exit_code"], final["duration"], final["run_id"]) == (143, 1.25, "abc123")
    assert final["output"] == "last words\n[cronmetrics run] killed by SIGTERM\n"
    assert warnings == []


def busy(status: int = 503) -> Answer:
    return Answer(status, {"error": {"code": "UNAVAILABLE", "message": "busy"}})


def test_every_retry_of_a_report_carries_the_same_run_id() -> None:
    warnings: list[str] = []
    with recorder(busy(), busy(502), busy()) as rec:
        client = Client(rec.url, rng=lambda: 0.0)
        reporter = Reporter(lambda: client, JOB, "run-42", budget=5, warn=warnings.append)
        assert reporter.finish(Outcome(0, 0.5, "", None))
    bodies = rec.bodies()
    assert len(bodies) == 4  # three refusals, then accepted
    assert {b["run_id"] for b in bodies} == {"run-42"}
    assert all(b == bodies[0] for b in bodies)  # the same report, byte for byte in meaning
    assert warnings == []


def test_backoff_is_exponential_with_full_jitter() -> None:
    sleeps: list[float] = []
    with recorder(busy(), busy(), busy(), busy()) as rec:
        client = Client(rec.url, sleep=sleeps.append, rng=lambda: 0.5)
        client.request_retrying("POST", "/api/job-result", json={"a": 1}, budget=60)
        assert len(rec.seen) == 5
    # half of min(cap, 0.25 * 2**n): the jitter draws from [0, that]
    assert sleeps == [0.125, 0.25, 0.5, 1.0]


def test_jitter_spreads_the_waits_of_a_fleet() -> None:
    draws = iter([0.0, 0.99])
    waits = [Retry(60, rng=lambda: next(draws)).next_wait(ServerUnavailable("x")) for _ in "ab"]
    assert waits[0] == 0.0
    assert waits[1] == pytest.approx(0.2475)


def test_retry_after_of_a_429_is_honoured_within_the_budget() -> None:
    sleeps: list[float] = []
    limited = Answer(
        429,
        {"error": {"code": "RATE_LIMITED", "message": "too many failed attempts"}},
        {"Retry-After": "2"},
    )
    with recorder(limited) as rec:
        client = Client(rec.url, sleep=sleeps.append)
        client.request_retrying("POST", "/api/job-result", json={}, budget=10)
        assert len(rec.seen) == 2
    assert sleeps == [2.0]


def test_a_429_longer_than_the_budget_gives_up_at_once() -> None:
    sleeps: list[float] = []
    limited = Answer(
        429, {"error": {"code": "RATE_LIMITED", "message": "slow down"}}, {"Retry-After": "60"}
    )
    with recorder(limited) as rec:
        client = Client(rec.url, sleep=sleeps.append)
        with pytest.raises(RateLimited) as caught:
            client.request_retrying("POST", "/api/job-result", json={}, budget=10)
        assert len(rec.seen) == 1
    assert sleeps == []
    assert caught.value.retry_after == 60


def test_retries_stop_at_the_budget() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with recorder(*[busy()] * 100) as rec:
        client = Client(rec.url, sleep=sleep, clock=lambda: now[0], rng=lambda: 1.0)
        with pytest.raises(ServerUnavailable, match="busy"):
            client.request_retrying("POST", "/api/job-result", json={}, budget=3)
        tries = len(rec.seen)
    assert now[0] <= 3
    assert 3 <= tries < 10


def test_a_4xx_is_not_retried() -> None:
    refused = Answer(400, {"error": {"code": "VALIDATION_ERROR", "message": "bad", "field": "x"}})
    with recorder(refused) as rec:
        with pytest.raises(ValidationError):
            Client(rec.url).request_retrying("POST", "/api/job-result", json={}, budget=10)
        assert len(rec.seen) == 1


def test_helper_threads_leave_forwarded_signals_to_the_main_thread() -> None:
    """A SIGHUP the kernel hands to a pump thread would never reach the command: the main
    thread, blocked in waitpid, is the only one that runs Python's handler."""
    import threading

    from cronmetrics.client.runner import FORWARDED, _main_thread_signals

    seen: list[set[int]] = []
    thread = threading.Thread(
        target=lambda: seen.append(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    )
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with _main_thread_signals(FORWARDED):
        thread.start()
    thread.join()
    assert set(FORWARDED) <= seen[0]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # the main thread's again


HANDLER_FLAGGED_ON_ANOTHER_THREAD = """
import signal, sys, threading, time
from cronmetrics.client.runner import run_command

ready = threading.Event()

class Sink:
    def write(self, data):
        if b"ready" in data:
            ready.set()
    def flush(self):
        pass

MAIN = f"/proc/self/task/{threading.main_thread().native_id}/syscall"

def waiting():
    # the main thread is blocked in a system call that is not the GIL's futex (202):
    # its wait for the command
    with open(MAIN) as f:
        call = f.read().split()[0]
    return call not in ("running", "202")

def trip():
    # thread-directed: the C handler runs here, while this thread holds the GIL, and
    # only flags Python's handler; the main thread is already waiting for the command
    ready.wait(20)
    deadline = time.monotonic() + 20
    while not waiting() and time.monotonic() < deadline:
        time.sleep(0.01)
    signal.pthread_kill(threading.get_ident(), signal.SIGHUP)

threading.Thread(target=trip, daemon=True).start()
script = 'trap "echo got HUP; exit 42" HUP; echo ready; while :; do sleep 0.05; done'
outcome = run_command(["sh", "-c", script], stdout=Sink())
print(outcome.exit_code, outcome.note)
"""


def test_a_signal_flagged_while_the_main_thread_waits_is_still_forwarded() -> None:
    """The main thread waits on a pipe that every handled signal writes to: a signal whose
    C handler ran on another thread, or just before the wait began, wakes it and is
    forwarded (a plain ``waitpid`` slept through it and the run hung for ever)."""
    proc = subprocess.run(
        [sys.executable, "-c", HANDLER_FLAGGED_ON_ANOTHER_THREAD],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert proc.stdout.split() == ["42", "received", "SIGHUP", "(forwarded)"], proc.stderr


def test_the_command_s_exit_ends_the_wait_not_its_backstop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wait wakes on ``SIGCHLD``: with a backstop of an hour, a quick command still
    returns (without that wake-up this test would run into pytest's timeout)."""
    import cronmetrics.client.runner as runner

    monkeypatch.setattr(runner, "WAIT_BACKSTOP", 3600.0)
    started = time.monotonic()
    outcome = run_command(["sh", "-c", "sleep 0.2"])
    assert outcome.exit_code == 0
    assert time.monotonic() - started < 60


def test_a_callers_own_sigchld_handler_still_runs_while_a_command_runs() -> None:
    """In process: the wait wakes on a handler already there instead of replacing it."""
    got: list[int] = []
    previous = signal.signal(signal.SIGCHLD, lambda signum, frame: got.append(signum))
    try:
        background = subprocess.Popen(["sh", "-c", "sleep 0.1"])
        assert run_command(["sh", "-c", "sleep 0.5; exit 4"]).exit_code == 4
        background.wait()
        assert got, "the caller's SIGCHLD handler was replaced for the whole run"
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_the_wait_works_past_file_descriptor_1023() -> None:
    """The wakeup pipe may get a number ``select()`` cannot take: the wait polls."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"needs 1,200 file descriptors, the limit is {soft}")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert run_command(["sh", "-c", "sleep 0.3; exit 3"]).exit_code == 3
    finally:
        for fd in held:
            os.close(fd)


def test_an_inherited_ignored_sigchld_still_gives_the_commands_exit_code() -> None:
    """cron or a supervisor may start us with SIGCHLD ignored, which makes the kernel
    reap children itself: the command's exit code would be lost (reported as 0)."""
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        assert run_command(["sh", "-c", "exit 3"]).exit_code == 3
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert signal.getsignal(signal.SIGCHLD) == previous  # restored
