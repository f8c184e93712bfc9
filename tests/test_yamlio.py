"""One YAML 1.2 reading of scalars: the fast reader and the round-trip reader agree."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronmetrics.jobs.yamlio import (
    YamlSyntaxError,
    dump_roundtrip,
    dumps_plain,
    load_fast,
    load_roundtrip,
    locate,
    to_plain,
)

# (scalar as written, value both readers must produce)
SCALARS: list[tuple[str, Any]] = [
    ("yes", "yes"),
    ("no", "no"),
    ("on", "on"),
    ("off", "off"),
    ("y", "y"),
    ("n", "n"),
    ("Yes", "Yes"),
    ("true", True),
    ("True", True),
    ("FALSE", False),
    ("010", 10),
    ("09", 9),
    ("0o17", 15),
    ("0o8", "0o8"),
    ("0x1F", 31),
    ("0X1F", "0X1F"),
    ("1_000", 1000),
    ("+12", 12),
    ("-0", 0),
    ("1:30", "1:30"),
    ("12:30:00", "12:30:00"),
    ("0.5", 0.5),
    (".5", 0.5),
    ("1e3", 1000.0),
    ("1.0e+3", 1000.0),
    (".inf", math.inf),
    ("-.Inf", -math.inf),
    ("+.INF", math.inf),
    ("~", None),
    ("null", None),
    ("Null", None),
    ("NULL", None),
    ("", None),
    ("2026-12-01T00:00:00Z", dt.datetime(2026, 12, 1, tzinfo=dt.UTC)),
    (
        "2001-12-14t21:59:43.10-05:00",
        dt.datetime(2001, 12, 14, 21, 59, 43, 100000, dt.timezone(dt.timedelta(hours=-5))),
    ),
    ("2001-12-14 21:59:43.10", dt.datetime(2001, 12, 14, 21, 59, 43, 100000)),
    ("2002-12-14", dt.date(2002, 12, 14)),
    ("2001-1-1", "2001-1-1"),
    ("'yes'", "yes"),
    ('"010"', "010"),
    ("'1:30'", "1:30"),
    ('"2026-12-01"', "2026-12-01"),
    ("!!str 5", "5"),
    ("''", ""),
    ("plain words here", "plain words here"),
    ("!", None),
    ("! 5", 5),
    ('""', ""),
]


def both(text: str) -> tuple[Any, Any]:
    return load_fast(text), to_plain(load_roundtrip(text))


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN and types must match exactly (1 != 1.0 != True)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


@pytest.mark.parametrize(("scalar", "expected"), SCALARS, ids=[s for s, _ in SCALARS])
def test_fast_and_roundtrip_readers_give_the_same_yaml_1_2_value(
    scalar: str, expected: Any
) -> None:
    fast, rt = both(f"key: {scalar}\n")
    assert same(fast, {"key": expected})
    assert same(rt, {"key": expected})


@pytest.mark.parametrize("scalar", [".nan", ".NaN", ".NAN"])
def test_nan_reads_as_nan_in_both_readers(scalar: str) -> None:
    fast, rt = both(f"key: {scalar}\n")
    assert math.isnan(fast["key"])
    assert math.isnan(rt["key"])


def test_nested_maps_and_lists_read_the_same() -> None:
    text = (
        "job_name: a\n"
        "labels: {env: on, tier: 010}\n"
        "items:\n"
        "  - yes\n"
        "  - [1, 0x10, ~, {a: 2026-01-01}]\n"
        "  - nested:\n"
        "      deeper: -.inf\n"
        "empty_map: {}\n"
        "empty_list: []\n"
    )
    fast, rt = both(text)
    assert same(fast, rt)
    assert fast["labels"] == {"env": "on", "tier": 10}
    assert fast["items"][1] == [1, 16, None, {"a": dt.date(2026, 1, 1)}]


# Node properties and block indicators (anchor, alias, tag, literal, folded, directive,
# reserved) start something other than a plain scalar: libyaml and ruamel.yaml even
# disagree on which characters an anchor name may hold (``&0:0``), so they are left out.
NOT_PLAIN_START = "&*!|>%@`"
PLAIN_SCALAR = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="#"),
    min_size=1,
    max_size=12,
).filter(lambda s: s[0] not in NOT_PLAIN_START)


@settings(max_examples=400, deadline=None)
@given(PLAIN_SCALAR)
def test_random_plain_scalars_read_the_same_in_both_readers(scalar: str) -> None:
    text = f"key: {scalar}\n"
    try:
        fast = load_fast(text)
    except YamlSyntaxError:
        fast = SyntaxError
    try:
        rt = to_plain(load_roundtrip(text))
    except YamlSyntaxError:
        rt = SyntaxError
    if fast is SyntaxError or rt is SyntaxError:
        # load_roundtrip reads with load_fast first: it never accepts what load_fast refuses
        assert fast is SyntaxError
        return
    assert same(fast, rt), (scalar, fast, rt)


# -- errors --------------------------------------------------------------------------------


def test_duplicate_key_is_an_error_naming_both_lines() -> None:
    with pytest.raises(YamlSyntaxError) as info:
        load_fast("job_name: a\nhost: x\njob_name: b\n")
    assert (info.value.line, info.value.column) == (3, 1)
    assert "duplicate key 'job_name' (first defined on line 1)" in info.value.message


def test_duplicate_key_in_a_nested_map_is_an_error() -> None:
    with pytest.raises(YamlSyntaxError) as info:
        load_fast("labels:\n  env: a\n  env: b\n")
    assert (info.value.line, info.value.column) == (3, 3)


def test_roundtrip_reader_rejects_duplicate_keys_too() -> None:
    with pytest.raises(YamlSyntaxError):
        load_roundtrip("a: 1\na: 2\n")


@pytest.mark.parametrize("reader", [load_fast, load_roundtrip], ids=["fast", "roundtrip"])
@pytest.mark.parametrize(
    "document",
    [
        "!!python/object/apply:os.system ['touch {marker}']\n",
        "key: !!python/object/apply:os.system ['touch {marker}']\n",
        "key: !!python/object/new:os.system ['touch {marker}']\n",
        "key: !!python/name:os.system\n",
    ],
)
def test_python_tags_are_errors_and_never_execute(
    reader: Any, document: str, tmp_path: Path
) -> None:
    marker = tmp_path / "executed"
    with pytest.raises(YamlSyntaxError) as info:
        reader(document.format(marker=marker))
    assert "unsupported tag" in info.value.message
    assert info.value.line == 1
    assert not marker.exists()


def test_merge_keys_are_refused_by_both_readers() -> None:
    text = "base: &b {grace: 1}\njob: {<<: *b}\n"
    for reader in (load_fast, load_roundtrip):
        with pytest.raises(YamlSyntaxError, match="merge keys"):
            reader(text)


def test_tab_indentation_is_an_error_saying_so() -> None:
    with pytest.raises(YamlSyntaxError) as info:
        load_fast("job_name: a\nlabels:\n\tenv: prod\n")
    assert info.value.message == "YAML: tab character in indentation (YAML allows only spaces)"
    assert info.value.line == 3


def test_syntax_error_has_one_based_position() -> None:
    with pytest.raises(YamlSyntaxError) as info:
        load_fast("job_name: a\nlabels: {env: prod\n")
    assert info.value.line == 3
    assert info.value.column == 1
    problem = info.value.problem("x.yaml")
    assert str(problem).startswith("x.yaml:3:1: YAML: ")


def test_non_scalar_mapping_key_is_an_error() -> None:
    with pytest.raises(YamlSyntaxError, match="mapping keys must be scalars"):
        load_fast("? [a, b]\n: 1\n")


# -- locate --------------------------------------------------------------------------------

LOCATE_DOC = (
    "# comment\njob_name: a\nlabels:\n  env: prod\n  team: {x: 1}\nlist:\n  - first\n  - second\n"
)


@pytest.mark.parametrize(
    ("path", "where"),
    [
        (("job_name",), (2, 1)),
        (("labels",), (3, 1)),
        (("labels", "env"), (4, 3)),
        (("labels", "team", "x"), (5, 10)),
        (("list", 1), (8, 5)),
        (("labels", "missing"), (3, 1)),  # the deepest existing ancestor
        ((), (2, 1)),
    ],
)
def test_locate_finds_one_based_line_and_column_of_a_key(
    path: tuple[str | int, ...], where: tuple[int, int]
) -> None:
    assert locate(LOCATE_DOC, path) == where


def test_locate_returns_none_for_unparsable_text() -> None:
    assert locate("a: [\n", ("a",)) is None
    assert locate("", ("a",)) is None


# -- writing -------------------------------------------------------------------------------


def test_roundtrip_keeps_comments_order_and_quotes() -> None:
    text = "# header\njob_name: a   # the name\nschedule: '30 2 * * *'\nlabels: {b: '1', a: x}\n"
    data = load_roundtrip(text)
    data["grace"] = 60
    out = dump_roundtrip(data)
    assert out.startswith("# header\njob_name: a   # the name\nschedule: '30 2 * * *'\n")
    assert out.endswith("grace: 60\n")
    assert load_fast(out)["labels"] == {"b": "1", "a": "x"}


@pytest.mark.parametrize("value", ["yes", "010", "1:30", "null", "", "2026-01-01", "0x1F", "~"])
def test_dumps_plain_quotes_strings_that_would_read_back_as_other_types(value: str) -> None:
    text = dumps_plain({"labels": {"v": value}})
    assert load_fast(text) == {"labels": {"v": value}}
    assert to_plain(load_roundtrip(text)) == {"labels": {"v": value}}


def test_dumps_plain_writes_timestamps_in_utc_that_read_back_as_the_same_instant() -> None:
    when = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    text = dumps_plain({"maintenance_until": when})
    for back in (load_fast(text), to_plain(load_roundtrip(text))):
        # a YAML timestamp without an offset is UTC (YAML spec), as the job model reads it
        assert back["maintenance_until"] == dt.datetime(2026, 12, 1, 0, 0)
        assert back["maintenance_until"].replace(tzinfo=dt.UTC) == when


@pytest.mark.parametrize("scalar", ["0x_", "0o_", "0b_", "+_", "-_", "._"])
def test_a_number_made_only_of_underscores_is_a_located_error(scalar: str) -> None:
    """The 1.2 patterns read these as numbers with no digits; both readers refused them
    with a bare ValueError, which reached users of validate as a traceback."""
    with pytest.raises(YamlSyntaxError) as info:
        load_fast(f"job_name: x\nautomatic_failure_threshold: {scalar}\n")
    assert (info.value.line, info.value.column) == (2, 30)
    assert f"{scalar!r} reads as a number but is not one" in info.value.message
    with pytest.raises(YamlSyntaxError):
        load_roundtrip(f"key: {scalar}\n")
