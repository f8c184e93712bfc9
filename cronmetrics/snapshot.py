"""State snapshots: every job's state and history, on disk, checksummed, two generations.

File format (``state.snapshot`` in the state dir; the previous one is ``state.snapshot.1``)::

    CRONMETRICS-SNAPSHOT <format version> <payload bytes> <sha256 of payload, hex>\\n
    <payload: JSON>

The payload is ``{"format", "written_at", "journal_seq", "state_fields", "result_fields",
"unmanaged", "jobs": {id: [state values, result count, result columns]}}``. States are
stored positionally and results column by column, field names listed once (see
:func:`_columns`): a third of the bytes of one object per result, far fewer values to
parse, and results are rebuilt with ``map`` in C rather than a dict per row. A field added
to :class:`~cronmetrics.store.Result` later is still read by name. orjson (rather than the
json module, ~10x slower here) keeps 10,000 jobs x 100 results near the 1 s write / 2 s
load budget (docs/performance.md, "Issue 6").

Writing never blocks submissions for long: under the monitor lock only references are
copied (results are never mutated once recorded), and encoding, hashing and the
fsync-rename dance happen outside it. A write goes to a staging file first, so a full disk
leaves both generations untouched.

Loading never stops the server: a bad checksum, a truncated file or an unknown format
version falls back to the previous generation, then to empty state, each loudly (error
log, ``cronmetrics_snapshot_restore_fallback`` = 1 and a failing ``snapshot`` check on
``/health/deep`` until a new snapshot has been written). Then the journal (see
:mod:`cronmetrics.journal`) is replayed on top.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field
from functools import partial
from itertools import repeat
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .fileio import atomic_write, fsync_dir
from .journal import Journal, JournalEntry, replay, segments
from .logging import get_logger, rfc3339
from .metrics import SelfMetrics
from .monitor import Monitor
from .store import JobState, Result

if TYPE_CHECKING:
    from .app import Services

__all__ = [
    "FORMAT_VERSION",
    "SNAPSHOT_NAME",
    "Decoded",
    "SnapshotError",
    "Snapshotter",
    "decode",
    "encode",
]

log = get_logger("snapshot")

FORMAT_VERSION = 1
MAGIC = b"CRONMETRICS-SNAPSHOT"
SNAPSHOT_NAME = "state.snapshot"
PREVIOUS_NAME = "state.snapshot.1"
_STAGING = ".state.snapshot.new"
FREEZE_AFTER = 100_000  # restored results above which the restored objects are gc-frozen
_LINKING = ".state.snapshot.1.new"

STATE_FIELDS = tuple(f for f in JobState.__dataclass_fields__ if f != "history")
RESULT_FIELDS = tuple(f for f in Result.__dataclass_fields__ if f != "job_id")
_state_values = attrgetter(*STATE_FIELDS)
_result_row = attrgetter(*RESULT_FIELDS)
_STATUS_CODE = {"success": "s", "failure": "f", "start": "b"}
_STATUS_NAME = {v: k for k, v in _STATUS_CODE.items()}

#: one job as copied under the lock: id, state values, history (shared Result objects)
Copied = tuple[str, tuple[Any, ...], tuple[Result, ...]]


class SnapshotError(ValueError):
    """A snapshot file that cannot be used (corrupt, truncated, unknown format)."""


@dataclass(slots=True)
class Decoded:
    written_at: float
    journal_seq: int
    jobs: dict[str, tuple[dict[str, Any], list[Result]]]
    unmanaged: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def results(self) -> int:
        return sum(len(h) for _, h in self.jobs.values())


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building or walking a million small objects triggers full collections that find
    nothing to free; pausing the cyclic GC for the duration halves the time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def copy_states(monitor: Monitor) -> list[Copied]:
    """References to every job's state and history; call under ``monitor.lock``."""
    store = monitor.store
    out: list[Copied] = []
    for job_id in store.ids():
        state = store.get(job_id)
        if state is not None:
            out.append((job_id, _state_values(state), tuple(state.history)))
    return out


def encode(
    jobs: list[Copied],
    *,
    written_at: float,
    journal_seq: int,
    unmanaged: dict[str, tuple[str, str | None]],
) -> bytes:
    with _gc_paused():
        payload = orjson.dumps(
            {
                "format": FORMAT_VERSION,
                "written_at": written_at,
                "journal_seq": journal_seq,
                "state_fields": STATE_FIELDS,
                "result_fields": RESULT_FIELDS,
                "unmanaged": unmanaged,
                "jobs": {
                    job_id: (values, len(history), _columns(history))
                    for job_id, values, history in jobs
                },
            }
        )
    digest = hashlib.sha256(payload).hexdigest().encode()
    header = b"%s %d %d %s\n" % (MAGIC, FORMAT_VERSION, len(payload), digest)
    return header + payload


def _columns(history: tuple[Result, ...]) -> list[Any]:
    """One job's history column by column; a column with one value throughout (the host,
    empty labels, no output) is stored once as ``{"all": value}``. Status is one letter per
    result. Fewer JSON tokens to write and parse, and restored results share those values
    instead of holding a copy each."""
    n = len(history)
    if not n:
        return [[] for _ in RESULT_FIELDS]
    columns: list[Any] = []
    transposed = zip(*map(_result_row, history), strict=True)
    for name, column in zip(RESULT_FIELDS, transposed, strict=True):
        if column.count(column[0]) == n:
            columns.append({"all": column[0]})
        elif name == "status":
            columns.append("".join(map(_STATUS_CODE.__getitem__, column)))
        else:
            columns.append(column)
    return columns


def _results(job_id: str, n: int, fields: tuple[str, ...], columns: list[Any]) -> list[Result]:
    """Rebuild one job's ``n`` results from :func:`_columns` output (fields matched by name)."""
    wanted = Result.__dataclass_fields__
    iterables: dict[str, Any] = {}
    for name, column in zip(fields, columns, strict=True):
        if name not in wanted:
            continue
        if isinstance(column, dict):
            value = column["all"]
            # a dict (labels) must not be shared between results: a fresh copy each
            iterables[name] = (
                map(dict, repeat(value, n)) if isinstance(value, dict) else repeat(value, n)
            )
        else:
            if len(column) != n:
                raise ValueError(f"column {name} of {job_id} has {len(column)} values, not {n}")
            is_codes = name == "status" and isinstance(column, str)
            iterables[name] = map(_STATUS_NAME.__getitem__, column) if is_codes else column
    missing = [f for f in RESULT_FIELDS if f not in iterables and wanted[f].default is MISSING]
    missing = [f for f in missing if wanted[f].default_factory is MISSING]
    if missing:
        raise ValueError(f"results of {job_id} lack {', '.join(missing)}")
    present = [f for f in RESULT_FIELDS if f in iterables]
    if len(present) == len(RESULT_FIELDS):
        return list(map(Result, repeat(job_id, n), *(iterables[f] for f in RESULT_FIELDS)))
    return [
        Result(job_id=job_id, **dict(zip(present, row, strict=True)))
        for row in zip(*(iterables[f] for f in present), strict=True)
    ]


def decode(data: bytes) -> Decoded:
    """Parse and verify a snapshot file's bytes; :class:`SnapshotError` says what is wrong."""
    end = data.find(b"\n", 0, 256)
    if end < 0:
        raise SnapshotError("no snapshot header (empty or not a cronmetrics snapshot)")
    parts = data[:end].split(b" ")
    if len(parts) != 4 or parts[0] != MAGIC:
        raise SnapshotError("not a cronmetrics snapshot (bad header)")
    try:
        version, length = int(parts[1]), int(parts[2])
    except ValueError:
        raise SnapshotError("bad snapshot header") from None
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format version {version} is not supported (this version reads "
            f"{FORMAT_VERSION})"
        )
    payload = memoryview(data)[end + 1 :]
    if len(payload) != length:
        raise SnapshotError(f"truncated or padded: {len(payload)} payload bytes, expected {length}")
    if hashlib.sha256(payload).hexdigest().encode() != parts[3]:
        raise SnapshotError("checksum mismatch (the file is corrupt)")
    try:
        with _gc_paused():
            return _build(orjson.loads(payload))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise SnapshotError(f"unreadable payload: {exc}") from None


def _build(doc: dict[str, Any]) -> Decoded:
    state_fields = doc["state_fields"]
    result_fields = tuple(doc["result_fields"])
    known = set(STATE_FIELDS)
    jobs: dict[str, tuple[dict[str, Any], list[Result]]] = {}
    for job_id, (values, count, columns) in doc["jobs"].items():
        state = {k: v for k, v in zip(state_fields, values, strict=True) if k in known}
        jobs[job_id] = (state, _results(job_id, int(count), result_fields, columns))
    unmanaged = {k: (v[0], v[1]) for k, v in doc.get("unmanaged", {}).items()}
    return Decoded(float(doc["written_at"]), int(doc["journal_seq"]), jobs, unmanaged)


@dataclass(slots=True)
class RestoreReport:
    source: str | None = None  # file the state came from; None = empty
    problems: list[str] = field(default_factory=list)
    jobs: int = 0
    results: int = 0
    journal_entries: int = 0
    seconds: float = 0.0

    @property
    def fallback(self) -> bool:
        return bool(self.problems)


class Snapshotter:
    """Owns the state dir: restore at start, periodic and final snapshots, the journal."""

    def __init__(
        self,
        monitor: Monitor,
        state_dir: Path,
        *,
        clock: Callable[[], float],
        interval: float,
        journal: bool,
        metrics: SelfMetrics,
    ) -> None:
        self.monitor = monitor
        self.state_dir = state_dir
        self.clock = clock
        self.interval = interval
        self.journal_enabled = journal
        self.metrics = metrics
        self.journal: Journal | None = None
        self.current = state_dir / SNAPSHOT_NAME
        self.previous = state_dir / PREVIOUS_NAME
        self._write_lock = threading.Lock()
        self._written_version: int | None = None
        self._seq = 0  # journal_seq for the next snapshot when the journal is off
        self._gen0_seq: int | None = None
        self._gen1_seq: int | None = None
        self._current_good = True  # may state.snapshot become the previous generation?
        self._stopped = False
        self.restore_report: RestoreReport | None = None
        self.last_error: str | None = None
        self.last_success: float | None = None

    # -- start -----------------------------------------------------------------------------

    @classmethod
    def for_services(cls, svc: Services) -> Snapshotter:
        """Restore the state for a new app; call before its first reload, which keeps
        the restored state of every job it (re)defines."""
        config = svc.config
        snapshotter = cls(
            svc.monitor,
            config.state_dir,
            clock=svc.clock,
            interval=config.snapshot.interval,
            journal=config.snapshot.journal,
            metrics=svc.metrics,
        )
        snapshotter.restore()
        svc.extras["snapshotter"] = snapshotter
        svc.extras.setdefault("health_checks", {})["snapshot"] = snapshotter.health
        return snapshotter

    def started(self, svc: Services) -> None:
        """After the first reload: drop orphaned states, apply the age limit, and (when the
        app runs its scheduler) start periodic snapshots, purges and the final snapshot."""
        from .retention import PURGE_EVERY, purge_expired

        report = svc.last_reload
        if report is not None and report.ok:  # an invalid file may still claim its state
            orphans = self.monitor.prune_orphans()
            if orphans:
                log.info(
                    "dropped the state of jobs no longer defined",
                    extra={"jobs": len(orphans), "sample": orphans[:5]},
                )
        days = svc.config.retention.days
        purge_expired(self.monitor, days, self.clock())
        if svc.scheduler is not None:
            svc.scheduler.every(self.interval, self.tick, "snapshot")
            svc.scheduler.every(
                PURGE_EVERY, lambda: purge_expired(self.monitor, days, self.clock()), "retention"
            )
            svc.extras.setdefault("on_stop", []).append(self.stop)

    def restore(self) -> RestoreReport:
        """Load the newest readable generation, replay the journal; never raises."""
        started = time.perf_counter()
        report = RestoreReport()
        try:
            self._restore(report)
        except Exception as exc:  # a bug must not keep the exporter down either
            log.exception("state restore failed; starting empty")
            report.problems.append(f"restore failed: {exc}")
            report.source = None
        if report.results >= FREEZE_AFTER:
            # a restored history is long-lived: move it out of the cyclic GC's sight, or
            # every full collection walks millions of objects while holding the GIL
            gc.freeze()
        report.seconds = time.perf_counter() - started
        self.restore_report = report
        if report.fallback:
            self.metrics.restore_fallback.set(1)
            what = f"the previous generation {report.source}" if report.source else "EMPTY state"
            log.error(
                f"state snapshot unusable; restored {what}",
                extra={"problems": report.problems, "jobs": report.jobs},
            )
        else:
            self.metrics.restore_fallback.set(0)
            log.info(
                "state restored" if report.source else "no state snapshot yet; starting empty",
                extra={
                    "jobs": report.jobs,
                    "results": report.results,
                    "journal_entries": report.journal_entries,
                    "seconds": round(report.seconds, 3),
                },
            )
        if self.journal_enabled:
            self.journal = Journal(self.state_dir, self._seq)
            self.monitor.journal = self._journal_append
        return report

    def _restore(self, report: RestoreReport) -> None:
        loaded: Decoded | None = None
        for path in (self.current, self.previous):
            try:
                loaded = decode(path.read_bytes())
            except (FileNotFoundError, NotADirectoryError):  # no state yet
                if path == self.current and self.previous.exists():
                    report.problems.append(f"{path.name} is missing")
                continue
            except (OSError, SnapshotError) as exc:
                report.problems.append(f"{path.name}: {exc}")
                continue
            report.source = path.name
            break
        now = self.clock()
        unmanaged: dict[str, tuple[str, str | None]] = {}
        if loaded is not None:
            self._apply(loaded, now)
            unmanaged.update(loaded.unmanaged)
            report.jobs, report.results = len(loaded.jobs), loaded.results
            if report.source == SNAPSHOT_NAME:
                self._gen0_seq = loaded.journal_seq
            else:
                self._gen1_seq = loaded.journal_seq
        self._current_good = report.source == SNAPSHOT_NAME or not report.problems
        first = loaded.journal_seq if loaded is not None else 0
        _, report.journal_entries = replay(
            self.state_dir, first, partial(self._replay_one, now=now, unmanaged=unmanaged)
        )
        existing = segments(self.state_dir)
        self._seq = max(first, existing[-1][0] + 1 if existing else 0)
        if unmanaged:
            self.monitor.restore_unmanaged(unmanaged, now)

    def _apply(self, loaded: Decoded, now: float) -> None:
        store = self.monitor.store
        with self.monitor.lock:
            for job_id, (values, history) in loaded.jobs.items():
                state = store.ensure(job_id, now)
                for name, value in values.items():
                    setattr(state, name, value)
                state.history.clear()
                state.history.extend(history)

    def _replay_one(
        self, entry: JournalEntry, *, now: float, unmanaged: dict[str, tuple[str, str | None]]
    ) -> None:
        result = entry.result
        with self.monitor.lock:
            self.monitor.store.ensure(result.job_id, result.received)
            self.monitor.store.record(result)
        if entry.unmanaged is not None:
            unmanaged[result.job_id] = entry.unmanaged

    def _journal_append(self, results: list[Result]) -> Callable[[], None]:
        assert self.journal is not None
        monitor = self.monitor

        def unmanaged(job_id: str) -> tuple[str, str | None] | None:
            if job_id in monitor.definitions and job_id not in monitor.unmanaged:
                return None
            name, _, host = job_id.partition("@")
            return name, host or None

        return self.journal.append(results, unmanaged)

    # -- writing ---------------------------------------------------------------------------

    def write(self, *, force: bool = False) -> bool:
        """Write a snapshot if anything changed (or ``force``); return whether it did."""
        with self._write_lock:
            monitor = self.monitor
            with monitor.lock:
                version = monitor.version
                if not force and version == self._written_version:
                    return False
                jobs = copy_states(monitor)
                unmanaged = {
                    job_id: (d.job_name, d.host)
                    for job_id in monitor.unmanaged
                    if (d := monitor.definitions.get(job_id)) is not None
                }
                try:
                    seq = self.journal.rotate() if self.journal is not None else self._seq
                except OSError as exc:
                    self._failed(exc)
                    return False
            now = self.clock()
            try:
                data = encode(jobs, written_at=now, journal_seq=seq, unmanaged=unmanaged)
                del jobs
                self._write_files(data)
            except OSError as exc:
                self._failed(exc)
                return False
            self._succeeded(now, version, seq)
            return True

    def _write_files(self, data: bytes) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.state_dir / _STAGING, data, mode=0o600)
        rotated = False
        if self._current_good and self.current.exists():
            linking = self.state_dir / _LINKING
            with contextlib.suppress(FileNotFoundError):
                linking.unlink()
            linking.hardlink_to(self.current)
            linking.replace(self.previous)
            rotated = True
        (self.state_dir / _STAGING).replace(self.current)
        fsync_dir(self.state_dir)
        if rotated:
            self._gen1_seq = self._gen0_seq

    def _failed(self, exc: OSError) -> None:
        self.last_error = f"{rfc3339(self.clock())}: {exc}"
        self.metrics.snapshot_ok.set(0)
        log.error(
            "snapshot write failed; the previous snapshot is kept",
            extra={"error": str(exc), "state_dir": str(self.state_dir)},
        )
        with contextlib.suppress(OSError):
            (self.state_dir / _STAGING).unlink()

    def _succeeded(self, now: float, version: int, seq: int) -> None:
        self._written_version = version
        self._gen0_seq = seq
        self._current_good = True
        self.last_error = None
        self.last_success = now
        self.metrics.snapshot_ok.set(1)
        self.metrics.snapshot_ts.set(now)
        if self._gen1_seq is not None:
            for old, path in segments(self.state_dir):
                if old < self._gen1_seq:
                    with contextlib.suppress(OSError):
                        path.unlink()

    # -- lifecycle -------------------------------------------------------------------------

    def tick(self) -> None:
        if not self._stopped:
            self.write()

    def stop(self) -> None:
        """Final snapshot (SIGTERM), then close the journal."""
        if self._stopped:
            return
        self.write()
        self._stopped = True
        if self.journal is not None:
            self.journal.close()

    def health(self) -> tuple[bool, str]:
        """The ``snapshot`` check of ``/health/deep``."""
        if self.last_error is not None:
            return False, f"last snapshot write failed at {self.last_error}; previous one kept"
        report = self.restore_report
        if report is not None and report.fallback and self.last_success is None:
            what = f"previous generation {report.source}" if report.source else "EMPTY state"
            problems = "; ".join(report.problems)
            return False, f"snapshot unusable at start, restored {what}: {problems}"
        if self.last_success is not None:
            return True, f"last written {rfc3339(self.last_success)}"
        return True, "no snapshot written yet"
