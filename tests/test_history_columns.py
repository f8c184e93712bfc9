"""The compact history columns behave as the lists they replace, in fewer bytes."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronmetrics.storage.columns import MAX_CODED, Coded, RunIds
from cronmetrics.storage.history import History, Result

HEX = "0123456789abcdef"
run_ids = st.one_of(
    st.none(),
    st.text(HEX, min_size=32, max_size=32),  # cronmetrics run's ids
    st.uuids().map(str),  # a Healthchecks client's
    st.uuids().map(lambda u: str(u).upper()),  # kept as text: packing would lower it
    st.text(HEX + "ABCDEF-", min_size=30, max_size=37),  # near misses of both forms
    st.text(max_size=12),
)
coded_values = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.sampled_from(["", "ok", "failed: disk full"]),
    st.text(max_size=4),  # enough distinct ones to outgrow the codes
    st.dictionaries(st.sampled_from("ab"), st.sampled_from("xy"), max_size=2),  # labels
)


def operations(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[tuple[str, Any]]]:
    return st.lists(
        st.one_of(
            st.tuples(st.just("append"), values),
            st.tuples(st.just("extend"), st.lists(values, max_size=5)),
            st.tuples(st.just("drop"), st.integers(0, 6)),
            st.tuples(st.just("slice"), st.integers(-8, 8)),
        ),
        max_size=80,
    )


def check_like_a_list(column: Any, ops: list[tuple[str, Any]]) -> None:
    model: list[Any] = []
    for op, arg in ops:
        if op == "append":
            column.append(arg)
            model.append(arg)
        elif op == "extend":
            column.extend(arg)
            model.extend(arg)
        elif op == "drop":  # what a history does with its oldest entries
            del column[:arg]
            del model[:arg]
        else:  # a copy from ``arg`` on; the original must not change with it
            copy = column[arg:]
            assert list(copy) == model[arg:]
            copy.append(None)
            column, model = copy, [*model[arg:], None]
        assert len(column) == len(model)
        assert list(column) == model
        assert list(reversed(column)) == model[::-1]
        assert [column[i] for i in range(-len(model), len(model))] == model + model
        assert column == model


@settings(max_examples=300, deadline=None)
@given(ops=operations(coded_values))
def test_a_coded_column_behaves_like_a_list(ops: list[tuple[str, Any]]) -> None:
    check_like_a_list(Coded(), ops)


@settings(max_examples=300, deadline=None)
@given(ops=operations(run_ids))
def test_a_run_id_column_behaves_like_a_list(ops: list[tuple[str, Any]]) -> None:
    check_like_a_list(RunIds(), ops)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(run_ids, max_size=30), probe=run_ids)
def test_a_run_id_is_found_where_it_is_and_nowhere_else(ids: list[str | None], probe: Any) -> None:
    column = RunIds(ids)
    if probe is not None:
        assert column.indices(probe) == [i for i, v in enumerate(ids) if v == probe]
    assert (probe in column) == (probe in ids)


def test_an_id_of_another_form_is_kept_exactly_as_sent() -> None:
    sent = [
        "ABCDEF0123456789ABCDEF0123456789",  # upper case: packing would lower it
        str(uuid.uuid4()).upper(),
        "0123456789abcdef0123456789abcdeg",  # not hex
        "01234567-89ab-cdef-0123-456789abcdef"[:-1] + "-",
        "01234567-89ab-cdef-0123-4567-9abcdef",  # the dashes right, and one more
        "nightly-2026-12-02",
        "",
    ]
    assert list(RunIds(sent)) == sent


def test_a_packed_id_does_not_match_bytes_that_straddle_two_ids() -> None:
    a, b = "00" * 8 + "11" * 8, "22" * 8 + "33" * 8
    column = RunIds([a, b])
    assert column.indices("11" * 8 + "22" * 8) == []
    assert column.indices(b) == [1]


def test_a_uuid_and_the_same_digits_without_dashes_are_different_ids() -> None:
    u = uuid.uuid4()
    column = RunIds([str(u)])
    assert u.hex not in column
    assert str(u) in column


def test_values_that_differ_every_time_become_a_plain_list() -> None:
    column = Coded(f"run {i}" for i in range(MAX_CODED + 5))
    assert column._codes is None  # what it would cost as a list, not more
    assert list(column) == [f"run {i}" for i in range(MAX_CODED + 5)]


def test_values_that_left_the_column_do_not_fill_its_table() -> None:
    """A bounded history of a job whose exit code changes now and then: what left the
    column is dropped from the table, which stays coded."""
    column = Coded()
    for i in range(10 * MAX_CODED):
        column.append(i)
        del column[: max(0, len(column) - 3)]
    assert column._codes is not None
    assert len(column.table()) <= MAX_CODED
    assert list(column) == [10 * MAX_CODED - 3, 10 * MAX_CODED - 2, 10 * MAX_CODED - 1]


def test_from_codes_refuses_a_code_past_its_table() -> None:
    with pytest.raises(ValueError, match="out of range"):
        Coded.from_codes(["a"], bytes([0, 1]))


def test_a_history_of_run_ids_costs_a_quarter_of_a_list_of_strings() -> None:
    """Bytes held, measured: 100 ids as strings in a list against the packed column."""
    ids = [uuid.uuid4().hex for _ in range(100)]
    as_list = sys.getsizeof(ids) + sum(map(sys.getsizeof, ids))
    column = RunIds(ids)
    packed = sum(map(sys.getsizeof, (column, column._kinds, column._packed)))
    assert packed * 4 < as_list


def test_a_retried_result_is_still_recognised_in_a_compact_history() -> None:
    history = History("j@h", maxlen=100)
    rid = str(uuid.uuid4())
    history.append(Result("j@h", "start", 1.0, 1.0, run_id=rid))
    history.append(Result("j@h", "success", 2.0, 2.0, run_id=rid, exit_code=0))
    assert history.run_id.indices(rid) == [0, 1]
    assert [r.run_id for r in history] == [rid, rid]


@settings(max_examples=200, deadline=None)
@given(ops=operations(coded_values))
def test_the_codes_of_a_column_give_it_back(ops: list[tuple[str, Any]]) -> None:
    column = Coded()
    check_like_a_list(column, [op for op in ops if op[0] != "slice"])
    coded = column.codes()
    if coded is not None:  # what a packed history stores: each value once, a code each
        values, codes = coded
        assert [values[c] for c in codes] == list(column)
        assert len(values) == len({repr(v) for v in values}) <= MAX_CODED


@settings(max_examples=100, deadline=None)
@given(
    ids=st.lists(run_ids, min_size=1, max_size=20),
    outputs=st.lists(coded_values.filter(lambda v: v is None or isinstance(v, str)), max_size=20),
)
def test_a_packed_history_of_compact_columns_unpacks_the_same(
    ids: list[str | None], outputs: list[str | None]
) -> None:
    history = History("j@h", maxlen=50)
    for i, rid in enumerate(ids):
        output = outputs[i] if i < len(outputs) else None
        history.append(Result("j@h", "success", float(i), float(i), run_id=rid, output=output))
    back = History.unpack("j@h", history.pack(), 50)
    assert list(back) == list(history)


@pytest.mark.parametrize(
    "ids",
    [
        [uuid.uuid4().hex for _ in range(5)],  # the quick path at load
        [uuid.uuid4().hex for _ in range(4)] + ["ABCDEF0123456789ABCDEF0123456789"],
        [uuid.uuid4().hex for _ in range(4)] + ["0123456789abcdef 123456789abcdef"],
        [uuid.uuid4().hex, None],
    ],
)
def test_a_column_made_from_a_list_holds_it_exactly(ids: list[str | None]) -> None:
    column = RunIds(ids)
    assert list(column) == ids
    assert [column[i] for i in range(len(ids))] == ids


def test_a_run_id_of_a_str_subclass_is_found_like_any_other() -> None:
    class Text(str):
        pass

    rid = uuid.uuid4().hex
    column = RunIds([None, Text(rid)])
    assert column.indices(rid) == [1]
    assert list(column) == [None, rid]
