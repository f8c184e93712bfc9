"""``cronmetrics job ...`` and ``cronmetrics result submit``: the operator's terminal tools.

Job commands work in two modes with one set of flags: online against the API
(``--url``/``--token``), or offline on a jobs directory (``--jobs-dir``) to prepare a PR;
:mod:`.jobsource` holds the two sides, this module the commands and their rendering.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from cronmetrics.cli.connect import client_options, split_job_id
from cronmetrics.cli.jobsource import LIFECYCLES, JobSource, job_source_options
from cronmetrics.cli.output import (
    HelpGroup,
    age,
    cell,
    emit,
    output_option,
    parse_duration,
    parse_labels,
    render_table,
    seconds_text,
)
from cronmetrics.client.settings import ClientSettings

__all__ = ["job_group", "result_group"]

#: Patch values that mean "remove this key" (``--threshold none``).
CLEAR_WORDS = frozenset({"none", "null", "-"})


# -- rendering -----------------------------------------------------------------------------


def _expects(job: Mapping[str, Any]) -> str:
    parts = []
    if job.get("schedule"):
        tz = job.get("timezone") or "UTC"
        parts.append(job["schedule"] + ("" if tz == "UTC" else f" {tz}"))
    if job.get("automatic_failure_threshold"):
        from cronmetrics.cli.output import seconds_text

        parts.append(f"every {seconds_text(job['automatic_failure_threshold'])}")
    return "; ".join(parts) or "-"


def jobs_table(jobs: Sequence[Mapping[str, Any]], *, online: bool) -> str:
    now = dt.datetime.now(dt.UTC)
    if online:
        headers = ["ID", "STATUS", "STATE", "LAST RUN", "DEADLINE", "LABELS"]
        rows = []
        for job in jobs:
            state = job.get("state") or {}
            rows.append(
                [
                    str(job.get("id", "")),
                    str(state.get("status") or job.get("status", "")),
                    str(state.get("reason") or "-"),
                    age(state.get("last_run"), now),
                    age(state.get("deadline"), now) if state.get("deadline") else "-",
                    cell(job.get("labels") or {}),
                ]
            )
    else:
        headers = ["ID", "STATUS", "EXPECTS", "LABELS"]  # the file: `job get`, -o yaml
        rows = [
            [
                str(job.get("id", "")),
                str(job.get("status", "")),
                _expects(job),
                cell(job.get("labels") or {}),
            ]
            for job in jobs
        ]
    return render_table(headers, rows, shrink_first=(len(headers) - 1,))


def _show(job: Mapping[str, Any], fmt: str, message: str | None = None) -> None:
    if fmt == "table" and message is not None:
        click.echo(message)
    else:
        emit(dict(job), fmt)


# -- job commands --------------------------------------------------------------------------


@click.group("job", cls=HelpGroup)
def job_group() -> None:
    """Manage job definitions: online (--url) or in a jobs dir (--jobs-dir).

    \b
    Examples:
      cronmetrics job list --label env=prod
      cronmetrics job add --name backup --host db1 --threshold 600 --label env=prod
      cronmetrics job update backup@db1 --maintenance true
      cronmetrics job add --jobs-dir jobs.d --name report --schedule '30 2 * * *'
    """


@job_group.command("list")
@job_source_options
@output_option
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Filter (repeatable).")
@click.option(
    "--status",
    type=click.Choice([*LIFECYCLES, "failing", "ok"]),
    default=None,
    help="Filter by lifecycle status (or, online, failing/ok).",
)
@click.option("--host", default=None, help="Filter by host ('' for host-agnostic jobs).")
def job_list(
    source: JobSource, fmt: str, labels: tuple[str, ...], status: str | None, host: str | None
) -> None:
    """List jobs (with their current state when online)."""
    jobs = source.list(status, host, parse_labels(labels))
    if fmt == "table":
        if jobs:
            click.echo(jobs_table(jobs, online=source.online))
        else:
            click.echo("no jobs match", err=True)
    else:
        emit(jobs, fmt)


@job_group.command("get")
@job_source_options
@output_option
@click.argument("job_id", metavar="ID")
def job_get(source: JobSource, fmt: str, job_id: str) -> None:
    """Show one job (definition, and state when online)."""
    emit(source.get(job_id), fmt)


def _definition_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--threshold", metavar="DURATION", help="Seconds of silence (or 10m, 1h)."),
        click.option("--schedule", metavar="CRON", help="5-field cron expression."),
        click.option("--timezone", metavar="TZ", help="IANA time zone of the schedule."),
        click.option("--grace", metavar="DURATION", help="Grace after the scheduled time."),
        click.option("--max-runtime", metavar="DURATION", help="A run longer than this fails."),
        click.option("--description", metavar="TEXT"),
        click.option("--label", "labels", multiple=True, metavar="K=V", help="Repeatable."),
        click.option("--status", type=click.Choice(LIFECYCLES), default=None),
        click.option(
            "--maintenance",
            type=click.BOOL,
            default=None,
            metavar="true|false",
            help="true: status maintenance; false: status active.",
        ),
        click.option(
            "--until",
            metavar="TIMESTAMP",
            help="maintenance_until (RFC 3339, e.g. 2026-12-01T00:00:00Z).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _optional(value: str | None, convert: Callable[[str], Any], *, clearable: bool) -> Any:
    """``None`` = not given; ``CLEAR`` = remove the key; else the converted value."""
    if value is None:
        return _UNSET
    if clearable and value.strip().lower() in CLEAR_WORDS:
        return None
    return convert(value)


_UNSET: Any = object()


def _changes(opts: Mapping[str, Any], *, clearable: bool) -> dict[str, Any]:
    """Turn definition flags into document keys (``None`` values mean: remove the key)."""

    def seconds(what: str) -> Callable[[str], int]:
        return lambda text: parse_duration(text, what=what)

    out: dict[str, Any] = {}
    mapping: dict[str, tuple[str, Callable[[str], Any]]] = {
        "automatic_failure_threshold": ("threshold", seconds("'--threshold'")),
        "schedule": ("schedule", str),
        "timezone": ("timezone", str),
        "grace": ("grace", seconds("'--grace'")),
        "max_runtime": ("max_runtime", seconds("'--max-runtime'")),
        "description": ("description", str),
        "maintenance_until": ("until", str),
    }
    for key, (flag, convert) in mapping.items():
        value = _optional(opts.get(flag), convert, clearable=clearable)
        if value is not _UNSET:
            out[key] = value
    status, maintenance = opts.get("status"), opts.get("maintenance")
    if status is not None and maintenance is not None:
        raise click.UsageError("use --status or --maintenance, not both")
    if maintenance is True:
        out["status"] = "maintenance"
    elif maintenance is False:
        out["status"] = "active"
        if clearable and "maintenance_until" not in out:
            out["maintenance_until"] = None
    elif status is not None:
        out["status"] = status
    return out


@job_group.command("add")
@job_source_options
@output_option
@click.option("--name", required=True, help="job_name.")
@click.option("--host", default=None, help="Host (omit for a host-agnostic job).")
@_definition_options
def job_add(source: JobSource, fmt: str, name: str, host: str | None, **opts: Any) -> None:
    """Create a job (writes <id>.yaml; fails if the id exists)."""
    doc: dict[str, Any] = {"job_name": name}
    if host:
        doc["host"] = host
    doc.update(_changes(opts, clearable=False))
    labels = parse_labels(opts["labels"])
    if labels:
        doc["labels"] = labels
    job = source.create(doc)
    where = f" ({job['file']})" if job.get("file") else ""
    _show(job, fmt, f"created {job.get('id', name)}{where}")


@job_group.command("update")
@job_source_options
@output_option
@click.argument("job_id", metavar="ID")
@_definition_options
@click.option("--remove-label", "remove_labels", multiple=True, metavar="KEY")
def job_update(source: JobSource, fmt: str, job_id: str, **opts: Any) -> None:
    """Change a job; `none` removes an optional key, as in --max-runtime none."""
    changes = _changes(opts, clearable=True)
    labels: dict[str, str | None] = dict(parse_labels(opts["labels"]))
    labels.update(dict.fromkeys(opts["remove_labels"]))  # None removes (merge semantics)
    if labels:
        changes["labels"] = labels
    if not changes:
        raise click.UsageError("nothing to change: give at least one option (see --help)")
    job = source.patch(job_id, changes)
    _show(job, fmt, f"updated {job.get('id', job_id)}")


@job_group.command("delete")
@job_source_options
@output_option
@click.argument("job_id", metavar="ID")
def job_delete(source: JobSource, fmt: str, job_id: str) -> None:
    """Delete a job's file (to stop monitoring but keep history, use status retired)."""
    _show(source.delete(job_id), fmt, f"deleted {job_id}")


def _lifecycle_command(name: str, help_text: str, status: str) -> None:
    @job_group.command(name, help=help_text)
    @job_source_options
    @output_option
    @click.argument("job_id", metavar="ID")
    def command(source: JobSource, fmt: str, job_id: str, **extra: Any) -> None:
        changes: dict[str, Any] = {"status": status}
        until = extra.get("until")
        if status == "maintenance":
            from cronmetrics.cli.maintenance import until_from

            until = until_from(extra.get("for_"), until)
        if status != "paused":
            changes["maintenance_until"] = until
        job = source.patch(job_id, changes)
        suffix = f" until {until}" if until else ""
        _show(job, fmt, f"{job.get('id', job_id)} is now {status}{suffix}")

    if name == "maintenance":
        click.option("--until", metavar="TIMESTAMP", help="Back to active by itself at this time.")(
            command
        )
        click.option("--for", "for_", metavar="DURATION", help="Back to active after 2h, 1d...")(
            command
        )


_lifecycle_command("pause", "Pause a job: it reports -1 and never fails.", "paused")
_lifecycle_command("resume", "Back to active (clears maintenance_until).", "active")
_lifecycle_command(
    "maintenance",
    "Put a job in maintenance (writes its file; optionally --for 2h or --until a time). "
    "For jobs.d in git, see `cronmetrics maintenance add`.",
    "maintenance",
)


def _no_jobs_dir(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        raise click.UsageError("job stats needs the server: use --url, not --jobs-dir")


@job_group.command("stats")
@client_options  # the server's history: no --jobs-dir (hidden, to say so)
@click.option("--jobs-dir", hidden=True, expose_value=False, callback=_no_jobs_dir)
@output_option
@click.argument("job_id", metavar="ID")
def job_stats(settings: ClientSettings, fmt: str, job_id: str) -> None:
    """Runs, success rates (24h / 7d), durations, intervals, last failure (from the server)."""
    split_job_id(job_id)
    with settings.client() as client:
        stats = client.job_stats(job_id)
    emit(stats if isinstance(stats, dict) else {"stats": stats}, fmt)


# -- result submit -------------------------------------------------------------------------


@click.group("result", cls=HelpGroup)
def result_group() -> None:
    """Submit results by hand, or list the retained ones (what ran, what it printed)."""


@result_group.command("list")
@client_options
@output_option
@click.option("--job", "job_id", default=None, metavar="ID", help="One job (default: all).")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--output-lines", type=click.IntRange(0), default=1, show_default=True,
              help="Last lines of each result's output in the table (0: none).")  # fmt: skip
def result_list(
    settings: ClientSettings, fmt: str, job_id: str | None, limit: int, output_lines: int
) -> None:
    """The newest results, newest first (GET /api/job/ID/results or /api/job-result)."""
    if job_id is not None:
        split_job_id(job_id)
    with settings.client() as client:
        results = client.results(job_id, limit=limit)
    if fmt != "table":
        emit(results, fmt)
    elif not results:
        click.echo("no results", err=True)
    else:
        click.echo(results_table(results, output_lines))


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    return f"{seconds:.3g}s" if seconds < 60 else seconds_text(seconds)


def results_table(results: Sequence[Mapping[str, Any]], output_lines: int) -> str:
    now = dt.datetime.now(dt.UTC)
    headers = ["JOB", "STATUS", "WHEN", "EXIT", "DURATION", "OUTPUT"]
    rows = []
    for r in results:
        tail = (r.get("output") or "").strip().splitlines()[-output_lines:] if output_lines else []
        rows.append(
            [
                str(r.get("job_id", "")),
                str(r.get("status", "")),
                age(r.get("timestamp"), now),
                cell(r.get("exit_code")),
                _duration(r.get("duration")),
                " / ".join(tail) or "-",
            ]
        )
    return render_table(headers, rows, shrink_first=(len(headers) - 1,))
