"""The compact columns of a :class:`~cronmetrics.storage.history.History`.

A fleet keeps 100 results for each of thousands of jobs, and a plain list costs 8 bytes a
result for the reference alone, plus the object it points to. Two shapes of data repeat
across every job, and each gets a column that stores it in fewer bytes:

- :class:`Coded`, for values that repeat (a job's host, its exit codes, its labels, an
  output that is often empty): each value once in a small table, one byte per result
  saying which. Past :data:`MAX_CODED` distinct values (outputs that differ on every run)
  it turns into the plain list it replaces, so it never costs more than one.
- :class:`RunIds`, for the run id of each result: the two forms clients send (32 hex
  digits, a UUID with dashes) as their 16 bytes, in one ``bytearray``; any other text as
  itself. A string object per id was most of a job's memory (~85 bytes a result).

Both behave as the list they replace for what a history does with its columns (append,
extend, index, iterate both ways, slice and delete a prefix, ``in``, ``==``); a slice is
an independent copy, which the history's copy on write relies on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["MAX_CODED", "Coded", "RunIds"]

#: distinct values a :class:`Coded` column codes before it turns into a plain list
MAX_CODED = 16


class _Column:
    """What the two columns share: list semantics over ``_get(i)`` and ``__len__``."""

    __slots__ = ()

    def __len__(self) -> int:
        raise NotImplementedError

    def _get(self, i: int) -> Any:
        raise NotImplementedError

    def _span(self, index: slice) -> tuple[int, int]:
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("a history column only slices with step 1")
        return start, max(start, stop)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self._slice(*self._span(index))
        n = len(self)
        if not -n <= index < n:
            raise IndexError("column index out of range")
        return self._get(index if index >= 0 else n + index)

    def __delitem__(self, index: slice) -> None:
        self._delete(*self._span(index))

    def _slice(self, start: int, stop: int) -> Any:
        raise NotImplementedError

    def _delete(self, start: int, stop: int) -> None:
        raise NotImplementedError

    def __reversed__(self) -> Iterator[Any]:
        return map(self._get, range(len(self) - 1, -1, -1))

    def extend(self, values: Iterable[Any]) -> None:
        for value in values:
            self.append(value)

    def append(self, value: Any) -> None:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (_Column, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError


class Coded(_Column):
    """Values that repeat: a table of each value once and one code byte per entry.

    Lookups compare with ``==`` over the short table (labels are dicts: no hashing).
    Values that leave the column stay in the table until it is full; it is then
    compacted to the live ones, and if more than :data:`MAX_CODED` remain the column
    holds a plain list from then on (``_codes`` is None).
    """

    __slots__ = ("_codes", "_values")

    def __init__(self, values: Iterable[Any] = ()) -> None:
        self._codes: bytearray | None = bytearray()
        self._values: list[Any] = []
        if type(values) is list and values:
            self._fill(values)
        else:
            self.extend(values)

    def _fill(self, values: list[Any]) -> None:
        """All of ``values`` at C speed when they hash (a history loaded from rows)."""
        try:
            index: dict[Any, Any] = dict.fromkeys(values)
        except TypeError:  # dicts (labels): one by one
            self.extend(values)
            return
        if len(index) > MAX_CODED:
            self._codes, self._values = None, list(values)
            return
        for code, value in enumerate(index):
            index[value] = code
        self._codes, self._values = bytearray(map(index.__getitem__, values)), list(index)

    def mapped(self, function: Callable[[Any], Any]) -> Coded:
        """The column of ``function(value)`` for each value, calling it once per distinct
        value while coded (labels parsed from their JSON text)."""
        column = Coded()
        column._codes = None if self._codes is None else bytearray(self._codes)
        column._values = list(map(function, self._values))
        return column

    @classmethod
    def from_codes(cls, table: list[Any], codes: bytes | bytearray) -> Coded:
        """A column of ``table[c]`` for each code ``c``, made without a loop in Python
        (a history loaded from its cache). ValueError for a code out of the table."""
        if codes and max(codes) >= len(table):
            raise ValueError("a code is out of range")
        column = cls()
        if len(table) > MAX_CODED:
            column._codes, column._values = None, list(map(table.__getitem__, codes))
        else:
            column._codes, column._values = bytearray(codes), list(table)
        return column

    def codes(self) -> tuple[list[Any], bytes] | None:
        """The values in use, each once, and one code per entry into them (C speed: a
        history packed at shutdown); None for a plain list."""
        codes = self._codes
        if codes is None:
            return None
        used = [code for code in range(len(self._values)) if codes.find(code) != -1]
        renumber = bytearray(256)
        for new, old in enumerate(used):
            renumber[old] = new
        return [self._values[old] for old in used], bytes(codes.translate(renumber))

    def table(self) -> list[Any]:
        """The values the column may hold (live ones and some that left): what a type
        check at load has to look at."""
        return self._values

    def __len__(self) -> int:
        return len(self._values) if self._codes is None else len(self._codes)

    def _get(self, i: int) -> Any:
        return self._values[i] if self._codes is None else self._values[self._codes[i]]

    def __iter__(self) -> Iterator[Any]:
        if self._codes is None:
            return iter(self._values)
        return map(self._values.__getitem__, self._codes)

    def __reversed__(self) -> Iterator[Any]:
        if self._codes is None:
            backwards: Iterator[Any] = reversed(self._values)
            return backwards
        return map(self._values.__getitem__, reversed(self._codes))

    def append(self, value: Any) -> None:
        codes, values = self._codes, self._values
        if codes is None:
            values.append(value)
            return
        if codes and values[codes[-1]] == value:  # the usual case: as the last one
            codes.append(codes[-1])
            return
        try:
            codes.append(values.index(value))
            return
        except ValueError:
            pass
        if len(values) >= MAX_CODED:
            self._compact()
            if self._codes is None:
                self._values.append(value)
                return
        self._codes.append(len(self._values))  # type: ignore[union-attr]
        self._values.append(value)

    def _compact(self) -> None:
        """Keep only the values still in use; a plain list if they are too many to code
        (one more is about to be added)."""
        values, renumbered = self.codes()  # type: ignore[misc]  # coded: not None
        if len(values) >= MAX_CODED:
            self._codes, self._values = None, list(self)
            return
        self._values, self._codes = values, bytearray(renumbered)

    def _slice(self, start: int, stop: int) -> Coded:
        column = Coded()
        if self._codes is None:
            column._codes, column._values = None, self._values[start:stop]
        else:
            column._codes, column._values = self._codes[start:stop], list(self._values)
        return column

    def _delete(self, start: int, stop: int) -> None:
        if self._codes is None:
            del self._values[start:stop]
        else:
            del self._codes[start:stop]


#: how a run id is held: none, 32 hex digits, a UUID with dashes, any other text
_NONE, _HEX, _UUID, _OTHER = 0, 1, 2, 3


def _pack(run_id: str) -> tuple[int, bytes]:
    """The kind and 16 bytes of ``run_id``; kind ``_OTHER`` (no bytes) when it would not
    come back exactly the same (upper case, other lengths, any other text)."""
    if len(run_id) == 32:
        digits = run_id
        kind = _HEX
    elif len(run_id) == 36 and run_id[8] == run_id[13] == run_id[18] == run_id[23] == "-":
        digits = run_id.replace("-", "")
        kind = _UUID
    else:
        return _OTHER, b""
    raw = _hex_bytes(digits) if len(digits) == 32 else None  # not 32: a dash elsewhere
    return (kind, raw) if raw is not None else (_OTHER, b"")


def _hex_bytes(digits: str) -> bytes | None:
    """The 16 bytes of 32 hex digits, if they come back exactly the same (upper case and
    spaces, which ``fromhex`` skips, do not): the one rule for packing a run id."""
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    return raw if raw.hex() == digits else None


def stored_run_id(run_id: str | None) -> str | bytes | None:
    """How ``state.db`` holds a run id: 32 lower-case hex digits (what ``cronmetrics run``
    sends) as their 16 bytes, half the row's run id; any other as text. The
    ``results_view`` view shows both as text."""
    if run_id is not None and len(run_id) == 32 and (raw := _hex_bytes(run_id)) is not None:
        return raw
    return run_id


def loaded_run_id(value: Any) -> Any:
    """A run id as ``state.db`` holds it (:func:`stored_run_id`) back as text; ValueError
    for a blob of another length. Anything else is returned as it is (the checks name it)."""
    if type(value) is bytes:
        if len(value) != 16:
            raise ValueError("a run id blob is not 16 bytes")
        return value.hex()
    return value


def _unpack(kind: int, raw: bytes | bytearray) -> str:
    digits = raw.hex()
    if kind == _HEX:
        return digits
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


class RunIds(_Column):
    """Run ids as 16 bytes each (``_packed``, made only once one arrives), their kind as
    one byte, and the rare id of another form in ``_other`` (made only once one
    arrives): 17 bytes a result instead of a reference and an 85-byte string."""

    __slots__ = ("_kinds", "_other", "_packed")

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        self._kinds = bytearray()
        self._packed = bytearray()
        self._other: list[str | None] | None = None
        if not (type(values) is list and values and self._fill(values)):
            self.extend(values)

    @classmethod
    def from_stored(cls, values: list[Any]) -> RunIds:
        """Run ids as ``state.db`` holds them: the 32-hex-digit form as its 16 bytes
        (:func:`stored_run_id`), any other as text. ValueError for a blob of another length."""
        if values and all(type(v) is bytes and len(v) == 16 for v in values):  # `run`'s
            ids = cls()
            ids._kinds, ids._packed = bytearray([_HEX]) * len(values), bytearray(b"".join(values))
            return ids
        if any(type(v) is bytes for v in values):
            values = [loaded_run_id(v) for v in values]
        return cls(values)

    def _fill(self, values: list[Any]) -> bool:
        """All of ``values`` at C speed if every one is 32 hex digits (what ``cronmetrics
        run`` sends: a history loaded at start); False, and nothing done, otherwise."""
        try:
            joined = "".join(values)
        except TypeError:  # a None, or not text
            return False
        if set(map(len, values)) != {32}:
            return False
        try:
            raw = bytes.fromhex(joined)
        except ValueError:
            return False
        if raw.hex() != joined:  # upper case, or spaces that fromhex skips
            return False
        self._kinds, self._packed = bytearray([_HEX]) * len(values), bytearray(raw)
        return True

    def __len__(self) -> int:
        return len(self._kinds)

    def _get(self, i: int) -> str | None:
        kind = self._kinds[i]
        if kind == _NONE:
            return None
        if kind == _OTHER:
            assert self._other is not None
            return self._other[i]
        return _unpack(kind, self._packed[16 * i : 16 * i + 16])

    def __iter__(self) -> Iterator[str | None]:
        kinds = self._kinds
        if kinds and kinds.count(_HEX) == len(kinds):  # all from `cronmetrics run`: C speed
            return iter(self._packed.hex(" ", 16).split(" "))
        return map(self._get, range(len(kinds)))

    def append(self, value: str | None) -> None:
        kinds, packed = self._kinds, self._packed
        if packed and self._other is None and type(value) is str and len(value) == 32:
            hex_raw = _hex_bytes(value)  # the usual case, on every submission: quick
            if hex_raw is not None:
                packed += hex_raw
                kinds.append(_HEX)
                return
        if value is None:
            kind, raw = _NONE, b""
        elif isinstance(value, str):
            value = str(value)  # a subclass too (what the result checks accept)
            kind, raw = _pack(value)
        else:  # held as it is, for the history's type check to name
            kind, raw = _OTHER, b""
        n = len(kinds)
        if raw:
            if not packed:
                self._packed = packed = bytearray(16 * n)
            packed += raw
        elif packed:
            packed += bytes(16)
        if kind == _OTHER and self._other is None:
            self._other = [None] * n
        if self._other is not None:
            self._other.append(value if kind == _OTHER else None)
        kinds.append(kind)

    def indices(self, run_id: str) -> list[int]:
        """Where ``run_id`` is in the column (a retried report is found without making
        a string of every id)."""
        kind, raw = _pack(run_id)
        if kind == _OTHER:
            other = self._other or []
            return [i for i, value in enumerate(other) if value == run_id]
        found, packed, kinds = [], self._packed, self._kinds
        at = packed.find(raw)
        while at != -1:
            if at % 16 == 0 and kinds[at // 16] == kind:
                found.append(at // 16)
            at = packed.find(raw, at + 1)
        return found

    def __contains__(self, value: object) -> bool:
        if value is None:
            return _NONE in self._kinds
        return isinstance(value, str) and bool(self.indices(value))

    def _slice(self, start: int, stop: int) -> RunIds:
        column = RunIds()
        column._kinds = self._kinds[start:stop]
        if self._packed:
            column._packed = self._packed[16 * start : 16 * stop]
        if self._other is not None and _OTHER in column._kinds:
            column._other = self._other[start:stop]
        return column

    def _delete(self, start: int, stop: int) -> None:
        del self._kinds[start:stop]
        if self._packed:
            del self._packed[16 * start : 16 * stop]
        if self._other is not None:
            del self._other[start:stop]
