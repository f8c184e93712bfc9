"""The ``cronmetrics`` command line.

Errors are turned into one line on stderr and an exit code in one place, :func:`main`;
commands just raise :class:`~cronmetrics.errors.CronmetricsError`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import Config, load_config
from .errors import CronmetricsError, Problem

__all__ = ["cli", "main"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
PROGRESS_MIN_FILES = 200


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="cronmetrics")
def cli() -> None:
    """Cron-job monitoring exporter for Prometheus."""


def config_options(func: Any) -> Any:
    """``--config`` plus the overrides every server-side command shares."""
    func = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="CRONMETRICS_CONFIG",
        help="YAML config file.",
    )(func)
    return func


def build_config(config_path: Path | None, **overrides: Any) -> Config:
    return load_config(config_path, **overrides)


# -- validate ------------------------------------------------------------------------------


def _collect(paths: tuple[Path, ...]) -> list[tuple[Path, str]]:
    from .repository import iter_job_files

    pairs: list[tuple[Path, str]] = []
    for root in paths:
        if root.is_dir():
            pairs.extend((p, str(p)) for p in iter_job_files(root))
        elif root.exists():
            pairs.append((root, str(root)))
        else:
            raise click.BadParameter(f"{root}: no such file or directory", param_hint="PATH")
    return pairs


def _github_escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def format_problem(problem: Problem, fmt: str) -> str:
    if fmt == "github":
        props = [f"file={_github_escape(problem.path or '', prop=True)}"]
        if problem.line is not None:
            props.append(f"line={problem.line}")
        if problem.column is not None:
            props.append(f"col={problem.column}")
        return f"::error {','.join(props)}::{_github_escape(problem.message)}"
    return str(problem)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
)
def validate(paths: tuple[Path, ...], fmt: str) -> None:
    """Check job files (default: ./jobs.d); print every problem, exit 1 if any."""
    from .repository import load_paths

    pairs = _collect(paths or (Path("jobs.d"),))
    show_bar = sys.stderr.isatty() and len(pairs) >= PROGRESS_MIN_FILES and fmt != "json"
    if show_bar:
        with click.progressbar(
            length=len(pairs), label="validating", file=sys.stderr
        ) as bar:
            result = load_paths(pairs, progress=bar.update)
    else:
        result = load_paths(pairs)
    problems = result.problems
    if fmt == "json":
        doc = {
            "files": result.files,
            "jobs": len(result.jobs),
            "problems": [
                {
                    "file": p.path,
                    "line": p.line,
                    "column": p.column,
                    "field": p.field,
                    "message": p.message,
                }
                for p in problems
            ],
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        for problem in problems:
            click.echo(format_problem(problem, fmt))
        summary = (
            f"{result.files} files, {len(result.jobs)} jobs, {len(problems)} problems"
            f" in {len(result.invalid)} files"
        )
        click.echo(summary, err=True)
    if problems:
        sys.exit(1)


# -- config --------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@config_options
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml")
def config_show(config_path: Path | None, output: str) -> None:
    """Print the effective configuration (file < environment < flags), secrets masked."""
    from .yamlio import dumps_plain

    data = build_config(config_path).redacted()
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(dumps_plain(data), nl=False)


# -- entry point ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every :class:`CronmetricsError` becomes one line and its exit code."""
    try:
        cli.main(args=argv, prog_name="cronmetrics", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except CronmetricsError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
