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
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cronmetrics.client.http import Client
from cronmetrics.client.retry import retryable
from cronmetrics.client.settings import split_job_id
from cronmetrics.client.tailing import Offset, head_digest, rotated
from cronmetrics.errors import CronmetricsError, PayloadTooLarge, ServerUnavailable, ValidationError

__all__ = ["Ingester", "follow", "ingest_once", "parse_line"]

READ_SIZE = 1 << 20
#: Keep a batch's body well under the server's default 1 MiB request limit.
MAX_BATCH_BYTES = 512 * 1024
_INDEX_RE = re.compile(r"^\[(\d+)\]")
_STATUSES = ("start", "success", "failure")
#: What the server accepts (``cronmetrics.jobs.model.ResultIn``): checked here so that a
#: bad line is reported as FILE:LINE instead of costing its whole batch a round trip.
MAX_DURATION = 10 * 366 * 86400
MAX_RUN_ID = 128


def _timestamp(value: Any) -> str | None:
    """An RFC 3339 string (offset required) or epoch seconds -> ``...Z``; None if bad."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not 946684800 <= value < 1e11:
            return None
        moment = dt.datetime.fromtimestamp(value, dt.timezone.utc)
    elif isinstance(value, str) and len(value) >= 20 and value[10] in "Tt":
        text = value.strip()
        if text[-1:] in "Zz":
            text = text[:-1] + "+00:00"
        frac = re.match(r"^(.{19})\.(\d+)(.*)$", text)
        if frac:  # Python < 3.11 takes at most 6 digits of fraction
            text = f"{frac.group(1)}.{frac.group(2)[:6].ljust(6, '0')}{frac.group(3)}"
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None or moment.year < 2000:
            return None
        moment = moment.astimezone(dt.timezone.utc)
    else:
        return None
    return moment.isoformat().replace("+00:00", "Z")


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
    if not -1024 <= code <= 1024:
        return "'exit' must be between -1024 and 1024"
    ts = _timestamp(data["ts"])
    if ts is None:
        return "'ts' must be epoch seconds or an RFC 3339 timestamp with an offset, after 2000"
    result: dict[str, Any] = {"job_name": name}
    if host:
        result["host"] = host
    status = data.get("status") or ("success" if code == 0 else "failure")
    if status not in _STATUSES:
        return f"'status' must be one of {', '.join(_STATUSES)}"
    result.update(status=status, timestamp=ts, exit_code=code)
    msg = data.get("msg")
    if msg is not None and not isinstance(msg, str):
        msg = json.dumps(msg)
    if isinstance(msg, str) and output_limit >= 0 and len(msg) > output_limit:
        msg = msg[-output_limit:] if output_limit else ""
    if msg:
        result["output"] = msg
    duration = data.get("duration")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            return "'duration' must be a number of seconds"
        if not (math.isfinite(duration) and 0 <= duration <= MAX_DURATION):
            return "'duration' must be between 0 and ten years"
        result["duration"] = float(duration)
    run_id = data.get("run_id")
    if run_id is not None:
        if not isinstance(run_id, str) or not 1 <= len(run_id) <= MAX_RUN_ID:
            return f"'run_id' must be a string of 1 to {MAX_RUN_ID} characters"
        result["run_id"] = run_id
    return result


@dataclass
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
                if not self.retry_forever or self.stop.is_set() or not retryable(exc):
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


def ingest_once(ingester: Ingester, progress: Callable[[int], None] | None = None) -> None:
    """Submit what the file holds past the saved offset, then stop."""
    with ingester.open() as handle:
        ingester.drain(handle, progress=progress)


def follow(ingester: Ingester, poll: float) -> None:
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
