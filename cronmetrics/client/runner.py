"""``cronmetrics run --job ID -- CMD ...``: wrap a cron command and report on it.

The wrapped command comes first: its output still reaches cron (passed through as it
arrives), its exit code is ours, signals sent to us reach it, and a slow or absent server
costs it at most a few seconds of retries (the start report is sent in the background
while the command already runs). Only the last ``--output-limit`` bytes of the output are
kept in memory, whatever the command prints.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

from cronmetrics.client.failures import Hopeless, advice
from cronmetrics.client.http import Client
from cronmetrics.client.settings import split_job_id
from cronmetrics.client.signals import drain, handling, wakeup
from cronmetrics.errors import CronmetricsError, ServerUnavailable

#: typing costs a cron run ~3 ms to import: its names are for the type checker only
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

__all__ = ["REPORT_BUDGET", "Outcome", "OutputTail", "Reporter", "run", "run_command"]

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
READ_SIZE = 65536
#: After the command exits, how long to wait for its pipes to close (a daemon it started
#: may hold them open forever).
DRAIN_TIMEOUT = 2.0
START_BUDGET = 3.0
#: The longest the wait for the command sleeps without looking at it (a signal or the
#: command's exit wakes it before that).
WAIT_BACKSTOP = 1.0
_CHILD_EXITED = (signal.SIGCHLD,) if hasattr(signal, "SIGCHLD") else ()
#: Default total time spent reporting one run (both reports, every retry); ``--report-timeout``.
REPORT_BUDGET = 10.0


class OutputTail:
    """The last ``limit`` bytes of a stream of chunks, in bounded memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._lock = threading.Lock()

    def feed(self, data: bytes) -> None:
        with self._lock:
            self.total += len(data)
            if self.limit <= 0:
                return
            if len(data) > self.limit:
                data = data[-self.limit :]
            self._chunks.append(data)
            self._size += len(data)
            while self._size - len(self._chunks[0]) >= self.limit:
                self._size -= len(self._chunks.popleft())

    @property
    def held(self) -> int:
        """Bytes held right now (at most ``limit`` plus one chunk)."""
        return self._size

    def text(self) -> str:
        with self._lock:
            data = b"".join(self._chunks)[-self.limit :] if self.limit > 0 else b""
        return data.decode("utf-8", "replace")


class Outcome:
    """What running the command gave (a plain class: ``dataclasses`` costs ~9 ms)."""

    __slots__ = ("duration", "exit_code", "note", "output", "signal")

    def __init__(
        self,
        exit_code: int,
        duration: float,
        output: str,
        note: str | None = None,
        signal: int | None = None,
    ) -> None:
        self.exit_code = exit_code
        self.duration = duration
        self.output = output
        self.note = note
        self.signal = signal


def _pump(source: IO[bytes], sink: IO[bytes] | None, tail: OutputTail) -> None:
    fd = source.fileno()
    while True:
        try:
            data = os.read(fd, READ_SIZE)
        except OSError:
            break
        if not data:
            break
        tail.feed(data)
        if sink is not None:
            try:
                sink.write(data)
                sink.flush()
            except (OSError, ValueError):
                sink = None  # our own stdout went away: keep capturing, stop echoing


def _exit_status(returncode: int) -> tuple[int, int | None]:
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_command(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    kill_after: float = 10.0,
    output_limit: int = 10_000,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_start: Callable[[], None] | None = None,
) -> Outcome:
    """Run ``argv``; pass its output through to ``stdout``/``stderr`` and keep the tail.

    The child gets its own process group when we are not attached to a terminal (cron),
    so a timeout or a forwarded signal reaches everything it started.
    """
    tail = OutputTail(output_limit)
    started = clock()
    own_group = not _isatty(sys.stdin)
    children: list[subprocess.Popen[bytes]] = []
    received: list[int] = []

    def send(sig: int) -> None:
        if not children:
            return
        try:
            if own_group:
                os.killpg(children[0].pid, sig)
            else:
                children[0].send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        send(signum)

    # Installed before the child starts: a SIGTERM during start-up must not kill us and
    # orphan the command; it is delivered once the child exists.
    note: str | None = None
    with wakeup(also=_CHILD_EXITED) as wake, handling(FORWARDED, forward):
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=own_group,
            )
        except OSError as exc:
            code, why = _spawn_failure(exc)
            message = f"{argv[0]}: {why}"
            return Outcome(code, clock() - started, message, message)
        children.append(proc)
        for number in list(received):
            send(number)
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, stdout, tail), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, stderr, tail), daemon=True),
        ]
        with _main_thread_signals(FORWARDED):
            if on_start is not None:
                on_start()  # starts the start report's thread
            for pump in pumps:
                pump.start()
        try:
            _wait(proc, timeout, wake)
        except subprocess.TimeoutExpired:
            note = f"timed out after {timeout:g}s; sent SIGTERM"
            send(signal.SIGTERM)
            try:
                _wait(proc, kill_after, wake)
            except subprocess.TimeoutExpired:
                note = f"timed out after {timeout:g}s; killed (SIGKILL after {kill_after:g}s)"
                send(signal.SIGKILL)
                _wait(proc, None, wake)
        if own_group and note is not None:
            send(signal.SIGKILL)  # leftovers of a timed-out command
    deadline = clock() + DRAIN_TIMEOUT
    for pump in pumps:
        pump.join(max(0.0, deadline - clock()))
    for pipe in (proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            pipe.close()
    code, killed_by = _exit_status(proc.returncode)
    if note is None and killed_by is not None:
        note = f"killed by {_signal_name(killed_by)}"
    if note is None and received:
        note = f"received {_signal_name(received[0])} (forwarded)"
    return Outcome(code, clock() - started, tail.text(), note, killed_by)


def _wait(proc: subprocess.Popen[bytes], timeout: float | None, wake: int | None) -> None:
    """``proc.wait(timeout)`` that runs a forwarded signal's handler as it arrives.

    ``wake`` (see :func:`~cronmetrics.client.signals.wakeup`) is readable after any handled
    signal, the child's ``SIGCHLD`` included, so no signal is slept through and the exit
    is seen at once. The select timeout is a backstop only.
    """
    if wake is None:
        proc.wait(timeout)
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    poller = select.poll() if hasattr(select, "poll") else None  # select() stops at fd 1023
    if poller is not None:
        poller.register(wake, select.POLLIN)
    while proc.poll() is None:
        left = (
            WAIT_BACKSTOP if deadline is None else min(WAIT_BACKSTOP, deadline - time.monotonic())
        )
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)
        if poller is not None:
            poller.poll(int(left * 1000) + 1)  # milliseconds, rounded up
        else:
            select.select([wake], [], [], left)
        drain(wake)


@contextlib.contextmanager
def _main_thread_signals(signals: Sequence[int]) -> Iterator[None]:
    """Threads started inside the block have ``signals`` blocked, so the kernel delivers
    those to the main thread. One delivered to a helper thread only flags Python's
    handler: the main thread, blocked in ``waitpid``, never ran it, the command never got
    the forwarded signal, and both waited for ever (a flaky hang of the SIGHUP test)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _spawn_failure(exc: OSError) -> tuple[int, str]:
    """The shell's exit codes: 127 command not found, 126 found but not executable."""
    if isinstance(exc, FileNotFoundError):
        return 127, "command not found"
    if isinstance(exc, PermissionError):
        return 126, "permission denied"
    return 126, f"cannot execute: {exc.strerror or exc}"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (ValueError, OSError):
        return False


def _now() -> str:
    now = time.time()  # time, not datetime: one import less on every cron run
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class Reporter:
    """Sends the start and final reports; never raises, warns on stderr instead.

    The client is built by the start thread (``connect``): loading the CA store for TLS
    takes a few milliseconds the command should not wait for. Both reports carry the same
    ``run_id`` on every try, so the server pairs them and never counts a retry twice.
    """

    def __init__(
        self,
        connect: Callable[[], Client],
        job_id: str,
        run_id: str,
        *,
        budget: float,
        warn: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._client: Client | None = None
        self._failed = False
        self._lock = threading.Lock()
        self.job_id = job_id
        try:
            self.name, self.host = split_job_id(job_id)
        except CronmetricsError:  # the command runs all the same; its reports are refused
            self.name, self.host = job_id, None
        self.run_id = run_id
        self.budget = budget
        self.warn = warn
        self.clock = clock
        self._start_thread: threading.Thread | None = None
        self._cancel = threading.Event()
        #: a wrong scheme or a rejected certificate: nothing will get through
        self._hopeless: Hopeless | None = None

    def _payload(self, status: str, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"job_name": self.name, "status": status, "run_id": self.run_id}
        if self.host:
            body["host"] = self.host
        body.update({k: v for k, v in fields.items() if v is not None})
        return body

    def client(self) -> Client | None:
        with self._lock:
            if self._client is None and not self._failed:
                try:
                    self._client = self._connect()
                except CronmetricsError as exc:
                    self._failed = True
                    self.warn(f"cannot report to the server: {advice(exc)}")
                except Exception as exc:  # a report must never change the exit code
                    self._failed = True
                    self.warn(f"cannot report to the server: {type(exc).__name__}: {exc}")
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()

    def _send(self, what: str, payload: dict[str, Any], budget: float) -> bool:
        client = self.client()
        if client is None:
            return False
        if self._hopeless is not None:  # the start learnt it: no second wait
            self.warn(f"could not report {what} of {self.job_id}: {advice(self._hopeless)}")
            return False
        try:
            client.request_retrying(
                "POST", "/api/job-result", json=payload, budget=budget, cancel=self._cancel
            )
        except ServerUnavailable as exc:
            if isinstance(exc, Hopeless):
                self._hopeless = exc
            self.warn(f"could not report {what} of {self.job_id}: {advice(exc)}")
            return False
        except CronmetricsError as exc:
            self.warn(f"server refused {what} report for {self.job_id}: {advice(exc)}")
            return False
        except Exception as exc:  # a report must never change the exit code
            self.warn(f"could not report {what} of {self.job_id}: {type(exc).__name__}: {exc}")
            return False
        return True

    def start(self) -> None:
        """Report ``start`` in the background: the command must not wait for us."""
        payload = self._payload("start", timestamp=_now())
        budget = min(START_BUDGET, self.budget)
        self._start_thread = threading.Thread(
            target=self._send, args=("the start", payload, budget), daemon=True
        )
        self._start_thread.start()

    def finish(self, outcome: Outcome) -> bool:
        """Report the outcome within ``budget`` seconds (including the start report)."""
        deadline = self.clock() + self.budget
        if self._start_thread is not None:
            self._start_thread.join(max(0.0, deadline - self.clock()))
            if self._start_thread.is_alive():
                self._cancel.set()  # the final report supersedes it
                self._start_thread.join(max(0.0, min(1.0, deadline - self.clock())))
            self._cancel = threading.Event()
        output = outcome.output
        if outcome.note:
            output = f"{output}{'' if not output or output.endswith(chr(10)) else chr(10)}"
            output += f"[cronmetrics run] {outcome.note}\n"
        payload = self._payload(
            "success" if outcome.exit_code == 0 else "failure",
            exit_code=outcome.exit_code,
            duration=round(outcome.duration, 3),
            output=output or None,
            timestamp=_now(),
        )
        remaining = max(0.5, deadline - self.clock())
        return self._send("the result", payload, remaining)


def run(
    connect: Callable[[], Client],
    job_id: str,
    command: Sequence[str],
    *,
    timeout: float | None = None,
    kill_after: float = 10.0,
    output_limit: int = 10_000,
    report_timeout: float = REPORT_BUDGET,
    warn: Callable[[str], None],
) -> int:
    """``cronmetrics run``: run ``command``, report it, return the command's exit code.

    Nothing the server does (or fails to do) changes that code: every reporting problem
    is a warning line on stderr, one per report that could not be made (the start, the
    result), never a traceback.
    """
    run_id = os.urandom(16).hex()  # what uuid4().hex is, without importing uuid
    reporter = Reporter(connect, job_id, run_id, budget=report_timeout, warn=warn)
    try:
        outcome = run_command(
            command,
            timeout=timeout,
            kill_after=kill_after,
            output_limit=output_limit,
            stdout=sys.stdout.buffer,
            stderr=sys.stderr.buffer,
            on_start=reporter.start,
        )
    finally:
        sys.stdout.flush()
    if outcome.note and (outcome.exit_code in (126, 127) or "timed out" in outcome.note):
        warn(outcome.note)
    if outcome.exit_code in (126, 127) and outcome.output == outcome.note:
        outcome.note = None  # the output already says it
    reporter.finish(outcome)
    reporter.close()
    return outcome.exit_code
