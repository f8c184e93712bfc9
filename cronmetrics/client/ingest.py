"""``cronmetrics ingest FILE --job ID``: replay a JSONL log of runs into the server.

Cron scripts often already append ``{"ts": ..., "exit": 0, "msg": "..."}`` lines to a log.
This submits them in batches and remembers how far it got (:class:`~.tailing.Offset`:
device, inode, byte offset, line number) in a small state file, advanced only after the
server acknowledged a batch:
re-running adds nothing, a rotated or truncated file is read from its start, and an
unterminated last line (a writer mid-line) is left for the next run. Results are
delivered at least once: a crash between the server's answer and the state write repeats
that one batch.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click
import pydantic

from cronmetrics.client.http import Client, ClientSettings, client_options, job_option, split_job_id
from cronmetrics.client.signals import handling
from cronmetrics.client.tailing import Offset, default_state_path, head_digest, rotated
from cronmetrics.errors import CronmetricsError, PayloadTooLarge, ServerUnavailable, ValidationError
from cronmetrics.jobs.model import ResultIn, problems_from_pydantic

__all__ = ["Ingester", "ingest_cmd", "parse_line"]

READ_SIZE = 1 << 20
#: Keep a batch's body well under the server's default 1 MiB request limit.
MAX_BATCH_BYTES = 512 * 1024
PROGRESS_MIN_BYTES = 1 << 20
_INDEX_RE = re.compile(r"^\[(\d+)\]")


def parse_line(
    raw: bytes, name: str, host: str | None, output_limit: int
) -> dict[str, Any] | str | None:
    """One JSONL line -> a result payload, a problem message, or None (blank line)."""
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"malformed JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(data, dict):
        return 'expected a JSON object like {"ts": ..., "exit": 0, "msg": "..."}'
    for key in ("ts", "exit"):
        if key not in data:
            return f"missing {key!r}"
    code = data["exit"]
    if isinstance(code, bool) or not isinstance(code, int):
        return "'exit' must be an integer"
    ts = data["ts"]
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        if not math.isfinite(ts) or not 0 < ts < 1e11:
            return "'ts' must be epoch seconds or an RFC 3339 timestamp"
        ts = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()
    msg = data.get("msg")
    if msg is not None and not isinstance(msg, str):
        msg = json.dumps(msg)
    if isinstance(msg, str) and output_limit >= 0 and len(msg) > output_limit:
        msg = msg[-output_limit:] if output_limit else ""
    status = data.get("status") or ("success" if code == 0 else "failure")
    fields = {
        "job_name": name,
        "host": host,
        "status": status,
        "timestamp": ts,
        "exit_code": code,
        "output": msg or None,
        "duration": data.get("duration"),
        "run_id": data.get("run_id"),
    }
    try:
        result = ResultIn.model_validate({k: v for k, v in fields.items() if v is not None})
    except pydantic.ValidationError as exc:
        problems = problems_from_pydantic(exc)
        renames = {"timestamp": "ts", "exit_code": "exit", "output": "msg"}
        message = "; ".join(p.message for p in problems)
        for old, new in renames.items():
            message = message.replace(old, new)
        return message
    return result.model_dump(mode="json", exclude_defaults=True)


@dataclass(slots=True)
class Stats:
    submitted: int = 0
    rejected: int = 0
    rotations: int = 0
    #: results the server said are older than its retention.days (purged soon)
    expired: int = 0
    retention_days: int | None = None


class Ingester:
    """Reads complete lines from ``path`` past the saved offset and submits them."""

    def __init__(
        self,
        path: Path,
        job_id: str,
        client: Client,
        *,
        state_path: Path,
        batch: int = 500,
        output_limit: int = 10_000,
        warn: Callable[[str], None],
        stop: threading.Event | None = None,
        retry_budget: float = 30.0,
    ) -> None:
        self.path = path
        self.name, self.host = split_job_id(job_id)
        self.client = client
        self.state_path = state_path
        self.batch = batch
        self.output_limit = output_limit
        self.warn = warn
        self.stop = stop or threading.Event()
        self.retry_budget = retry_budget
        self.state = Offset.load(state_path)
        self.stats = Stats()
        self.retry_forever = False

    # -- positions -------------------------------------------------------------------------

    def open(self) -> IO[bytes]:
        """Open the file; start over when it is not the one the state describes."""
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise CronmetricsError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        st = os.fstat(handle.fileno())
        same = (st.st_dev, st.st_ino) == (self.state.dev, self.state.inode)
        if not same or self.state.truncated(handle):
            self.state = Offset(st.st_dev, st.st_ino, 0, 0)
        self.state.save(self.state_path)  # proves the state is writable before submitting
        return handle

    def rotated(self, handle: IO[bytes]) -> bool:
        return rotated(self.path, handle)

    def truncated(self, handle: IO[bytes]) -> bool:
        return self.state.truncated(handle)

    def restart(self, handle: IO[bytes]) -> None:
        st = os.fstat(handle.fileno())
        self.state = Offset(st.st_dev, st.st_ino, 0, 0)
        self.state.save(self.state_path)
        self.stats.rotations += 1

    # -- reading ---------------------------------------------------------------------------

    def _lines(
        self, handle: IO[bytes], *, final: bool, progress: Callable[[int], None] | None
    ) -> Iterator[tuple[bytes, int, int]]:
        """``(line, line number, offset after it)`` for every complete line past the state."""
        handle.seek(self.state.offset)
        offset, number = self.state.offset, self.state.line
        pending = b""
        while not self.stop.is_set():
            chunk = handle.read(READ_SIZE)
            if not chunk:
                break
            if progress is not None:
                progress(len(chunk))
            data = pending + chunk
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                number += 1
                offset += end + 1 - start
                yield data[start:end], number, offset
                start = end + 1
            pending = data[start:]
        if final and pending and not self.stop.is_set():
            yield pending, number + 1, offset + len(pending)

    def drain(
        self,
        handle: IO[bytes],
        *,
        final: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Submit every complete line; return how many lines were consumed."""
        batch: list[tuple[int, dict[str, Any]]] = []
        size = 0
        consumed = 0
        cursor = (self.state.offset, self.state.line)
        for raw, number, offset in self._lines(handle, final=final, progress=progress):
            consumed += 1
            cursor = (offset, number)
            parsed = parse_line(raw, self.name, self.host, self.output_limit)
            if isinstance(parsed, str):
                self.reject(number, parsed)
            elif parsed is not None:
                batch.append((number, parsed))
                size += len(json.dumps(parsed)) + 1
            if len(batch) >= self.batch or size >= MAX_BATCH_BYTES:
                self.flush(batch)
                self.commit(*cursor, handle)
                batch, size = [], 0
        if batch:
            self.flush(batch)
        if cursor != (self.state.offset, self.state.line):
            self.commit(*cursor, handle)
        return consumed

    def commit(self, offset: int, line: int, handle: IO[bytes]) -> None:
        self.state.offset, self.state.line = offset, line
        self.state.head = head_digest(handle, offset)
        self.state.save(self.state_path)

    def reject(self, number: int, message: str) -> None:
        self.stats.rejected += 1
        self.warn(f"{self.path}:{number}: {message}")

    # -- submitting ------------------------------------------------------------------------

    def flush(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        """Submit ``batch``; drop items the server refuses (reported by line number)."""
        while batch:
            try:
                self._post([payload for _, payload in batch])
            except ValidationError as exc:
                bad = _bad_indices(exc, len(batch))
                if not bad:
                    raise
                for index in sorted(bad):
                    number = batch[index][0]
                    self.reject(number, f"refused by the server: {bad[index]}")
                batch = [item for i, item in enumerate(batch) if i not in bad]
                continue
            except PayloadTooLarge:
                if len(batch) == 1:
                    self.reject(batch[0][0], "refused by the server: too large")
                    return
                half = len(batch) // 2
                self.flush(batch[:half])
                batch = batch[half:]
                continue
            self.stats.submitted += len(batch)
            return

    def _post(self, payloads: list[dict[str, Any]]) -> None:
        delay = 0.5
        while True:
            try:
                budget = self.retry_budget if not self.retry_forever else 60.0
                body = self.client.request_retrying(
                    "POST", "/api/job-result", json=payloads, budget=budget, cancel=self.stop
                )
                if isinstance(body, dict) and isinstance(body.get("older_than_retention"), int):
                    self.stats.expired += body["older_than_retention"]
                    self.stats.retention_days = body.get("retention_days")
                return
            except ServerUnavailable as exc:
                if not self.retry_forever or self.stop.is_set():
                    raise
                self.warn(f"{exc.message}; retrying")
                if self.stop.wait(delay):
                    raise
                delay = min(delay * 2, 30.0)


def _bad_indices(exc: ValidationError, size: int) -> dict[int, str]:
    """Item index -> message for the problems that name a batch item (``[3].timestamp``)."""
    out: dict[int, str] = {}
    for problem in exc.problems:
        match = _INDEX_RE.match(problem.field or "")
        if match is None:
            return {}
        index = int(match.group(1))
        if index >= size:
            return {}
        message = problem.message
        prefix = (problem.field or "") + ": "
        message = message.removeprefix(prefix)
        out.setdefault(index, message)
    return out


def _warn(message: str) -> None:
    click.echo(message, err=True)


@click.command("ingest")
@client_options
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@job_option
@click.option("--follow", "-f", is_flag=True, help="Keep reading as lines arrive (rotation ok).")
@click.option(
    "--batch",
    type=click.IntRange(1, 1000),
    default=500,
    show_default=True,
    help="Results per request (POST /api/job-result).",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Offset file [default: .FILE.cronmetrics-offset next to FILE].",
)
@click.option(
    "--poll",
    type=click.FloatRange(0.05, 60),
    default=1.0,
    show_default=True,
    help="Seconds between looks for new lines with --follow.",
)
@click.option(
    "--output-limit",
    type=click.IntRange(0, 1_048_576),
    default=10_000,
    show_default=True,
    help="Characters of each line's msg kept (the tail).",
)
@click.option(
    "--retry-timeout",
    type=click.FloatRange(0.1, 3600),
    default=30.0,
    show_default=True,
    help="Give up (exit 3) when the server stays unreachable this long (not with --follow).",
)
def ingest_cmd(
    settings: ClientSettings,
    file: Path,
    job_id: str,
    follow: bool,
    batch: int,
    state_path: Path | None,
    poll: float,
    output_limit: int,
    retry_timeout: float,
) -> None:
    """Submit JSONL lines {"ts": RFC3339|epoch, "exit": N, "msg": "..."} from FILE.

    Malformed lines are reported as FILE:LINE and skipped; exit status 1 if any were.
    """
    split_job_id(job_id)
    if not file.exists() and not follow:
        raise click.BadParameter(f"{file}: no such file", param_hint="FILE")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    with handling(signals, on_signal, enabled=follow), settings.client() as client:
        ingester = Ingester(
            file,
            job_id,
            client,
            state_path=state_path or default_state_path(file),
            batch=batch,
            output_limit=output_limit,
            warn=_warn,
            stop=stop,
            retry_budget=retry_timeout,
        )
        if follow:
            ingester.retry_forever = True
            _follow(ingester, poll)
        else:
            _once(ingester)
    stats = ingester.stats
    click.echo(
        f"{file}: {stats.submitted} results submitted, {stats.rejected} lines skipped"
        f" (line {ingester.state.line}, byte {ingester.state.offset})",
        err=True,
    )
    if stats.expired:
        days = f"{stats.retention_days} days" if stats.retention_days else "retention.days"
        _warn(
            f"warning: {stats.expired} results are older than the server keeps history "
            f"({days}): they count now but are purged at its next retention pass"
        )
    if stats.rejected and not follow:
        sys.exit(1)


def _once(ingester: Ingester) -> None:
    with ingester.open() as handle:
        remaining = os.fstat(handle.fileno()).st_size - ingester.state.offset
        if sys.stderr.isatty() and remaining >= PROGRESS_MIN_BYTES:
            with click.progressbar(
                length=remaining, label=f"ingesting {ingester.path.name}", file=sys.stderr
            ) as bar:
                ingester.drain(handle, progress=bar.update)
        else:
            ingester.drain(handle)


def _follow(ingester: Ingester, poll: float) -> None:
    """Tail the file until SIGINT/SIGTERM, switching files when it is rotated."""
    handle: IO[bytes] | None = None
    try:
        while not ingester.stop.is_set():
            if handle is None:
                if not ingester.path.exists():
                    ingester.stop.wait(poll)
                    continue
                handle = ingester.open()
            consumed = ingester.drain(handle)
            if ingester.stop.is_set():
                break
            if ingester.rotated(handle):
                ingester.drain(handle, final=True)  # what was written before the switch
                handle.close()
                try:
                    handle = ingester.path.open("rb")
                except FileNotFoundError:
                    handle = None
                    continue
                ingester.restart(handle)
                continue
            if ingester.truncated(handle):
                ingester.restart(handle)
                continue
            if not consumed:
                ingester.stop.wait(poll)
    except ServerUnavailable:
        if not ingester.stop.is_set():
            raise
    finally:
        if handle is not None:
            handle.close()
