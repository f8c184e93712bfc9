"""``cronmetrics diff``: what a running server would do if PATH were its jobs dir.

The comparison is :func:`cronmetrics.jobs.plan.compare` (pure); this module fetches the
server's definitions (``GET /api/job``), loads PATH like ``validate`` does, and renders
the plan as text for a terminal, JSON for scripts, or Markdown for a pull-request comment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import pydantic

from cronmetrics.cli.connect import client_options
from cronmetrics.cli.output import seconds_text
from cronmetrics.client.settings import ClientSettings
from cronmetrics.errors import CronmetricsError
from cronmetrics.jobs.plan import Action, FieldChange, JobChange, Plan, compare
from cronmetrics.jobs.plan import definitions_from_api as _from_api

__all__ = ["diff_cmd", "render_markdown", "render_text"]

SECONDS_FIELDS = frozenset({"automatic_failure_threshold", "grace", "max_runtime"})
_SIGN = {Action.ADD: "+", Action.REMOVE: "-", Action.CHANGE: "~"}
NEW_SERIES = "new series"


def value_text(change: FieldChange, value: Any) -> str:
    """One side of a change as a reviewer reads it: ``3600 (1h)``, ``"30 2 * * *"``."""
    if value is None:
        return "(none)"
    plain = value
    if change.field in SECONDS_FIELDS and isinstance(plain, int):
        return f"{plain} ({seconds_text(plain)})"
    if hasattr(plain, "isoformat"):
        return str(plain.isoformat().replace("+00:00", "Z"))
    if hasattr(plain, "value"):  # an enum
        return str(plain.value)
    if change.field == "labels" and isinstance(plain, dict):
        return ", ".join(f"{k}={v}" for k, v in plain.items()) or "{}"
    if isinstance(plain, str):
        return json.dumps(plain, ensure_ascii=False) if _needs_quotes(plain) else plain
    return json.dumps(_jsonable(plain), ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _needs_quotes(text: str) -> bool:
    return not text or text != text.strip() or any(c in text for c in " *,:#'\"")


def _side(change: FieldChange) -> str:
    if change.old is None:
        return value_text(change, change.new)
    if change.new is None:
        return f"{value_text(change, change.old)} -> (removed)"
    return f"{value_text(change, change.old)} -> {value_text(change, change.new)}"


def _summary(plan: Plan) -> str:
    c = plan.counts
    return (
        f"{c.get('add', 0)} to add, {c.get('remove', 0)} to remove, "
        f"{c.get('change', 0)} to change, {plan.unchanged} unchanged"
    )


def render_text(plan: Plan, *, server: str, path: str) -> str:
    """A terminal plan, one block per job: ``+`` add, ``-`` remove, ``~`` change."""
    if plan.empty:
        return f"No changes: {server} already runs the {plan.unchanged} definitions in {path}."
    lines = [f"Plan for {server} from {path}: {_summary(plan)}.", ""]
    for job in plan.changes:
        head = f"{_SIGN[job.action]} {job.id}"
        if job.file:
            head += f"  ({job.file})"
        if job.new_series and job.action == Action.CHANGE:
            head += f"  [{NEW_SERIES}]"
        lines.append(head)
        for change in job.fields:
            lines.append(f"    {change.field}: {_side(change)}")
        for note in job.notes:
            lines.append(f"    ! {note}")
    return "\n".join(lines)


def _md_code(text: str) -> str:
    """``text`` as a Markdown code span that survives table cells and backticks."""
    text = " ".join(text.split()).replace("|", "\\|")
    if "`" in text:
        return f"`` {text} ``"
    return f"`{text}`"


def _md_cell(job: JobChange, change: FieldChange) -> tuple[str, str]:
    if job.action == Action.CHANGE:
        old = "—" if change.old is None else _md_code(value_text(change, change.old))
        new = "—" if change.new is None else _md_code(value_text(change, change.new))
        return old, new
    value = _md_code(value_text(change, change.new))
    return ("—", value) if job.action == Action.ADD else (value, "—")


def render_markdown(plan: Plan, *, server: str, path: str) -> str:
    """A pull-request comment: a summary, a warning for new series, a table of fields."""
    if plan.empty:
        return (
            f"### cronmetrics diff: no changes\n\n"
            f"The server already runs the {plan.unchanged} job definitions in `{path}`.\n"
        )
    out = [f"### cronmetrics diff: {_summary(plan)}", ""]
    series = [j for j in plan.changes if j.new_series and j.action == Action.CHANGE]
    if series:
        ids = ", ".join(_md_code(j.id) for j in series)
        out += [
            f"> **Warning: new series.** The labels of {ids} change: Prometheus starts new "
            "series, alert history and `for:` timers start over.",
            "",
        ]
    out += ["| | job | field | before | after |", "|---|---|---|---|---|"]
    for job in plan.changes:
        sign = str(job.action)
        rows = job.fields or (FieldChange("(no fields)", "other", None, None),)
        for index, change in enumerate(rows):
            first = index == 0
            tag = f"**{sign}**" if first else ""
            who = _md_code(job.id) if first else ""
            old, new = _md_cell(job, change) if job.fields else ("—", "—")
            marker = ""
            if change.category == "labels" and job.new_series and job.action == Action.CHANGE:
                marker = f" ({NEW_SERIES})"
            out.append(f"| {tag} | {who} | `{change.field}`{marker} | {old} | {new} |")
    notes = [(j.id, n) for j in plan.changes for n in j.notes]
    if notes:
        out += ["", "<details><summary>Effects</summary>", ""]
        out += [f"- {_md_code(job_id)}: {note}" for job_id, note in notes]
        out += ["", "</details>"]
    out += ["", f"Compared `{path}` with `{server}`; {plan.unchanged} jobs unchanged."]
    return "\n".join(out) + "\n"


def load_proposed(root: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """PATH's definitions and their files; every problem on stderr and an error if any.

    No plan from invalid files: the server would keep their last good definitions, so
    a plan would show what will not happen.
    """
    from cronmetrics.jobs.repository import load_directory

    if not root.is_dir():
        raise click.BadParameter(f"{root}: not a directory", param_hint="PATH")
    result = load_directory(root, relative=False)
    if result.problems:
        for problem in result.problems:
            click.echo(str(problem), err=True)
        raise CronmetricsError(
            f"{len(result.problems)} problems in {len(result.invalid)} of {result.files} "
            f"files under {root}: no plan until they are fixed (see `cronmetrics validate`)"
        )
    defs = {job_id: jf.definition for job_id, jf in result.jobs.items()}
    files = {job_id: jf.display for job_id, jf in result.jobs.items()}
    return defs, files


def fetch_current(settings: ClientSettings) -> dict[str, Any]:
    with settings.client() as client:
        jobs = client.list_jobs()
    try:
        return _from_api(jobs)
    except pydantic.ValidationError as exc:
        raise CronmetricsError(
            f"{settings.url} answered a job definition this cronmetrics cannot read "
            f"({exc.errors()[0]['msg']}): upgrade the client"
        ) from None


@click.command("diff")
@click.argument(
    "path", required=False, type=click.Path(path_type=Path, file_okay=False), default="jobs.d"
)
@client_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="markdown: for a pull-request comment.",
)
@click.option(
    "--exit-code", is_flag=True, help="Exit 1 when there are changes (like git diff --exit-code)."
)
def diff_cmd(settings: ClientSettings, path: Path, fmt: str, exit_code: bool) -> None:
    """Show what the server would add, remove and change if PATH (default ./jobs.d) were its
    jobs dir: deadlines, lifecycle, labels (flagged "new series"), max_runtime.

    Needs a token with the read scope and no job globs (a limited token sees only its
    jobs). Exit 0 (with --exit-code: 0 no changes, 1 changes); 1 also when PATH has
    invalid files (listed on stderr, no plan).
    """
    proposed, files = load_proposed(path)
    current = fetch_current(settings)
    plan = compare(current, proposed, files=files)
    if fmt == "json":
        doc = {"server": settings.url, "path": str(path), **plan.as_dict()}
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    elif fmt == "markdown":
        click.echo(render_markdown(plan, server=settings.url, path=str(path)), nl=False)
    else:
        click.echo(render_text(plan, server=settings.url, path=str(path)))
    if exit_code and not plan.empty:
        sys.exit(1)
