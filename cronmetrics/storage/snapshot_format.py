"""The snapshot file format (version 3): one chunk per job, each encodable on its own.

Layout of ``state.snapshot``::

    CRONMETRICS-SNAPSHOT 3 <index bytes> <sha256 of the index, hex>\\n
    <index: JSON>
    <chunk of job 1><chunk of job 2>...

The index is ``{"format", "written_at", "journal_seq", "state_fields", "result_fields",
"unmanaged", "jobs": [[job id, chunk bytes, chunk crc32], ...]}``; the chunks follow in
that order and the file ends exactly after the last one. The sha256 covers the index, the
index lists every chunk's length and CRC-32, so every byte of the file is checked: a
flipped bit anywhere, a truncated or padded file, a reordered chunk all fail to load.

Why chunks: a job's chunk only changes when that job does, so the snapshotter keeps each
job's encoded bytes with their CRC and re-encodes only the jobs changed since the last
snapshot (:mod:`cronmetrics.storage.snapshot`); a whole-file hash would have to re-read every
byte of every write. CRC-32 per chunk because it is an integrity check against bad disks,
not an authenticity one, and runs at memory speed when loading.

A chunk is ``<JSON>\n<binary>``. The JSON (orjson never writes a raw newline) is ``[state
values, result count, result columns]``: states positionally, results column by column
(as :class:`~cronmetrics.storage.history.History` keeps them in memory) with the field names
listed once in the index, so a field added to :class:`~cronmetrics.storage.history.Result` later
is still read by name. A column is one of:

- ``{"all": value}``: the same value in every result (the host, no labels, no output);
- a string of one letter per result (``status``: ``s``uccess, ``f``ailure, ``b``egin);
- ``{"f8": [indices of None]}``: floats, packed as little-endian IEEE doubles in the
  chunk's binary part (in column order); ``NaN`` and the listed indices are ``None``.
  Timestamps are most of the data; as text they were 60 % of the bytes and most of the
  encode and parse time. They are the in-memory arrays' bytes, written and read whole;
- a JSON list of values (anything else; ``null`` labels are none).

Version 2 differs only in that its writer listed the indices of ``None`` instead of
writing ``NaN``; it is read the same way (its chunks are re-encoded at the next write).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import typing
import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import Any

import orjson

from cronmetrics.storage.history import (
    COLUMNS,
    FLOAT_COLUMNS,
    LITTLE_ENDIAN,
    NAN,
    STATUS_CODES,
    History,
)
from cronmetrics.storage.store import JobState

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

FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)
MAGIC = b"CRONMETRICS-SNAPSHOT"
STATE_FIELDS = tuple(f for f in JobState.__dataclass_fields__ if f != "history")
RESULT_FIELDS = COLUMNS
#: result fields a chunk must have (the others default to ``None``)
REQUIRED_FIELDS = ("status", "timestamp", "received")
_state_values = attrgetter(*STATE_FIELDS)
_STATUS_LETTERS = bytes(sorted(STATUS_CODES.values()))


def _allowed_types(hint: Any) -> tuple[type, ...]:
    """The types a JSON value of a state field with type ``hint`` may have."""
    types = typing.get_args(hint) or (hint,)
    return tuple(chain.from_iterable((int, float) if t is float else (t,) for t in types))


#: field -> the types its value may have (a crafted or buggy file must not put a None
#: where the exposition does arithmetic)
_STATE_TYPES = {
    name: _allowed_types(hint)
    for name, hint in typing.get_type_hints(JobState).items()
    if name in STATE_FIELDS
}
_NONE = type(None)
#: the types the list columns may hold
_LIST_TYPES = {
    "host": frozenset({str, _NONE}),
    "run_id": frozenset({str, _NONE}),
    "output": frozenset({str, _NONE}),
    "exit_code": frozenset({int, _NONE}),
    "labels": frozenset({dict, _NONE}),
}
#: the column entry of a float column (orjson writes it as ``{"f8":[]}``)
_F8: dict[str, list[int]] = {"f8": []}
_NUMBERS = frozenset({int, float, bool})

#: one job's encoded bytes and their CRC-32
Chunk = tuple[bytes, int]
#: one job as copied under the lock: id, state values, history (a copy-on-write copy)
Copied = tuple[str, tuple[Any, ...], History]


class SnapshotError(ValueError):
    """A snapshot file that cannot be used (corrupt, truncated, unknown format)."""


@dataclass(slots=True)
class Decoded:
    written_at: float
    journal_seq: int
    jobs: dict[str, tuple[dict[str, Any], History]]
    unmanaged: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    #: each job's chunk as read, when the file's version and field layout are this
    #: version's: what :func:`encode_job` would produce for the restored state, so it can
    #: be reused
    chunks: dict[str, Chunk] = field(default_factory=dict)

    @property
    def results(self) -> int:
        return sum(len(h) for _, h in self.jobs.values())


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Building or walking many small objects triggers full collections that find
    nothing to free; pausing the cyclic GC for the duration saves that time."""
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


def encode_job(values: tuple[Any, ...], history: History) -> Chunk:
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


def _columns(history: History, blob: list[bytes]) -> list[Any]:
    """One job's history column by column (see the module docstring); packed float
    columns are appended to ``blob``.

    This is most of a full snapshot's cost (10,000 jobs), so every column is handled by
    C-level operations on the whole column: ``tobytes`` for floats, ``decode`` for the
    status bytes, ``list.count`` to find constant columns."""
    n = len(history)
    if not n:
        return [[] for _ in RESULT_FIELDS]
    out: list[Any] = []
    append = out.append
    for name, column in history.columns().items():
        if name in FLOAT_COLUMNS:
            append(_F8)
            blob.append(column.tobytes() if LITTLE_ENDIAN else _swapped(column))
        elif name == "status":
            append(column.decode("ascii"))
        elif (first := column[0]) == column[-1] and column.count(first) == n and _one_type(column):
            append({"all": first})
        else:
            append(column)
    return out


def _swapped(column: array[float]) -> bytes:
    """Little-endian bytes on a big-endian machine."""
    copy = array("d", column)
    copy.byteswap()
    return copy.tobytes()


def _one_type(column: list[Any]) -> bool:
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
    if version not in READABLE_VERSIONS:
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise SnapshotError(
            f"snapshot format version {version} is not supported (this version reads {readable})"
        )
    start = end + 1
    index = data[start : start + length]
    if len(index) != length:
        raise SnapshotError(f"truncated: {len(index)} index bytes, expected {length}")
    if hashlib.sha256(index).hexdigest().encode() != parts[3]:
        raise SnapshotError("checksum mismatch in the index (the file is corrupt)")
    try:
        doc = orjson.loads(index)
        if doc["format"] != version:  # the header is outside the checksum
            raise SnapshotError(f"header says format {version}, the index {doc['format']}")
        entries = [(str(j), int(n), int(crc)) for j, n, crc in doc["jobs"]]
        expected = start + length + sum(n for _, n, _ in entries)
        if expected != len(data):
            raise SnapshotError(
                f"truncated or padded: {len(data)} bytes, the index describes {expected}"
            )
        with gc_paused():
            return _build(doc, data, start + length, entries, version)
    except SnapshotError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, OverflowError) as exc:
        raise SnapshotError(f"unreadable snapshot: {exc}") from None


def _build(
    doc: dict[str, Any], data: bytes, offset: int, entries: list[tuple[str, int, int]], version: int
) -> Decoded:
    state_fields = tuple(doc["state_fields"])
    result_fields = tuple(doc["result_fields"])
    reusable = (
        version == FORMAT_VERSION
        and state_fields == STATE_FIELDS
        and result_fields == RESULT_FIELDS
    )
    jobs: dict[str, tuple[dict[str, Any], History]] = {}
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
) -> tuple[dict[str, Any], History]:
    """One job's state (known fields only) and history from its chunk."""
    split = chunk.index(b"\n")
    values, count, columns = orjson.loads(chunk[:split])
    state = {}
    for name, value in zip(state_fields, values, strict=True):
        allowed = _STATE_TYPES.get(name)
        if allowed is None:
            continue  # a field of a later version
        if not isinstance(value, allowed):
            raise ValueError(f"state of {job_id}: {name} is {value!r}")
        state[name] = value
    history = _history(job_id, int(count), result_fields, columns, memoryview(chunk)[split + 1 :])
    return state, history


def _history(
    job_id: str, n: int, fields: Sequence[str], columns: list[Any], blob: memoryview
) -> History:
    """Rebuild one job's history of ``n`` results from :func:`_columns` output (fields
    matched by name; unknown ones skipped, missing optional ones ``None``)."""
    got: dict[str, Any] = {}
    pos = 0
    for name, column in zip(fields, columns, strict=True):
        values: Any
        if isinstance(column, dict) and "f8" in column:
            values = _floats(blob[pos : pos + 8 * n], column["f8"])
            pos += 8 * n
        elif isinstance(column, dict):
            values = [column["all"]] * n
            _check_types(job_id, name, (column["all"],))
        else:
            values = column
            _check_types(job_id, name, values)
        if len(values) != n:
            raise ValueError(f"column {name} of {job_id} has {len(values)} values, not {n}")
        got[name] = values
    if pos != len(blob):
        raise ValueError(f"{len(blob) - pos} stray bytes after the columns of {job_id}")
    missing = [f for f in REQUIRED_FIELDS if f not in got]
    if missing:
        raise ValueError(f"results of {job_id} lack {', '.join(missing)}")
    own: dict[str, Any] = {}
    for name in COLUMNS:
        values = got.get(name, [None] * n)
        if name in FLOAT_COLUMNS:
            own[name] = values if isinstance(values, array) else _float_list(values)
        elif name == "status":
            own[name] = _status(values)
        elif name == "labels":
            own[name] = [v or None for v in values]
        else:
            own[name] = list(values)
    return History.from_columns(job_id, own)


def _check_types(job_id: str, name: str, values: Sequence[Any]) -> None:
    """The list columns hold what the API and stats will read as such."""
    allowed = _LIST_TYPES.get(name)
    if allowed is not None and not (kinds := set(map(type, values))) <= allowed:
        wrong = ", ".join(sorted(k.__name__ for k in kinds - allowed))
        raise ValueError(f"column {name} of {job_id} holds {wrong}")


def _floats(blob: memoryview, nones: list[int]) -> array[float]:
    values = array("d")
    values.frombytes(blob)
    if not LITTLE_ENDIAN:
        values.byteswap()
    for i in nones:
        values[i] = NAN
    return values


def _float_list(values: list[Any]) -> array[float]:
    """A float column written as a JSON list (constant, or not all floats in version 2)."""
    return array("d", [NAN if v is None else float(v) for v in values])


def _status(values: str | list[Any]) -> bytearray:
    if isinstance(values, str):
        codes = values.encode("ascii")
        if codes.strip(_STATUS_LETTERS):
            raise ValueError(f"unknown status letters in {values[:40]!r}")
        return bytearray(codes)
    return bytearray(STATUS_CODES[v] for v in values)
