"""All YAML reading and writing: the only module that knows about YAML libraries.

Two readers, one reading of scalars:

* :func:`load_fast` parses with libyaml (PyYAML's C parser) for bulk loading and
  ``cronmetrics validate``; round-trip parsing is ~25x slower, which 10,000 files cannot
  afford.
* :func:`load_roundtrip` / :func:`dump_roundtrip` use ruamel.yaml so API writes keep
  comments, key order and quoting.

Both resolve plain scalars with the YAML 1.2 core schema: the resolver of the fast reader
is built from ruamel.yaml's own 1.2 regular expressions, so ``yes`` stays a string and
``010`` stays ten whichever path read the file (``tests/test_yamlio.py`` proves it).
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.resolver import implicit_resolvers as _ruamel_resolvers

from cronmetrics.errors import Problem

__all__ = [
    "CommentedMap",
    "YamlSyntaxError",
    "dump_roundtrip",
    "dumps_plain",
    "load_fast",
    "load_roundtrip",
    "locate",
    "to_plain",
    "update_roundtrip",
]

from yaml._yaml import CParser  # PyYAML wheels always ship libyaml


class YamlSyntaxError(Exception):
    """A document could not be parsed; ``line``/``column`` are 1-based."""

    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def problem(self, path: str | None) -> Problem:
        return Problem(self.message, path=path, line=self.line, column=self.column)


class _Resolver12(yaml.resolver.BaseResolver):
    """YAML 1.2 core schema, with the exact patterns ruamel.yaml uses."""

    yaml_implicit_resolvers: dict[Any, Any] = {}
    _plain_cache: dict[str, str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        """Memoized for plain scalars: keys and common values repeat across job files."""
        if kind is yaml.ScalarNode and value == "" and tuple(implicit) == (False, False):
            return "tag:yaml.org,2002:null"  # a bare ``!`` tag: null, as ruamel.yaml reads it
        if kind is not yaml.ScalarNode or not implicit or not implicit[0]:
            return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        cache = _Resolver12._plain_cache
        tag = cache.get(value)
        if tag is None:
            tag = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
            if len(cache) < 100_000:
                cache[value] = tag
        return tag


for _versions, _tag, _regexp, _first in _ruamel_resolvers:
    if (1, 2) in _versions and not _tag.endswith((":yaml", ":value")):
        _Resolver12.add_implicit_resolver(_tag, re.compile(_regexp.pattern, re.X), _first)


class _Constructor12(yaml.constructor.SafeConstructor):
    """Safe constructor with YAML 1.2 integers and duplicate-key detection."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return self._int(node)
        except ValueError:  # '0x_', '+_': the 1.2 pattern admits digits that are all '_'
            raise _not_a_number(node) from None

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        try:
            value: float = super().construct_yaml_float(node)
        except ValueError:  # '._': likewise
            raise _not_a_number(node) from None
        return value

    def _int(self, node: yaml.ScalarNode) -> int:
        value = str(self.construct_scalar(node)).replace("_", "")
        sign = 1
        if value[:1] in "+-":
            sign = -1 if value[0] == "-" else 1
            value = value[1:]
        if value.startswith("0b"):
            return sign * int(value[2:], 2)
        if value.startswith("0x"):
            return sign * int(value[2:], 16)
        if value.startswith("0o"):
            return sign * int(value[2:], 8)
        return sign * int(value)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be scalars", key_node.start_mark
                ) from None
            if key in seen:
                first = seen[key].start_mark
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first defined on line {first.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        # one pass: the keys are constructed (and memoized) above, values here
        return {
            self.construct_object(k, deep=True): self.construct_object(v, deep=deep)
            for k, v in node.value
        }


def _not_a_number(node: yaml.ScalarNode) -> yaml.constructor.ConstructorError:
    """Both readers refuse these scalars (ruamel.yaml with a ValueError): say so, located."""
    return yaml.constructor.ConstructorError(
        None,
        None,
        f"{node.value!r} reads as a number but is not one (quote it if it is text)",
        node.start_mark,
    )


_Constructor12.add_constructor(  # type: ignore[type-var]
    "tag:yaml.org,2002:int", _Constructor12.construct_yaml_int
)
_Constructor12.add_constructor(  # type: ignore[type-var]
    "tag:yaml.org,2002:float", _Constructor12.construct_yaml_float
)


class _FastLoader(CParser, _Constructor12, _Resolver12):
    def __init__(self, stream: str) -> None:
        CParser.__init__(self, stream)
        _Constructor12.__init__(self)
        _Resolver12.__init__(self)


def _syntax_error(exc: yaml.YAMLError, text: str) -> YamlSyntaxError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = str(problem)
    if context and "constructor for the tag" not in message:
        message = f"{message} ({context})"
    message = message.replace("could not determine a constructor for the tag", "unsupported tag")
    if "tag:yaml.org,2002:merge" in message:
        message = "merge keys ('<<') are not supported"
    line = mark.line + 1 if mark is not None else None
    col = mark.column + 1 if mark is not None else None
    if line is not None and col is not None:
        lines = text.splitlines()
        source = lines[line - 1] if line <= len(lines) else ""
        if "\t" in source[: max(col, 1)]:
            message = "tab character in indentation (YAML allows only spaces)"
    return YamlSyntaxError(f"YAML: {message}", line, col)


def load_fast(text: str) -> Any:
    """Parse one document safely; raise :class:`YamlSyntaxError` with 1-based position."""
    loader = _FastLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text) from None
    finally:
        loader.dispose()


def _node_children(node: yaml.Node) -> Iterator[tuple[Any, yaml.Node, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            yield key_node.value, key_node, value_node
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield index, item, item


def locate(text: str, path: Sequence[str | int]) -> tuple[int, int] | None:
    """Find the 1-based line and column of ``path`` (keys/indices) in ``text``.

    Only called when something is wrong, so composing the document again is fine. Points
    at the key when the path ends at a key, at the deepest existing ancestor otherwise.
    """
    loader = _FastLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
    if node is None:
        return None
    best = (node.start_mark.line + 1, node.start_mark.column + 1)
    for part in path:
        for key, key_node, value_node in _node_children(node):
            if str(key) == str(part):
                best = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                node = value_node
                break
        else:
            return best
    return best


def _roundtrip() -> YAML:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.width = 4096
    return rt


def load_roundtrip(text: str) -> Any:
    """Parse keeping comments, order and quoting, for in-place edits.

    The document is first read by :func:`load_fast`, so both readers reject the same
    documents: ruamel.yaml would otherwise drop unknown tags (``!!python/object``) silently
    and accept merge keys.
    """
    load_fast(text)
    try:
        return _roundtrip().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        col = mark.column + 1 if mark is not None else None
        raise YamlSyntaxError(f"YAML: {exc.problem or exc}", line, col) from None


def dump_roundtrip(data: Any) -> str:
    stream = io.StringIO()
    _roundtrip().dump(data, stream)
    return stream.getvalue()


def dumps_plain(data: Any) -> str:
    """Serialize plain data (for ``-o yaml`` output and new job files)."""
    return dump_roundtrip(to_commented(data))


def to_commented(data: Any) -> Any:
    if isinstance(data, dict):
        out = CommentedMap()
        for key, value in data.items():
            out[key] = to_commented(value)
        return out
    if isinstance(data, list):
        seq = CommentedSeq()
        seq.extend(to_commented(v) for v in data)
        return seq
    if isinstance(data, dt.datetime):
        return data.astimezone(dt.UTC).replace(tzinfo=None) if data.tzinfo else data
    return data


_STRING_TAGS = frozenset({"tag:yaml.org,2002:str", "tag:yaml.org,2002:value"})


def to_plain(data: Any) -> Any:
    """Turn ruamel's commented containers and scalar subclasses into plain Python."""
    if isinstance(data, dict):
        return {to_plain(k): to_plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [to_plain(v) for v in data]
    if isinstance(data, bool) or data is None:
        return data
    if isinstance(data, int):
        return int(data)
    if isinstance(data, float):
        return float(data)
    if isinstance(data, str):
        return str(data)
    if isinstance(data, TaggedScalar) and str(data.tag) in _STRING_TAGS:
        return str(data.value)  # an explicit ``!!str 5``, or ruamel's 1.1 ``=`` (value) tag
    if isinstance(data, dt.datetime):
        offset = data.utcoffset()
        return dt.datetime(
            data.year,
            data.month,
            data.day,
            data.hour,
            data.minute,
            data.second,
            data.microsecond,
            # ruamel names its zones ("Z", "-05:00"); libyaml's reader does not
            tzinfo=None if offset is None else dt.UTC if not offset else dt.timezone(offset),
        )
    return data


def update_roundtrip(
    node: Any, values: dict[str, Any], *, keep: Callable[[str], bool] | None = None
) -> Any:
    """Make the round-trip mapping ``node`` hold exactly ``values``, touching only changes.

    Keys that stay and whose value is unchanged (plain equality, or ``keep(key)`` for
    values that are equal in meaning but spelled differently, like a timestamp) keep their
    node, so their comments, quoting and flow style survive; nested mappings are updated
    the same way; removed keys go, new keys are appended. ``node`` is returned (a new
    mapping when it was not one).
    """
    if not isinstance(node, CommentedMap):
        return to_commented(values)
    for key in [k for k in node if k not in values]:
        del node[key]
    for key, value in values.items():
        if key in node:
            if (keep is not None and keep(key)) or to_plain(node[key]) == value:
                continue
            if isinstance(value, dict) and isinstance(node[key], CommentedMap):
                update_roundtrip(node[key], value)
                continue
        node[key] = to_commented(value)
    return node
