"""``/metrics``: the Prometheus text format, rendered per job and cached.

prometheus_client's generic renderer needs about a second for 10,000 jobs, and a scrape
must not. The text format groups samples by metric family, so each job contributes one
fragment per family; jobs are spread over blocks, and a block's segment of each family is
re-joined and re-compressed only when one of its jobs changed. The gzip body is built
from independently deflated segments (each ends on a byte boundary after a sync flush, so
they concatenate into one valid deflate stream) plus a CRC over the plain text, so
compressing a scrape costs only what changed.

The exporter's own metrics (submissions, reloads, process) are small and come from a
prometheus_client registry rendered at the end of every scrape.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from cronmetrics.monitor import JobView, Monitor

__all__ = ["FAMILIES", "Exposition", "escape", "label_string"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_FINAL_BLOCK = b"\x03\x00"  # an empty final block of fixed Huffman codes
JOBS_PER_BLOCK = 128
#: :meth:`Exposition.prepare` keeps a body warm this long after the last scrape asked for it
PREPARE_WINDOW = 300.0

#: (name, type, help) of every per-job family, in output order
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("cronjob_status", "gauge", "1 ok, 0 failing, -1 not monitored (maintenance/paused)."),
    ("cronjob_status_reason", "gauge", "Why the job has its status; 1 for the current reason."),
    ("cronjob_last_run_timestamp_seconds", "gauge", "When the last run finished (0 = never)."),
    ("cronjob_last_success_timestamp_seconds", "gauge", "Last successful run (0 = never)."),
    ("cronjob_last_failure_timestamp_seconds", "gauge", "Last failed run (0 = never)."),
    ("cronjob_last_duration_seconds", "gauge", "Duration of the last finished run."),
    ("cronjob_last_exit_code", "gauge", "Exit code of the last finished run."),
    ("cronjob_deadline_timestamp_seconds", "gauge", "When the job fails if nothing arrives."),
    (
        "cronjob_maintenance_end_timestamp_seconds",
        "gauge",
        "When the job's maintenance (status, window) ends by itself.",
    ),
    ("cronjob_threshold_seconds", "gauge", "Configured automatic_failure_threshold."),
    ("cronjob_running", "gauge", "1 while a started run has not finished."),
    ("cronjob_consecutive_failures", "gauge", "Failed runs since the last success."),
    ("cronjob_runs_total", "counter", "Finished runs reported."),
    ("cronjob_failures_total", "counter", "Failed runs reported."),
    ("cronjob_unmanaged", "gauge", "1 for jobs that report without a definition."),
)
_HEADERS = tuple(
    f"# HELP {name} {help_}\n# TYPE {name} {kind}\n".encode() for name, kind, help_ in FAMILIES
)
_NFAM = len(FAMILIES)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label_string(view: JobView) -> str:
    d = view.definition
    parts = [f'job_name="{escape(d.job_name)}"', f'host="{escape(d.host or "")}"']
    parts.extend(f'{name}="{escape(value)}"' for name, value in sorted(d.labels.items()))
    return ",".join(parts)


def _num(value: float | int) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def render_job(view: JobView, labels: str) -> tuple[bytes, ...]:
    """One job's line(s) for every family, in :data:`FAMILIES` order."""
    s, e = view.state, view.evaluation
    d = view.definition
    lines = [
        f'cronjob_status{{{labels},status="{e.lifecycle}"}} {e.value}\n',
        f'cronjob_status_reason{{{labels},reason="{e.reason}"}} 1\n',
        f"cronjob_last_run_timestamp_seconds{{{labels}}} {_num(s.last_run or 0)}\n",
        f"cronjob_last_success_timestamp_seconds{{{labels}}} {_num(s.last_success or 0)}\n",
        f"cronjob_last_failure_timestamp_seconds{{{labels}}} {_num(s.last_failure or 0)}\n",
        ""
        if s.last_duration is None
        else f"cronjob_last_duration_seconds{{{labels}}} {_num(s.last_duration)}\n",
        ""
        if s.last_exit_code is None
        else f"cronjob_last_exit_code{{{labels}}} {s.last_exit_code}\n",
        ""
        if e.deadline is None
        else f"cronjob_deadline_timestamp_seconds{{{labels}}} {_num(e.deadline)}\n",
        ""
        if e.maintenance_end is None
        else f"cronjob_maintenance_end_timestamp_seconds{{{labels}}} {_num(e.maintenance_end)}\n",
        ""
        if d.automatic_failure_threshold is None
        else f"cronjob_threshold_seconds{{{labels}}} {d.automatic_failure_threshold}\n",
        f"cronjob_running{{{labels}}} {int(s.running)}\n",
        f"cronjob_consecutive_failures{{{labels}}} {s.consecutive_failures}\n",
        f"cronjob_runs_total{{{labels}}} {s.runs_total}\n",
        f"cronjob_failures_total{{{labels}}} {s.failures_total}\n",
        f"cronjob_unmanaged{{{labels}}} 1\n" if view.unmanaged else "",
    ]
    return tuple(line.encode() for line in lines)


def _deflate(data: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


@dataclass(slots=True)
class _Segment:
    plain: bytes = b""
    packed: bytes = b""


#: the family headers as stored deflate blocks (level 0), computed once
_PACKED_HEADERS = tuple(_deflate(header, 0) for header in _HEADERS)


class Exposition:
    """Renders and caches ``/metrics`` for one :class:`Monitor`.

    Work per scrape is proportional to what changed: a changed job replaces its line in
    the (family, block) segments where it actually differs (a success usually leaves the
    status, reason and failure families alone) and only those are re-joined (a C-level
    join of a ready list); the plain body is re-assembled only when a segment changed;
    segments are deflated lazily, on the first gzip scrape after they changed, so
    plain-only scrapers never pay for compression. Level 1 by default: on this text it
    is 2-3x cheaper than level 6 for an 18% larger body (benchmarks/bench_metrics.py),
    and compression is most of a busy scrape's cost.
    """

    def __init__(
        self,
        monitor: Monitor,
        tail: Callable[[], bytes] = lambda: b"",
        *,
        level: int = 1,
    ) -> None:
        self.monitor = monitor
        self.tail = tail
        self.level = level
        self._lock = threading.Lock()
        self._labels: dict[str, tuple[object, str]] = {}
        self._frags: dict[str, tuple[bytes, ...]] = {}
        self._nblocks = 1
        self._blocks: list[set[str]] = [set()]
        self._segments: list[list[_Segment]] = [
            [_Segment() for _ in range(self._nblocks)] for _ in range(_NFAM)
        ]
        #: each block's jobs in output order, and every job's index in its block
        self._pos: dict[str, int] = {}
        #: lines[family][block]: that block's lines of that family, in job order
        self._lines: list[list[list[bytes]]] = []
        #: blocks whose membership changed (their lines are laid out again)
        self._reshape: set[int] = set()
        #: (family, block) segments whose plain text must be re-joined
        self._dirty: set[tuple[int, int]] = set()
        #: segments whose plain text changed since they were last deflated
        self._unpacked: set[tuple[int, int]] = set()
        self._parts: list[bytes] | None = None  # the plain body, unjoined
        self._plain: bytes | None = None  # joined on the first plain scrape
        self._packed: tuple[bytes, int] | None = None  # deflated body, crc of the plain body
        self._initialized = False
        #: when a plain / gzip scrape last asked: :meth:`prepare` only builds what is wanted
        self._wanted: dict[bool, float] = {}

    def _block_of(self, job_id: str) -> int:
        return zlib.crc32(job_id.encode()) % self._nblocks

    def _resize(self) -> None:
        wanted = 1
        while wanted * JOBS_PER_BLOCK < len(self._frags):
            wanted *= 2
        if wanted == self._nblocks and self._lines:
            return
        self._nblocks = wanted
        self._blocks = [set() for _ in range(wanted)]
        for job_id in self._frags:
            self._blocks[self._block_of(job_id)].add(job_id)
        self._segments = [[_Segment() for _ in range(wanted)] for _ in range(_NFAM)]
        self._lines = [[[] for _ in range(wanted)] for _ in range(_NFAM)]
        self._reshape = set(range(wanted))
        self._dirty.clear()
        self._unpacked.clear()

    def _drop(self, job_id: str) -> None:
        if self._frags.pop(job_id, None) is not None:
            block = self._block_of(job_id)
            self._blocks[block].discard(job_id)
            self._pos.pop(job_id, None)
            self._reshape.add(block)

    def _update(self, views: Iterable[JobView], removed: Iterable[str]) -> None:
        for job_id in removed:
            self._drop(job_id)
            self._labels.pop(job_id, None)
        for view in views:
            cached = self._labels.get(view.id)
            if cached is None or cached[0] is not view.definition:
                cached = (view.definition, label_string(view))
                self._labels[view.id] = cached
            if not view.evaluation.exported:
                self._drop(view.id)
                continue
            frags = render_job(view, cached[1])
            old = self._frags.get(view.id)
            self._frags[view.id] = frags
            block = self._block_of(view.id)
            if old is None:
                self._blocks[block].add(view.id)
                self._reshape.add(block)
            elif block not in self._reshape:
                pos = self._pos[view.id]
                for fam in range(_NFAM):
                    if frags[fam] != old[fam]:
                        self._lines[fam][block][pos] = frags[fam]
                        self._dirty.add((fam, block))
        self._resize()

    def _rebuild_segments(self) -> None:
        for block in self._reshape:  # membership changed: lay the block out again
            ids = sorted(self._blocks[block])
            for pos, job_id in enumerate(ids):
                self._pos[job_id] = pos
            frags = [self._frags[job_id] for job_id in ids]
            for fam in range(_NFAM):
                self._lines[fam][block] = [f[fam] for f in frags]
                self._dirty.add((fam, block))
        self._reshape.clear()
        if not self._dirty and self._parts is not None:
            return
        changed = False
        for fam, block in self._dirty:
            plain = b"".join(self._lines[fam][block])
            seg = self._segments[fam][block]
            if plain != seg.plain:
                seg.plain = plain
                self._unpacked.add((fam, block))
                changed = True
        self._dirty.clear()
        if not changed and self._parts is not None:
            return
        self._parts = self._assemble(_HEADERS, attrgetter("plain"))
        self._plain = None
        self._packed = None

    def _assemble(self, headers: Sequence[bytes], body: Callable[[_Segment], bytes]) -> list[bytes]:
        """Each family's header and its non-empty segments, in family order (plain or
        packed: the same layout, so both decode to the same text)."""
        parts: list[bytes] = []
        for fam in range(_NFAM):
            segs = [body(seg) for seg in self._segments[fam] if seg.plain]
            if segs:
                parts.append(headers[fam])
                parts.extend(segs)
        return parts

    def _plain_body(self) -> bytes:
        if self._plain is None:
            assert self._parts is not None
            self._plain = b"".join(self._parts)
        return self._plain

    def _pack(self) -> tuple[bytes, int]:
        """The deflated body (re-deflating only segments changed since last time)."""
        if self._packed is None:
            # One compressor for all segments, fully flushed after each: a full flush
            # resets the window, so every segment still decodes on its own wherever it
            # lands in the stream, without paying deflateInit per segment.
            compressor = zlib.compressobj(self.level, zlib.DEFLATED, -15)
            for fam, block in self._unpacked:
                seg = self._segments[fam][block]
                seg.packed = (
                    compressor.compress(seg.plain) + compressor.flush(zlib.Z_FULL_FLUSH)
                    if seg.plain
                    else b""
                )
            self._unpacked.clear()
            parts = self._assemble(_PACKED_HEADERS, attrgetter("packed"))
            assert self._parts is not None
            crc = 0
            for part in self._parts:
                crc = zlib.crc32(part, crc)
            self._packed = (b"".join(parts), crc)
        return self._packed

    def refresh(self, now: float) -> None:
        """Bring the cached body up to date with the monitor (deadlines included)."""
        self.monitor.tick(now)
        dirty = self.monitor.take_dirty()
        if not self._initialized:
            dirty = set(self.monitor.ids())
            self._initialized = True
        if dirty or self._parts is None:
            views = self.monitor.views(dirty)
            present = {v.id for v in views}
            self._update(views, dirty - present)
            self._rebuild_segments()

    def prepare(self, now: float) -> None:
        """Fold in recent changes between scrapes (run every second by the scheduler).

        A scrape then only has the last second's changes left to render and deflate,
        whatever the scrape interval: with Prometheus scraping every 15-60 s under steady
        submissions, that is the difference between re-deflating most of the body and a
        few segments. Only the bodies scraped in the last :data:`PREPARE_WINDOW` seconds
        are built, so an exporter nobody scrapes (or nobody scrapes with gzip) pays nothing.
        """
        wanted = [gz for gz, at in self._wanted.items() if now - at <= PREPARE_WINDOW]
        if not wanted:
            return
        with self._lock:
            self.refresh(now)
            for gz in wanted:
                if gz:
                    self._pack()
                else:
                    self._plain_body()

    def render(self, now: float, *, gzip: bool = False) -> list[bytes]:
        """The response body as chunks (no copy of the large cached part)."""
        with self._lock:
            self._wanted[gzip] = now
            self.refresh(now)
            if not gzip:
                plain = self._plain_body()
            else:
                packed, crc = self._pack()
                assert self._parts is not None
                length = sum(map(len, self._parts))
        if not gzip:
            return [plain, self.tail()]
        tail = self.tail()
        crc = zlib.crc32(tail, crc)
        size = (length + len(tail)) & 0xFFFFFFFF
        return [
            _GZIP_HEADER,
            packed,
            _deflate(tail, self.level),
            _FINAL_BLOCK,
            struct.pack("<II", crc, size),
        ]
