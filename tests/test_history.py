"""The columnar per-job history: behaves like a bounded deque of results, copies on write."""

from __future__ import annotations

import dataclasses
import heapq
import json
import random
import zlib
from collections import deque
from itertools import chain
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronmetrics.storage.history import History, Result, newest

T0 = 1_767_571_200.0


def result(i: int, status: str = "success", **extra: Any) -> Result:
    return Result("backup", status, T0 + i, T0 + i + 0.5, **extra)


def test_results_come_back_as_given() -> None:
    given_results = [
        result(0, "start", run_id="r1"),
        result(1, duration=2.5, exit_code=0, run_id="r1", output="ok", labels={"k": "v"}),
        result(2, "failure", host="db1", duration=0.0, exit_code=-1),
    ]
    history = History.of("backup", given_results)
    assert list(history) == given_results
    assert list(reversed(history)) == given_results[::-1]
    assert history[0] == given_results[0]
    assert history[-1] == given_results[-1]
    assert history[1:] == given_results[1:]
    assert len(history) == 3
    with pytest.raises(IndexError):
        history[3]
    with pytest.raises(IndexError):
        history[-4]


def test_no_duration_and_no_labels_are_none_and_a_fresh_dict() -> None:
    history = History.of("backup", [result(0), result(1, labels={"k": "v"})])
    first, second = history
    assert first.duration is None
    assert first.labels == {}
    second.labels["k"] = "changed"  # a reader's edit does not reach the history
    assert history[1].labels == {"k": "v"}


def test_an_unknown_status_is_refused_and_changes_nothing() -> None:
    history = History.of("backup", [result(0)])
    with pytest.raises(ValueError, match="unknown result status 'paused'"):
        history.append(result(1, "paused"))
    assert list(history) == [result(0)]
    assert {len(column) for column in history.columns().values()} == {1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timestamp", "yesterday"),
        ("timestamp", float("nan")),
        ("received", None),
        ("duration", True),
        ("exit_code", 1.5),
        ("host", 7),
        ("output", b"bytes"),
        ("labels", {"k": 1}),
        ("labels", None),
    ],
)
def test_a_result_of_the_wrong_type_is_refused_whole(field: str, value: Any) -> None:
    history = History.of("backup", [result(0)])
    bad = dataclasses.replace(result(1), **{field: value})
    with pytest.raises(ValueError, match=field):
        history.append(bad)
    assert list(history) == [result(0)]
    assert {len(column) for column in history.columns().values()} == {1}


def test_subclasses_of_the_expected_types_are_accepted() -> None:
    """The fast path checks exact types; the thorough one must still take an int or
    float subclass (an IntEnum exit code, a numpy-like float)."""

    class Stamp(float):
        pass

    class Code(int):
        pass

    history = History("backup")
    history.append(Result("backup", "success", Stamp(T0), T0, exit_code=Code(3)))
    assert history[0].timestamp == T0
    assert history[0].exit_code == 3


def test_a_full_history_drops_the_oldest_like_a_bounded_deque() -> None:
    history = History("backup", maxlen=3)
    for i in range(10):
        history.append(result(i))
        assert [r.timestamp - T0 for r in history] == list(range(max(0, i - 2), i + 1))


def test_dropped_results_are_compacted_away() -> None:
    history = History("backup", maxlen=800)  # drops lazily, up to 100 at a time
    for i in range(5000):
        history.append(result(i))
    assert len(history) == 800
    assert len(history.status) <= 900  # the dead entries are bounded
    assert history[0].timestamp == T0 + 4200
    assert history.timestamps()[0] == T0 + 4200


def test_a_copy_is_independent_in_both_directions() -> None:
    history = History.of("backup", [result(0), result(1)], maxlen=2)
    clone = history.copy()
    history.append(result(2))
    assert [r.timestamp - T0 for r in clone] == [0, 1]
    assert [r.timestamp - T0 for r in history] == [1, 2]
    again = history.copy()
    again.purge_before(T0 + 2)
    again.append(result(3))
    assert [r.timestamp - T0 for r in history] == [1, 2]
    assert [r.timestamp - T0 for r in again] == [2, 3]


def test_a_copy_shares_the_columns_until_a_change() -> None:
    history = History.of("backup", [result(0)])
    clone = history.copy()
    assert clone.timestamp is history.timestamp
    history.append(result(1))
    assert clone.timestamp is not history.timestamp


def test_purge_drops_old_results_and_out_of_order_stragglers() -> None:
    history = History.of("backup", [result(i) for i in (5, 1, 6, 2, 7)])
    assert history.purge_before(T0 + 5) == 2
    assert [r.timestamp - T0 for r in history] == [5, 6, 7]
    assert history.purge_before(T0 + 5) == 0
    assert history.purge_before(T0 + 100) == 3
    assert len(history) == 0
    assert not history


def test_limit_keeps_the_newest() -> None:
    history = History.of("backup", [result(i) for i in range(10)])
    history.limit(4)
    assert [r.timestamp - T0 for r in history] == [6, 7, 8, 9]
    history.append(result(10))
    assert [r.timestamp - T0 for r in history] == [7, 8, 9, 10]


def db_row(r: Result) -> tuple[Any, ...]:
    labels = json.dumps(r.labels) if r.labels else None
    return (r.job_id, r.status, r.timestamp, r.received, r.host, r.duration, r.exit_code,
            r.run_id, r.output, labels)  # fmt: skip


def test_a_history_from_database_rows_holds_the_same_results() -> None:
    kept = [result(0), dataclasses.replace(result(1), labels={"k": "v"}, duration=None)]
    columns = list(zip(*map(db_row, kept), strict=True))
    assert list(History.from_rows("backup", columns, 10)) == kept
    assert list(History.from_rows("backup", columns, 1)) == kept[1:]


@pytest.mark.parametrize(("index", "value"), [(1, "done"), (2, "noon"), (6, "1"), (7, 5)])
def test_a_damaged_database_row_is_refused_with_its_field(index: int, value: Any) -> None:
    row = list(db_row(result(0)))
    row[index] = value
    with pytest.raises(ValueError, match="backup"):
        History.from_rows("backup", list(zip(row, strict=True)), 10)


def test_a_packed_history_comes_back_as_it_was() -> None:
    """Constant columns, few distinct values, many distinct ones (more than the codes),
    labels, no duration, no host: all come back equal, and cut to a limit."""
    kept = [
        result(
            i,
            "failure" if i % 3 else "start",
            host=None if i % 5 == 0 else "db1",
            duration=None if i % 4 == 0 else i / 3,
            exit_code=None if i % 6 == 0 else i % 3,
            run_id=None if i % 7 == 0 else f"r{i}",
            output=f"line {i}" if i % 2 else "same",
            labels={"k": str(i % 2)} if i % 3 == 0 else {},
        )
        for i in range(150)
    ]
    history = History.of("backup", kept, maxlen=200)
    history.purge_before(T0 + 5)  # dead entries before the head are not packed
    packed = history.pack()
    assert list(History.unpack("backup", packed, 200)) == kept[5:]
    assert list(History.unpack("backup", packed, 10)) == kept[-10:]
    assert list(History.unpack("backup", History("backup").pack(), 10)) == []
    same = History.of("backup", [result(i, output="ok") for i in range(3)])
    assert list(History.unpack("backup", same.pack(), 10)) == list(same)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:40],
        lambda b: b[:4] + b"x" + b[5:],
        lambda b: b[:-3],
        lambda b: b.replace(b'"c":"', rb'"c":"\u0001', 1),
        lambda b: b.replace(b'["r0"', b"[7", 1),
    ],
)
def test_damaged_packed_bytes_are_refused(damage: Any) -> None:
    history = History.of("backup", [result(i, run_id=f"r{i}", output=str(i % 2)) for i in range(5)])
    packed = zlib.decompress(history.pack())
    with pytest.raises(ValueError, match="backup"):
        History.unpack("backup", zlib.compress(damage(packed)), 10)
    with pytest.raises(ValueError, match="backup"):
        History.unpack("backup", damage(packed), 10)


def test_a_history_without_an_id_takes_its_first_results() -> None:
    history = History()
    history.append(result(0))
    assert history[0].job_id == "backup"


# -- against a reference model ------------------------------------------------------------

operation = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 50), st.sampled_from(["success", "failure"])),
    st.tuples(st.just("copy"), st.just(0), st.just("")),
    st.tuples(st.just("purge"), st.integers(0, 50), st.just("")),
    st.tuples(st.just("limit"), st.integers(1, 12), st.just("")),
)


@settings(max_examples=200, deadline=None)
@given(maxlen=st.integers(1, 12), ops=st.lists(operation, max_size=60))
def test_history_behaves_like_a_bounded_deque(maxlen: int, ops: list[tuple[str, int, str]]) -> None:
    history = History("backup", maxlen)
    model: deque[Result] = deque(maxlen=maxlen)
    copies: list[tuple[History, list[Result]]] = []
    for op, arg, status in ops:
        if op == "append":
            history.append(result(arg, status))
            model.append(result(arg, status))
        elif op == "copy":
            copies.append((history.copy(), list(model)))
        elif op == "purge":
            kept = [r for r in model if r.timestamp >= T0 + arg]
            assert history.purge_before(T0 + arg) == len(model) - len(kept)
            model = deque(kept, maxlen=model.maxlen)
        else:
            history.limit(arg)
            model = deque(model, maxlen=arg)
        assert list(history) == list(model)
        assert list(reversed(history)) == list(reversed(model))
        assert len(history) == len(model)
    for clone, frozen in copies:
        assert list(clone) == frozen


def test_newest_across_histories_is_what_a_full_sort_gives() -> None:
    rng = random.Random(5)
    for _ in range(200):
        histories = []
        for j in range(rng.randint(0, 12)):
            results = [
                Result(f"job{j}", "success", T0 + rng.randint(0, 30), T0 + rng.randint(0, 3))
                for _ in range(rng.randint(0, 8))
            ]
            histories.append(History.of(f"job{j}", results))
        limit = rng.randint(1, 20)
        everything = chain.from_iterable(reversed(list(h)) for h in histories)
        expected = heapq.nlargest(limit, everything, key=lambda r: (r.timestamp, r.received))
        assert newest(histories, limit) == expected
