"""Results, and each job's recent history of them stored column by column.

A job keeps up to ``retention.max_results_per_job`` results (100 by default) and a fleet
has thousands of jobs, so history is most of the server's memory and most of what is
loaded at start. One :class:`Result` object per stored result cost 26 KiB per job.
:class:`History` keeps one column per field instead: times in ``array('d')`` (``NaN``
stands for "no duration"; submitted durations are validated finite), the status as one
byte, run ids as 16 bytes each and the rest coded: each value once, one byte per
result (:mod:`cronmetrics.storage.columns`).
:meth:`History.from_rows` builds one from the columns of ``state.db``.

Readers still get :class:`Result` objects, built on demand: a history is a read-only
:class:`~collections.abc.Sequence` of them (the history API and stats read at most
``max_results_per_job`` of one job at a time).

:meth:`History.copy` is O(1): both copies share the column objects until either one
changes, which copies them first (copy on write). The store's readers copy under its
lock, then read outside it columns nobody mutates.
"""

from __future__ import annotations

import heapq
import json
import math
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import chain, islice, repeat
from typing import Any, overload

from cronmetrics.storage.columns import Coded, RunIds

__all__ = ["COLUMNS", "FLOAT_COLUMNS", "History", "Result", "check_result", "newest", "tail"]


@dataclass(frozen=True, slots=True)
class Result:
    """One accepted result: what a submission, the journal and the history API carry."""

    job_id: str
    status: str  # start | success | failure
    timestamp: float
    received: float
    host: str | None = None
    duration: float | None = None
    exit_code: int | None = None
    run_id: str | None = None
    output: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the columns of a history: the fields of :class:`Result` but ``job_id``, in its order
COLUMNS = tuple(f for f in Result.__dataclass_fields__ if f != "job_id")
FLOAT_COLUMNS = frozenset({"timestamp", "received", "duration"})
#: a status as stored in memory (one byte)
STATUS_CODES = {"success": ord("s"), "failure": ord("f"), "start": ord("b")}
_STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}
NAN = float("nan")
LITTLE_ENDIAN = sys.byteorder == "little"


def tail(text: str, limit: int) -> str:
    """The last ``limit`` bytes of ``text`` in UTF-8, cut at a character boundary: what a
    stored output keeps of a longer one."""
    if len(text) * 4 <= limit:  # cheap: no character takes more than 4 bytes
        return text
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[len(raw) - limit :].decode("utf-8", "ignore")


def _duration(value: float) -> float | None:
    return None if value != value else value  # NaN: none given


def _labels(value: dict[str, str] | None) -> dict[str, str]:
    return dict(value) if value else {}  # a fresh dict: readers may not edit the history


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_NUMBERS = frozenset({int, float})
_TEXT = frozenset({str, type(None)})
#: a run id in ``state.db``: text, or the 16 bytes of 32 hex digits (``stored_run_id``)
_STORED_RUN_ID = _TEXT | {bytes}
#: an exit code is stored as a 64-bit integer (SQLite's INTEGER)
_INT64 = 2**63
_INTEGER = frozenset({int, type(None)})
_LABELS = frozenset({dict, type(None)})
#: the columns a packed history holds as JSON
_TEXT_COLUMNS = ("host", "exit_code", "run_id", "output", "labels")


def check_result(result: Result) -> None:
    """ValueError naming the first field of ``result`` that a history cannot hold.

    Submissions are validated long before this; what it catches is a journal line or a
    hand-made result with a wrong type, which must be refused whole rather than leave
    the columns of different lengths. It runs on every append, so the common case (exact
    built-in types) is one expression; anything else goes to the thorough check."""
    ts, received, duration, labels = (
        result.timestamp,
        result.received,
        result.duration,
        result.labels,
    )
    if (
        result.status in STATUS_CODES
        and type(ts) in _NUMBERS
        and ts - ts == 0  # not NaN or infinite
        and type(received) in _NUMBERS
        and received - received == 0
        and (duration is None or (type(duration) in _NUMBERS and duration - duration == 0))
        and (
            result.exit_code is None
            or (type(result.exit_code) is int and -_INT64 <= result.exit_code < _INT64)
        )
        and type(result.job_id) is str
        and result.job_id.isascii()
        and (result.host is None or (type(result.host) is str and result.host.isascii()))
        and (result.run_id is None or (type(result.run_id) is str and result.run_id.isascii()))
        and (result.output is None or (type(result.output) is str and result.output.isascii()))
        and type(labels) is dict
        and (
            not labels
            or all(
                type(k) is str and type(v) is str and k.isascii() and v.isascii()
                for k, v in labels.items()
            )
        )
    ):
        return
    _check_thoroughly(result)


def _check_thoroughly(result: Result) -> None:
    if result.status not in STATUS_CODES:
        raise ValueError(f"unknown result status {result.status!r}")
    for name in ("timestamp", "received"):
        if not _number(getattr(result, name)):
            raise ValueError(f"{name} {getattr(result, name)!r} is not a finite number")
    if result.duration is not None and not _number(result.duration):
        raise ValueError(f"duration {result.duration!r} is not a finite number")
    code = result.exit_code
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise ValueError(f"exit_code {code!r} is not an integer")
    if code is not None and not -_INT64 <= code < _INT64:
        raise ValueError(f"exit_code {code} does not fit in 64 bits")
    for name in ("job_id", "host", "run_id", "output"):
        value = getattr(result, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} {value!r} is not a string")
        _check_text(name, value)
    labels = result.labels
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ValueError(f"labels {labels!r} are not a mapping of strings")
    for key, value in labels.items():
        _check_text("a label name", key)
        _check_text(f"label {key!r}", value)


def _check_text(name: str, value: str | None) -> None:
    """A string that is not UTF-8 (a lone surrogate) would fail the database write of
    every row queued with it, not only its own: refuse it here."""
    if value is None or value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} is not valid text ({exc.reason} at {exc.start})") from None


#: codes are the characters from "#" to "[": printable, and neither '"' nor '\\'
_CODE_BASE, _MAX_CODES = 0x23, 0x5C - 0x23
_UNSHIFT = bytes((i - _CODE_BASE) % 256 for i in range(256))  # code character -> index
_SHIFT = bytes((i + _CODE_BASE) % 256 for i in range(256))  # index -> code character


def _code(column: Sequence[Any]) -> Any:
    """A column of few distinct values as ``{"v": values, "c": one code each}`` (the
    codes as the characters of a string; ``"c": null``: every entry is the one value),
    or the column itself when its values are many."""
    coded = column.codes() if isinstance(column, Coded) else None
    if coded is not None:  # coded in memory already: no loop over the entries
        distinct, codes = coded
        if len(distinct) <= 1:
            return {"v": distinct, "c": None}
        return {"v": distinct, "c": codes.translate(_SHIFT).decode("ascii")}
    distinct = list(dict.fromkeys(column))
    if len(distinct) == 1:
        return {"v": distinct, "c": None}
    if len(distinct) > _MAX_CODES:
        return list(column)
    index = {v: chr(_CODE_BASE + i) for i, v in enumerate(distinct)}
    return {"v": distinct, "c": "".join(map(index.__getitem__, column))}


def _decode(coded: Any, n: int, kinds: frozenset[Any], what: str) -> Coded:
    """The column :func:`_code` made, checked to hold only values of ``kinds`` (each
    distinct value once). ValueError naming ``what``."""
    values = coded if type(coded) is list else coded["v"]
    if not set(map(type, values)) <= kinds:
        raise ValueError(f"{what} holds a value of the wrong type")
    if type(coded) is list:
        return Coded(coded)
    if coded["c"] is None:
        return Coded.from_codes(values, bytes(n)) if len(values) == 1 else Coded()
    try:
        return Coded.from_codes(values, coded["c"].encode("ascii").translate(_UNSHIFT))
    except ValueError:
        raise ValueError(f"a code of {what} is out of range") from None


def _label_text(labels: dict[str, str] | None) -> str | None:
    return None if labels is None else json.dumps(labels, sort_keys=True)


def _parsed(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _labels_from(column: Iterable[str | None]) -> list[dict[str, str] | None]:
    """Label sets from their JSON texts (``None``: none), checked."""
    texts = list(column)
    if texts == [None] * len(texts):
        return [None] * len(texts)
    labels = [None if t is None else json.loads(t) for t in texts]
    if not set(map(type, labels)) <= _LABELS or not all(
        type(k) is str and type(v) is str for d in labels if d for k, v in d.items()
    ):
        raise ValueError("labels hold a value that is not text")
    return labels


class History(Sequence[Result]):
    """One job's newest results, oldest first, at most ``maxlen`` of them.

    The oldest results are dropped lazily: the columns may hold up to ``maxlen // 8``
    dead entries before ``_head`` (never visible), so that a full history of 100,000
    results does not move every column on each append.
    """

    __slots__ = (
        "_head",
        "_shared",
        "duration",
        "exit_code",
        "host",
        "job_id",
        "labels",
        "maxlen",
        "output",
        "received",
        "run_id",
        "status",
        "timestamp",
    )

    status: bytearray
    timestamp: array[float]
    received: array[float]
    host: Coded
    duration: array[float]
    exit_code: Coded
    run_id: RunIds
    output: Coded
    labels: Coded

    def __init__(self, job_id: str = "", maxlen: int | None = None) -> None:
        self.job_id = job_id
        self.maxlen = maxlen
        self._reset()

    def _reset(self) -> None:
        self.status = bytearray()
        self.timestamp, self.received, self.duration = array("d"), array("d"), array("d")
        self.host, self.exit_code, self.output, self.labels = Coded(), Coded(), Coded(), Coded()
        self.run_id = RunIds()
        self._head = 0
        self._shared = False

    @classmethod
    def from_rows(
        cls, job_id: str, columns: Sequence[Sequence[Any]], maxlen: int | None
    ) -> History:
        """A history from database columns: ``job_id`` then :data:`COLUMNS` in order,
        statuses as names, ``None`` durations, labels as JSON text (``None``: none).
        ValueError for a value a history cannot hold (a damaged or hand-edited row)."""
        history = cls(job_id, maxlen)
        if not columns:
            return history
        _, status, timestamp, received, host, duration, exit_code, run_id, output, labels = columns
        try:
            history.status = bytearray(map(STATUS_CODES.__getitem__, status))
        except KeyError as exc:
            raise ValueError(f"{job_id}: unknown result status {exc}") from None
        try:
            history.timestamp = array("d", timestamp)
            history.received = array("d", received)
            history.duration = array("d", [NAN if d is None else d for d in duration])
        except TypeError as exc:
            raise ValueError(f"{job_id}: a time is not a number ({exc})") from None
        # checked before coding: coding takes equal values for one (1 and 1.0)
        for name, column, kinds in (
            ("host", host, _TEXT),
            ("run_id", run_id, _STORED_RUN_ID),
            ("output", output, _TEXT),
            ("exit_code", exit_code, _INTEGER),
        ):
            if not set(map(type, column)) <= kinds:  # set(map(type)): C speed at start
                what = "an integer" if kinds is _INTEGER else "text"
                raise ValueError(f"{job_id}: {name} holds a value that is not {what}")
        history.host, history.exit_code = Coded(list(host)), Coded(list(exit_code))
        try:
            history.run_id = RunIds.from_stored(list(run_id))
        except ValueError as exc:
            raise ValueError(f"{job_id}: {exc}") from None
        history.output = Coded(list(output))
        history.labels = Coded(list(labels)).mapped(_parsed)
        if maxlen is not None and len(history) > maxlen:
            history._drop_oldest(len(history) - maxlen)
        return history

    def pack(self) -> bytes:
        """The history as bytes, for the database's history cache: a count, the status
        bytes, the three time columns as little-endian doubles, then the other columns
        as one JSON array, those with few distinct values (host, exit code, output,
        labels) as the values and one code each; compressed (zlib). Reading it back
        makes no object per result but the run ids."""
        floats = [self._live(name) for name in ("timestamp", "received", "duration")]
        if not LITTLE_ENDIAN:
            floats = [array("d", f) for f in floats]
            for f in floats:
                f.byteswap()
        labels = self._live("labels").mapped(_label_text)
        text = json.dumps(
            [
                _code(self._live("host")),
                _code(self._live("exit_code")),
                list(self._live("run_id")),
                _code(self._live("output")),
                _code(labels),
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        packed = b"".join(
            (
                len(self).to_bytes(4, "little"),
                bytes(self._live("status")),
                *(f.tobytes() for f in floats),
                text.encode(),
            )
        )
        return zlib.compress(packed, 1)  # a sixth of the bytes to write at shutdown

    @classmethod
    def unpack(cls, job_id: str, data: bytes, maxlen: int | None) -> History:
        """The history :meth:`pack` made; ValueError for bytes it did not make."""
        try:
            data = zlib.decompress(data)
        except zlib.error as exc:
            raise ValueError(f"{job_id}: cached history is damaged ({exc})") from None
        n = int.from_bytes(data[:4], "little")
        end = 4 + 25 * n
        if len(data) < end:
            raise ValueError(f"{job_id}: cached history is cut short")
        history = cls(job_id, maxlen)
        history.status = bytearray(data[4 : 4 + n])
        if not set(history.status) <= _STATUS_NAMES.keys():
            raise ValueError(f"{job_id}: cached history holds an unknown status")
        floats = []
        for k in range(3):
            column = array("d")
            column.frombytes(data[4 + n + 8 * n * k : 4 + n + 8 * n * (k + 1)])
            if not LITTLE_ENDIAN:
                column.byteswap()
            floats.append(column)
        history.timestamp, history.received, history.duration = floats
        for column in floats[:2]:  # a sum is finite only if every term is
            if (total := sum(column)) - total != 0 and not all(map(math.isfinite, column)):
                raise ValueError(f"{job_id}: cached history holds a time that is not finite")
        try:
            host, exit_code, run_id, output, labels = json.loads(data[end:])
            history.host = _decode(host, n, _TEXT, "host")
            history.exit_code = _decode(exit_code, n, _INTEGER, "exit_code")
            if type(run_id) is not list or not set(map(type, run_id)) <= _TEXT:
                raise ValueError("run_id holds a value of the wrong type")
            history.run_id = RunIds(run_id)
            history.output = _decode(output, n, _TEXT, "output")
            if type(labels) is dict:
                labels["v"] = _labels_from(_decode(labels["v"], len(labels["v"]), _TEXT, "labels"))
            else:
                labels = _labels_from(_decode(labels, n, _TEXT, "labels"))
            history.labels = _decode(labels, n, _LABELS, "labels")
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise ValueError(f"{job_id}: cached history is damaged ({exc})") from None
        if len({len(getattr(history, name)) for name in COLUMNS}) != 1:
            raise ValueError(f"{job_id}: cached history has columns of different lengths")
        if maxlen is not None and len(history) > maxlen:
            history._drop_oldest(len(history) - maxlen)
        return history

    def join(self, newer: History) -> None:
        """Append the results of ``newer`` (the same job's later arrivals) after these,
        dropping the oldest beyond ``maxlen``."""
        if not newer:
            return
        self._own()
        for name in COLUMNS:
            getattr(self, name).extend(newer._live(name))
        if self.maxlen is not None and len(self) > self.maxlen:
            self._drop_oldest(len(self) - self.maxlen)

    @classmethod
    def of(cls, job_id: str, results: Iterable[Result], maxlen: int | None = None) -> History:
        history = cls(job_id, maxlen)
        history.extend(results)
        return history

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.status) - self._head

    def __bool__(self) -> bool:
        return len(self.status) > self._head

    def _live(self, name: str) -> Any:
        """Column ``name`` without the dropped entries (a copy only while some exist)."""
        column = getattr(self, name)
        return column[self._head :] if self._head else column

    def columns(self) -> dict[str, Any]:
        """Every column, by name; call on a :meth:`copy` to read outside the lock."""
        return {name: self._live(name) for name in COLUMNS}

    def timestamps(self) -> array[float]:
        result: array[float] = self._live("timestamp")
        return result

    def _rows(self, reverse: bool) -> Iterator[Result]:
        n = len(self)

        def col(name: str) -> Iterable[Any]:
            column = getattr(self, name)
            return islice(reversed(column), n) if reverse else islice(column, self._head, None)

        return map(
            Result,
            repeat(self.job_id, n),
            map(_STATUS_NAMES.__getitem__, col("status")),
            col("timestamp"),
            col("received"),
            col("host"),
            map(_duration, col("duration")),
            col("exit_code"),
            col("run_id"),
            col("output"),
            map(_labels, col("labels")),
        )

    def __iter__(self) -> Iterator[Result]:
        return self._rows(reverse=False)

    def __reversed__(self) -> Iterator[Result]:
        return self._rows(reverse=True)

    def newest_first(self, floor: float | None = None) -> Iterator[Result]:
        """The results stamped at or after ``floor`` (all without one), the last to
        arrive first; only those become objects."""
        if floor is None:
            yield from reversed(self)
            return
        stamps = self.timestamps()
        for i in range(len(stamps) - 1, -1, -1):
            if stamps[i] >= floor:
                yield self[i]

    @overload
    def __getitem__(self, index: int) -> Result: ...

    @overload
    def __getitem__(self, index: slice) -> list[Result]: ...

    def __getitem__(self, index: int | slice) -> Result | list[Result]:
        if isinstance(index, slice):
            return list(self)[index]
        n = len(self)
        if not -n <= index < n:
            raise IndexError("history index out of range")
        i = self._head + (index if index >= 0 else n + index)
        return Result(
            self.job_id,
            _STATUS_NAMES[self.status[i]],
            self.timestamp[i],
            self.received[i],
            self.host[i],
            _duration(self.duration[i]),
            self.exit_code[i],
            self.run_id[i],
            self.output[i],
            _labels(self.labels[i]),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return self.job_id == other.job_id and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"History({self.job_id!r}, {len(self)} results, maxlen={self.maxlen})"

    # -- changing --------------------------------------------------------------------------

    def copy(self) -> History:
        """An independent copy in O(1): the columns are shared until either side changes."""
        clone = History.__new__(History)  # attribute by attribute: `recent` copies
        clone.job_id, clone.maxlen = self.job_id, self.maxlen  # 10,000 of them in the lock
        clone.status, clone.timestamp, clone.received = self.status, self.timestamp, self.received
        clone.host, clone.duration, clone.exit_code = self.host, self.duration, self.exit_code
        clone.run_id, clone.output, clone.labels = self.run_id, self.output, self.labels
        clone._head = self._head
        self._shared = clone._shared = True
        return clone

    def _own(self) -> None:
        """Copy shared columns before a change (dropping the dead entries on the way)."""
        if self._shared:
            head = self._head
            for name in COLUMNS:
                setattr(self, name, getattr(self, name)[head:])
            self._head = 0
            self._shared = False

    def _drop_oldest(self, count: int) -> None:
        self._head += count
        slack = max(1, (self.maxlen or 0) // 8)
        if self._head >= slack or self._head >= len(self.status):
            head, self._head = self._head, 0
            for name in COLUMNS:
                del getattr(self, name)[:head]

    def append(self, result: Result) -> None:
        """Add the newest result, dropping the oldest beyond ``maxlen``; ValueError (and
        no change) for a result the columns cannot hold."""
        check_result(result)
        code = STATUS_CODES[result.status]
        self._own()
        if not self.job_id:  # a history made without an id (a bare JobState) takes its job's
            self.job_id = result.job_id
        self.status.append(code)
        self.timestamp.append(result.timestamp)
        self.received.append(result.received)
        self.host.append(result.host)
        self.duration.append(NAN if result.duration is None else result.duration)
        self.exit_code.append(result.exit_code)
        self.run_id.append(result.run_id)
        self.output.append(result.output)
        self.labels.append(result.labels or None)
        if self.maxlen is not None and len(self) > self.maxlen:
            self._drop_oldest(len(self) - self.maxlen)

    def extend(self, results: Iterable[Result]) -> None:
        for result in results:
            self.append(result)

    def clear(self) -> None:
        self._reset()

    def limit(self, maxlen: int) -> None:
        """Set the length limit, dropping the oldest results beyond it."""
        self.maxlen = maxlen
        if len(self) > maxlen:
            self._own()
            self._drop_oldest(len(self) - maxlen)

    def purge_before(self, before: float) -> int:
        """Drop the results stamped before ``before``; return how many went."""
        stamps = self.timestamps()
        if not stamps or min(stamps) >= before:
            return 0
        keep = [i for i, t in enumerate(stamps) if t >= before]
        removed = len(stamps) - len(keep)
        if keep == list(range(removed, len(stamps))):  # the oldest ones, the usual case
            self._own()
            self._drop_oldest(removed)
            return removed
        columns = self.columns()
        self._reset()
        for name in COLUMNS:
            column = columns[name]
            picked = [column[i] for i in keep]
            if name in FLOAT_COLUMNS:
                setattr(self, name, array("d", picked))
            elif name == "status":
                self.status = bytearray(picked)
            elif name == "run_id":
                self.run_id = RunIds(picked)
            else:
                setattr(self, name, Coded(picked))
        return removed


def _newest_key(result: Result) -> tuple[float, float]:
    return result.timestamp, result.received


def newest(histories: Sequence[History], limit: int) -> list[Result]:
    """The ``limit`` newest results (by timestamp, then receipt) across ``histories``,
    newest first; equal ones in arrival order reversed, earlier histories first.

    Only results that can be among them become objects: histories are visited by their
    newest timestamp, keeping the ``limit`` newest timestamps seen (a floor that rises);
    the walk stops at the first history entirely below the floor. A fleet's recent
    results come from a handful of jobs."""
    tops = sorted(
        ((max(h.timestamps()), i) for i, h in enumerate(histories) if h),
        key=lambda top: top[0],
        reverse=True,
    )
    newest_stamps: list[float] = []  # min-heap of the ``limit`` newest timestamps seen
    chosen: list[int] = []
    for top, i in tops:
        if len(newest_stamps) == limit and top < newest_stamps[0]:
            break
        chosen.append(i)
        # histories are mostly in time order: timsort is cheap, then at most ``limit``
        for stamp in sorted(histories[i].timestamps())[-limit:]:
            if len(newest_stamps) < limit:
                heapq.heappush(newest_stamps, stamp)
            elif stamp > newest_stamps[0]:
                heapq.heapreplace(newest_stamps, stamp)
    floor = newest_stamps[0] if len(newest_stamps) == limit else None
    chosen.sort()
    candidates = chain.from_iterable(histories[i].newest_first(floor) for i in chosen)
    return heapq.nlargest(limit, candidates, key=_newest_key)
