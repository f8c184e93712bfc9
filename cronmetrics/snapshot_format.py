"""The snapshot file format (version 2): one chunk per job, each encodable on its own.

Layout of ``state.snapshot``::

    CRONMETRICS-SNAPSHOT 2 <index bytes> <sha256 of the index, hex>\\n
    <index: JSON>
    <chunk of job 1><chunk of job 2>...

The index is ``{"format", "written_at", "journal_seq", "state_fields", "result_fields",
"unmanaged", "jobs": [[job id, chunk bytes, chunk crc32], ...]}``; the chunks follow in
that order and the file ends exactly after the last one. The sha256 covers the index, the
index lists every chunk's length and CRC-32, so every byte of the file is checked: a
flipped bit anywhere, a truncated or padded file, a reordered chunk all fail to load.

Why chunks: a job's chunk only changes when that job does, so the snapshotter keeps each
job's encoded bytes with their CRC and re-encodes only the jobs changed since the last
snapshot (:mod:`cronmetrics.snapshot`); a whole-file hash would have to re-read every
byte of every write. CRC-32 per chunk because it is an integrity check against bad disks,
not an authenticity one, and runs at memory speed when loading.

A chunk is ``<JSON>\\n<binary>``. The JSON (orjson never writes a raw newline) is ``[state
values, result count, result columns]``: states positionally, results column by column
with the field names listed once in the index, so a field added to
:class:`~cronmetrics.store.Result` later is still read by name. A column is one of:

- ``{"all": value}``: the same value in every result (the host, empty labels, no output);
- a string of one letter per result (``status``: ``s``uccess, ``f``ailure, ``b``egin);
- ``{"f8": [indices of None]}``: floats, packed as little-endian IEEE doubles in the
  chunk's binary part (in column order), ``None`` stored as 0.0 at the listed indices.
  Timestamps are most of the data; as text they were 60 % of the bytes and most of the
  encode and parse time;
- a JSON list of values (anything else).

Loading rebuilds results with ``map(Result, ...)`` in C rather than a dict per row, and
restored results share the constant values instead of holding a copy each.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import Any

import orjson

from .store import JobState, Result

__all__ = [
    "FORMAT_VERSION",
    "RESULT_FIELDS",
    "STATE_FIELDS",
    "Chunk",
    "Decoded",
    "SnapshotError",
    "assemble",
    "decode",
    "decode_job",
    "encode",
    "encode_job",
]

FORMAT_VERSION = 2
MAGIC = b"CRONMETRICS-SNAPSHOT"
STATE_FIELDS = tuple(f for f in JobState.__dataclass_fields__ if f != "history")
RESULT_FIELDS = tuple(f for f in Result.__dataclass_fields__ if f != "job_id")
#: result fields packed as doubles when every value is a float (or None)
FLOAT_FIELDS = frozenset({"timestamp", "received", "duration"})
_state_values = attrgetter(*STATE_FIELDS)
_result_row = attrgetter(*RESULT_FIELDS)
_STATUS_CODE = {"success": "s", "failure": "f", "start": "b"}
_STATUS_NAME = {v: k for k, v in _STATUS_CODE.items()}
_NONE = type(None)
_FLOATISH = frozenset({float, _NONE})
_KNOWN_STATE = frozenset(STATE_FIELDS)
_FLOAT, _STATUS, _OTHER = "float", "status", "other"
#: how each of :data:`RESULT_FIELDS` is encoded when it is not constant
_KINDS = tuple(
    _FLOAT if f in FLOAT_FIELDS else _STATUS if f == "status" else _OTHER for f in RESULT_FIELDS
)
#: the column entry of a float column without ``None`` (orjson writes it as ``{"f8":[]}``)
_NO_NONES: dict[str, list[int]] = {"f8": []}
_NUMBERS = frozenset({int, float, bool})

#: one job's encoded bytes and their CRC-32
Chunk = tuple[bytes, int]
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
    #: each job's chunk as read, when the file's field layout is this version's: what
    #: :func:`encode_job` would produce for the restored state, so it can be reused
    chunks: dict[str, Chunk] = field(default_factory=dict)

    @property
    def results(self) -> int:
        return sum(len(h) for _, h in self.jobs.values())


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Building or walking a million small objects triggers full collections that find
    nothing to free; pausing the cyclic GC for the duration halves the time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def state_values(state: JobState) -> tuple[Any, ...]:
    """A state's scalars in :data:`STATE_FIELDS` order (what a chunk stores)."""
    values: tuple[Any, ...] = _state_values(state)
    return values


# -- encoding ------------------------------------------------------------------------------


def encode_job(values: tuple[Any, ...], history: Sequence[Result]) -> Chunk:
    """One job's chunk and its CRC-32."""
    parts = [b"", b"\n"]  # the JSON part, filled in below, then the packed floats
    parts[0] = orjson.dumps([values, len(history), _columns(history, parts)])
    chunk = b"".join(parts)  # the only copy of the packed bytes
    return chunk, zlib.crc32(chunk)


def assemble(
    chunks: Iterable[tuple[str, Chunk]],
    *,
    written_at: float,
    journal_seq: int,
    unmanaged: dict[str, tuple[str, str | None]],
) -> bytes:
    """The whole file from per-job chunks (in the order given)."""
    entries = []
    parts = [b"", b""]  # header and index, filled in below
    for job_id, (chunk, crc) in chunks:
        entries.append((job_id, len(chunk), crc))
        parts.append(chunk)
    index = orjson.dumps(
        {
            "format": FORMAT_VERSION,
            "written_at": written_at,
            "journal_seq": journal_seq,
            "state_fields": STATE_FIELDS,
            "result_fields": RESULT_FIELDS,
            "unmanaged": unmanaged,
            "jobs": entries,
        }
    )
    digest = hashlib.sha256(index).hexdigest().encode()
    parts[0] = b"%s %d %d %s\n" % (MAGIC, FORMAT_VERSION, len(index), digest)
    parts[1] = index
    return b"".join(parts)


def encode(
    jobs: Iterable[Copied],
    *,
    written_at: float,
    journal_seq: int,
    unmanaged: dict[str, tuple[str, str | None]],
) -> bytes:
    """A whole snapshot from scratch (no reuse of earlier chunks)."""
    with gc_paused():
        chunks = [(job_id, encode_job(values, history)) for job_id, values, history in jobs]
    return assemble(chunks, written_at=written_at, journal_seq=journal_seq, unmanaged=unmanaged)


def _columns(history: Sequence[Result], blob: list[bytes]) -> list[Any]:
    """One job's history column by column (see the module docstring); packed float
    columns are appended to ``blob``.

    This is most of a full snapshot's cost (a million results), so every column is
    handled by C-level operations on the whole column, never a Python loop per result:
    ``zip(*rows)`` transposes, ``tuple.count`` finds constant columns, ``set(map(type, ...))``
    checks a float column and ``struct`` packs it, ``str.join`` over a ``map`` codes the
    status."""
    n = len(history)
    if not n:
        return [[] for _ in RESULT_FIELDS]
    columns: list[Any] = []
    append = columns.append
    transposed = zip(*map(_result_row, history), strict=True)
    for kind, column in zip(_KINDS, transposed, strict=True):
        first = column[0]
        if first == column[-1] and column.count(first) == n and _one_type(column):
            append({"all": first})
        elif kind is _FLOAT and (types := set(map(type, column))) <= _FLOATISH:
            if _NONE in types:
                nones = [i for i, v in enumerate(column) if v is None]
                column = tuple([0.0 if v is None else v for v in column])
                append({"f8": nones})
            else:
                append(_NO_NONES)
            blob.append(_doubles(n).pack(*column))
        elif kind is _STATUS:
            try:
                append("".join(map(_STATUS_CODE.__getitem__, column)))
            except (KeyError, TypeError):
                append(column)
        else:
            append(column)
    return columns


def _one_type(column: tuple[Any, ...]) -> bool:
    """Equal is not identical: 1 == 1.0 == True, and a constant column keeps one value."""
    return type(column[0]) not in _NUMBERS or len(set(map(type, column))) == 1


# -- decoding ------------------------------------------------------------------------------


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
    start = end + 1
    index = data[start : start + length]
    if len(index) != length:
        raise SnapshotError(f"truncated: {len(index)} index bytes, expected {length}")
    if hashlib.sha256(index).hexdigest().encode() != parts[3]:
        raise SnapshotError("checksum mismatch in the index (the file is corrupt)")
    try:
        doc = orjson.loads(index)
        entries = [(str(j), int(n), int(crc)) for j, n, crc in doc["jobs"]]
        expected = start + length + sum(n for _, n, _ in entries)
        if expected != len(data):
            raise SnapshotError(
                f"truncated or padded: {len(data)} bytes, the index describes {expected}"
            )
        with gc_paused():
            return _build(doc, data, start + length, entries)
    except SnapshotError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        raise SnapshotError(f"unreadable snapshot: {exc}") from None


def _build(
    doc: dict[str, Any], data: bytes, offset: int, entries: list[tuple[str, int, int]]
) -> Decoded:
    state_fields = tuple(doc["state_fields"])
    result_fields = tuple(doc["result_fields"])
    reusable = state_fields == STATE_FIELDS and result_fields == RESULT_FIELDS
    jobs: dict[str, tuple[dict[str, Any], list[Result]]] = {}
    chunks: dict[str, Chunk] = {}
    for job_id, length, crc in entries:
        chunk = data[offset : offset + length]
        offset += length
        if zlib.crc32(chunk) != crc:
            raise SnapshotError(f"checksum mismatch in the state of {job_id} (corrupt)")
        jobs[job_id] = decode_job(job_id, chunk, state_fields, result_fields)
        if reusable:
            chunks[job_id] = (chunk, crc)
    unmanaged = {k: (v[0], v[1]) for k, v in doc.get("unmanaged", {}).items()}
    return Decoded(float(doc["written_at"]), int(doc["journal_seq"]), jobs, unmanaged, chunks)


def decode_job(
    job_id: str, chunk: bytes, state_fields: Sequence[str], result_fields: Sequence[str]
) -> tuple[dict[str, Any], list[Result]]:
    """One job's state (known fields only) and results from its chunk."""
    split = chunk.index(b"\n")
    values, count, columns = orjson.loads(chunk[:split])
    state = {k: v for k, v in zip(state_fields, values, strict=True) if k in _KNOWN_STATE}
    results = _results(job_id, int(count), result_fields, columns, memoryview(chunk)[split + 1 :])
    return state, results


@functools.lru_cache(maxsize=64)
def _doubles(n: int) -> struct.Struct:
    """Packs ``n`` little-endian doubles (faster than ``array``, and byte order fixed)."""
    return struct.Struct(f"<{n}d")


def _unpack(blob: memoryview, n: int, nones: list[int]) -> Sequence[float | None]:
    values: tuple[float, ...] = _doubles(n).unpack(blob)
    if not nones:
        return values
    out: list[float | None] = list(values)
    for i in nones:
        out[i] = None
    return out


def _results(
    job_id: str, n: int, fields: Sequence[str], columns: list[Any], blob: memoryview
) -> list[Result]:
    """Rebuild one job's ``n`` results from :func:`_columns` output (fields matched by name)."""
    wanted = Result.__dataclass_fields__
    iterables: dict[str, Any] = {}
    pos = 0
    for name, column in zip(fields, columns, strict=True):
        if isinstance(column, dict) and "f8" in column:
            values: Any = _unpack(blob[pos : pos + 8 * n], n, column["f8"])
            pos += 8 * n
        elif isinstance(column, dict):
            value = column["all"]
            # a dict (labels) must not be shared between results: a fresh copy each
            values = map(dict, repeat(value, n)) if isinstance(value, dict) else repeat(value, n)
        elif isinstance(column, str) and name == "status":
            values = list(map(_STATUS_NAME.__getitem__, column))
        else:
            values = column
        if not isinstance(values, (map, repeat)) and len(values) != n:
            raise ValueError(f"column {name} of {job_id} has {len(values)} values, not {n}")
        if name in wanted:
            iterables[name] = values
    if pos != len(blob):
        raise ValueError(f"{len(blob) - pos} stray bytes after the columns of {job_id}")
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
