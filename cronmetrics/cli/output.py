"""Rendering for the operator CLI: tables that fit a terminal, JSON, YAML.

Tables are for people (an 80-column terminal must stay readable, so long cells are cut
with ``…``); ``-o json`` / ``-o yaml`` are for scripts and print everything.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

__all__ = [
    "FORMATS",
    "HelpGroup",
    "age",
    "emit",
    "flatten",
    "output_option",
    "parse_duration",
    "parse_labels",
    "plural",
    "render_pairs",
    "render_table",
    "seconds_text",
    "truncate",
]

FORMATS = ("table", "json", "yaml")
ELLIPSIS = "…"
MIN_COLUMN = 5
GAP = "  "


class HelpGroup(click.Group):
    """A group whose command list shows each command's whole first sentence.

    click cuts summaries to the width left of the names ("Show what the server..."); a
    summary should be read, so it wraps onto the next lines instead.
    """

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def terminal_width() -> int:
    """Terminal columns (``COLUMNS`` wins; 80 when not a terminal)."""
    return max(40, shutil.get_terminal_size((80, 24)).columns)


def truncate(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    return text[: width - 1] + ELLIPSIS


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int | None = None,
    shrink_first: Sequence[int] = (),
) -> str:
    """Left-aligned columns shrunk until the table fits ``width``.

    Columns in ``shrink_first`` (say, labels) give way before the others; then the widest
    column is cut first, so an id column stays whole as long as possible.
    """
    width = terminal_width() if width is None else width
    cells = [[" ".join(str(c).split()) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    floor = [max(MIN_COLUMN, min(len(h), 12)) for h in headers]
    budget = width - len(GAP) * (len(headers) - 1)
    for i in shrink_first:
        keep = max(floor[i], len(headers[i]))
        widths[i] -= max(0, min(sum(widths) - budget, widths[i] - keep))
    while sum(widths) > budget:
        candidates = [i for i, w in enumerate(widths) if w > floor[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        second = max((widths[i] for i in candidates if i != widest), default=0)
        step = min(sum(widths) - budget, widths[widest] - max(second, floor[widest]))
        widths[widest] -= max(step, 1)
    lines = []
    for row in [list(headers), *cells]:
        parts = [truncate(cell, widths[i]).ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(GAP.join(parts).rstrip())
    return "\n".join(lines)


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as ``a.b`` keys, for key/value display."""
    out: list[tuple[str, Any]] = []
    if isinstance(data, Mapping):
        if not data and prefix:
            return [(prefix, "")]
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping) and value and not _is_labels(str(key)):
                out.extend(flatten(value, name))
            else:
                out.append((name, value))
        return out
    return [(prefix or "value", data)]


def _is_labels(key: str) -> bool:
    return key == "labels"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(cell(v) for v in value) or "-"
    return str(value)


def render_pairs(data: Mapping[str, Any], *, width: int | None = None) -> str:
    """``key: value`` lines, values cut to the terminal width."""
    width = terminal_width() if width is None else width
    pairs = flatten(data)
    if not pairs:
        return ""
    key_width = min(max(len(k) for k, _ in pairs) + 1, 32)
    lines = []
    for key, value in pairs:
        label = truncate(f"{key}:", key_width).ljust(key_width)
        text = " ".join(cell(value).split())
        lines.append(f"{label} {truncate(text, max(10, width - key_width - 1))}".rstrip())
    return "\n".join(lines)


def emit(data: Any, fmt: str, table: str | None = None) -> None:
    """Print ``data`` as JSON or YAML, or the pre-rendered ``table`` text."""
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif fmt == "yaml":
        from cronmetrics.jobs.yamlio import dumps_plain

        click.echo(dumps_plain(data), nl=False)
    else:
        click.echo(table if table is not None else render_pairs(data))


def parse_duration(text: str, *, what: str) -> int:
    """``600``, ``10m``, ``1h30m``, ``2d`` -> whole seconds; raises click.BadParameter."""
    from cronmetrics.client.cli import parse_duration as parse
    from cronmetrics.client.failures import UsageError

    try:
        return parse(text, what="")
    except UsageError as exc:
        raise click.BadParameter(exc.message.strip(), param_hint=what) from None


def parse_labels(values: Sequence[str], *, what: str = "'--label'") -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{raw!r} must be KEY=VALUE", param_hint=what)
        out[key.strip()] = value
    return out


def plural(count: int, noun: str) -> str:
    """``1 file``, ``2 files``, ``0 problems``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def seconds_text(seconds: float | None) -> str:
    """A compact duration: ``45s``, ``10m``, ``1h30m``, ``2d``."""
    if seconds is None:
        return "-"
    value = round(abs(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if value >= size or (unit == "s" and not parts):
            parts.append(f"{value // size}{unit}")
            value %= size
        if len(parts) == 2:
            break
    return "".join(parts)


def _parse_ts(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def age(value: Any, now: dt.datetime) -> str:
    """``5m ago`` / ``in 2h`` for an RFC 3339 timestamp; ``-`` for none."""
    when = _parse_ts(value)
    if when is None:
        return "never" if value is None else str(value)
    delta = (when - now).total_seconds()
    text = long_text(delta)
    return f"in {text}" if delta > 0 else f"{text} ago"


def long_text(seconds: float) -> str:
    """Like :func:`seconds_text`, with years and days past 30 days: ``45d``, ``1y 123d``."""
    days = int(abs(seconds) // 86400)
    if days < 30:
        return seconds_text(seconds)
    years, days = divmod(days, 365)
    if not years:
        return f"{days}d"
    return f"{years}y {days}d" if days else f"{years}y"


def output_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-o/--output table|json|yaml`` (into ``fmt``): one meaning of ``--output`` in every
    command that prints data."""
    return click.option(
        "-o",
        "--output",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(func)
