"""``cronmetrics maintenance add|list|end``: runtime maintenance windows from a terminal.

Online (the default) through ``/api/maintenance`` with ``--url``/``--token``; offline with
``--state-dir`` (or ``--config``) on the state store of a *stopped* server: a running
server holds the state dir's lock, and the command then refuses and says to use ``--url``.
Both sides run the same validation (:func:`cronmetrics.maintenance.build_window`); errors
about one flag's value are usage errors naming that flag.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from cronmetrics.cli.connect import client_options
from cronmetrics.cli.output import (
    HelpGroup,
    age,
    emit,
    output_option,
    parse_duration,
    render_table,
)
from cronmetrics.client.settings import ClientSettings
from cronmetrics.errors import ValidationError

__all__ = ["maintenance_group"]

#: request fields -> the flag that sets them, for error messages
_FLAGS = {"end": "'--until'", "duration": "'--for'", "start": "'--start'", "comment": "'--comment'"}


def _flag(field: str | None) -> str | None:
    if field is None:
        return None
    if field.startswith("matchers"):
        return "'--match'"
    return _FLAGS.get(field)


@contextlib.contextmanager
def _as_usage_errors() -> Iterator[None]:
    """A 400 about one flag's value becomes click's usage error naming that flag."""
    try:
        yield
    except ValidationError as exc:
        flag = _flag(exc.field)
        if flag is None:
            raise
        message = exc.message.removeprefix(f"{exc.field}: ")
        raise click.BadParameter(message, param_hint=flag) from None


def _output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--state-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Offline: the state dir of a stopped server (instead of --url).",
        ),
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Offline: take the state dir (and jobs dir) from this config file.",
        ),
        output_option,
    ]
    for option in reversed(options):
        func = option(func)
    return client_options(func)


def _side(settings: ClientSettings, state_dir: Path | None, config_path: Path | None) -> Any:
    if state_dir is None and config_path is None:
        return contextlib.nullcontext(_Online(settings))
    if settings.explicit_url:
        raise click.UsageError("use either --url (online) or --state-dir (offline), not both")
    from cronmetrics.cli.maintenance_offline import offline
    from cronmetrics.config import load_config

    return offline(load_config(config_path, state_dir=state_dir))


class _Online:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        with self.settings.client() as client:
            answer: dict[str, Any] = client.request("POST", "/api/maintenance", json=body)
        return answer

    def list(self, state: str) -> list[dict[str, Any]]:
        with self.settings.client() as client:
            answer = client.request("GET", "/api/maintenance", params={"state": state})
        return list(answer["windows"])

    def end(self, wid: str) -> dict[str, Any]:
        with self.settings.client() as client:
            answer: dict[str, Any] = client.request("DELETE", f"/api/maintenance/{wid}")
        return answer


def _window_line(window: Mapping[str, Any]) -> str:
    covers = window.get("covers", 0)
    return (
        f"{window['id']} {window['state']}: {window['match']} from {window['start']} "
        f"until {window['end']}; covers {covers} job{'s' if covers != 1 else ''} now"
    )


def windows_table(windows: Sequence[Mapping[str, Any]]) -> str:
    now = dt.datetime.now(dt.UTC)
    headers = ["ID", "STATE", "MATCH", "START", "END", "JOBS", "BY", "COMMENT"]
    rows = [
        [
            str(w["id"]),
            str(w["state"]),
            str(w["match"]),
            age(w["start"], now),
            age(w["end"], now),
            str(w.get("covers", "-")),
            str(w.get("created_by") or "-"),
            str(w.get("comment") or "-"),
        ]
        for w in windows
    ]
    return render_table(headers, rows, shrink_first=(7, 2))


@click.group("maintenance", cls=HelpGroup)
def maintenance_group() -> None:
    """Runtime maintenance windows: silence jobs by matcher until an end.

    \b
    Examples:
      cronmetrics maintenance add --match host=db1 --for 2h --comment "disk swap"
      cronmetrics maintenance add --match 'job_name=~backup_.*' --match env=prod \\
          --until 2026-12-02T06:00:00Z
      cronmetrics maintenance list
      cronmetrics maintenance end 3f9c2a1b7d04
    """


def _pass_side(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        side = _side(kwargs.pop("settings"), kwargs.pop("state_dir"), kwargs.pop("config_path"))
        with side as chosen, _as_usage_errors():
            return func(chosen, **kwargs)

    return _output_options(wrapper)


@maintenance_group.command("add")
@_pass_side
@click.option(
    "--match",
    "matchers",
    multiple=True,
    required=True,
    metavar="MATCHER",
    help="name=value, name!=value, name=~regex, name!~regex over labels, job_name, host "
    "(repeatable: all must hold).",
)
@click.option("--for", "for_", metavar="DURATION", help="How long: 2h, 90m, 1h30m.")
@click.option("--until", metavar="TIME", help="When it ends: RFC 3339 (2026-12-02T06:00:00Z).")
@click.option("--start", metavar="TIME", help="When it starts (default: now).")
@click.option("--comment", default="", metavar="TEXT", help="Why (shown with the window).")
def maintenance_add(
    side: Any,
    fmt: str,
    matchers: tuple[str, ...],
    for_: str | None,
    until: str | None,
    start: str | None,
    comment: str,
) -> None:
    """Create a window; its jobs export -1 at once and come back by themselves."""
    if (for_ is None) == (until is None):
        raise click.UsageError("give --for DURATION or --until TIME (one of them)")
    body: dict[str, Any] = {"matchers": list(matchers), "comment": comment}
    if for_ is not None:
        body["duration"] = parse_duration(for_, what="'--for'")
    else:
        body["end"] = until
    if start is not None:
        body["start"] = start
    window = side.create(body)
    if fmt == "table":
        click.echo(f"created {_window_line(window)}")
    else:
        emit(window, fmt)


@maintenance_group.command("list")
@_pass_side
@click.option(
    "--state",
    default="active,pending",
    show_default=True,
    help="Comma list of active, pending, expired; or all.",
)
def maintenance_list(side: Any, fmt: str, state: str) -> None:
    """The windows (active and pending ones by default), soonest end first."""
    windows = side.list(state)
    if fmt != "table":
        emit(windows, fmt)
    elif not windows:
        click.echo("no maintenance windows", err=True)
    else:
        click.echo(windows_table(windows))


@maintenance_group.command("end")
@_pass_side
@click.argument("wid", metavar="ID")
def maintenance_end(side: Any, fmt: str, wid: str) -> None:
    """End a window now; its jobs are monitored again at once."""
    window = side.end(wid)
    if fmt == "table":
        click.echo(f"ended {_window_line(window)}")
    else:
        emit(window, fmt)


def until_from(for_: str | None, until: str | None, now: float | None = None) -> str | None:
    """``--for``/``--until`` of ``job maintenance`` as a ``maintenance_until`` value;
    a time that is not in the future is refused (it would change nothing)."""
    from cronmetrics.jobs.model import to_utc
    from cronmetrics.logs import rfc3339

    current = time.time() if now is None else now
    if for_ is not None and until is not None:
        raise click.UsageError("give --for or --until, not both")
    if for_ is not None:
        return rfc3339(current + parse_duration(for_, what="'--for'"))
    if until is None:
        return None
    try:
        when = to_utc(until).timestamp()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--until'") from None
    if when <= current:
        raise click.BadParameter(
            f"{until} is in the past; the job would not be in maintenance at all",
            param_hint="'--until'",
        )
    return until
