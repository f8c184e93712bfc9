"""The ``cronmetrics`` command line.

Errors are turned into one line on stderr and an exit code in one place, :func:`main`;
commands just raise :class:`~cronmetrics.errors.CronmetricsError`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from cronmetrics import __version__
from cronmetrics.cli.output import HelpGroup, plural
from cronmetrics.config import Config, load_config
from cronmetrics.errors import CronmetricsError, Problem

__all__ = ["cli", "main"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
PROGRESS_MIN_FILES = 200


@click.group(cls=HelpGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="cronmetrics")
def cli() -> None:
    """Cron-job monitoring exporter for Prometheus."""


def config_options(func: Any) -> Any:
    """``--config`` plus the overrides every server-side command shares."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="CRONMETRICS_CONFIG",
        help="YAML config file.",
    )(func)


def build_config(config_path: Path | None, **overrides: Any) -> Config:
    return load_config(config_path, **overrides)


# -- validate ------------------------------------------------------------------------------


def _collect(paths: tuple[Path, ...], follow_external: bool) -> Any:
    """The files to validate, as a :class:`.files.Scan` (display paths as given)."""
    from cronmetrics.jobs.files import Scan, scan, scan_file

    found = Scan()
    for root in paths:
        if root.is_dir():
            found.add(scan(root, follow_external_symlinks=follow_external).under(root))
        elif root.exists() or root.is_symlink():
            found.add(scan_file(root, follow_external_symlinks=follow_external))
        else:
            raise click.BadParameter(f"{root}: no such file or directory", param_hint="PATH")
    return found


def _github_escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def _text_escape(text: str) -> str:
    """Show control and format characters (newline, ESC, bidi overrides) as escapes, so a
    file name cannot print a forged problem line or recolour the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def format_problem(problem: Problem, fmt: str) -> str:
    if fmt == "github":
        props = [f"file={_github_escape(problem.path or '', prop=True)}"]
        if problem.line is not None:
            props.append(f"line={problem.line}")
        if problem.column is not None:
            props.append(f"col={problem.column}")
        return f"::error {','.join(props)}::{_github_escape(problem.message)}"
    path = None if problem.path is None else _text_escape(problem.path)
    return str(problem.replace(path=path, message=_text_escape(problem.message)))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
)
@click.option(
    "--follow-external-symlinks",
    is_flag=True,
    help="Read job files through symlinks that leave the directory (refused by default).",
)
def validate(paths: tuple[Path, ...], fmt: str, follow_external_symlinks: bool) -> None:
    """Check job files (default: ./jobs.d); print every problem, exit 1 if any."""
    from cronmetrics.jobs.repository import apply_scan, load_paths

    found = _collect(paths or (Path("jobs.d"),), follow_external_symlinks)
    pairs = found.pairs
    show_bar = sys.stderr.isatty() and len(pairs) >= PROGRESS_MIN_FILES and fmt != "json"
    if show_bar:
        with click.progressbar(length=len(pairs), label="validating", file=sys.stderr) as bar:
            result = load_paths(pairs, progress=bar.update, parallel=True)
    else:
        result = load_paths(pairs, parallel=True)
    apply_scan(result, found)
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
            f"{plural(result.files, 'file')}, {plural(len(result.jobs), 'job')}, "
            f"{plural(len(problems), 'problem')} in {plural(len(result.invalid), 'file')}"
        )
        click.echo(summary, err=True)
    if problems:
        sys.exit(1)


# -- serve -------------------------------------------------------------------------------


@cli.command()
@config_options
@click.option(
    "--jobs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Job definitions, watched and hot-reloaded [config jobs_dir; default ./jobs.d].",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="state.db and state.lock, one server each [config state_dir; the default: "
    "`cronmetrics config show`].",
)
@click.option("--bind", default=None, help="HOST:PORT to listen on (default 0.0.0.0:9479).")
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM certificate (chain) for HTTPS, with --tls-key [config tls.cert; default: HTTP].",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM private key of --tls-cert [config tls.key].",
)
@click.option("--no-auth", is_flag=True, default=None, help="Run without authentication.")
@click.option(
    "--store",
    default=None,
    help="embedded (default) or redis://[:password@]host:port/db (rediss:// for TLS; "
    "redis+sentinel://host:port[,host:port...]/service/db behind Sentinel, "
    "rediss+sentinel:// with TLS).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help="Request threads per worker process.  [default: 8; 32 with snapshot.journal: "
    "true, whose requests wait for their group's commit]",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes; more than 1 needs a Redis store.",
)
def serve(
    config_path: Path | None,
    jobs_dir: Path | None,
    state_dir: Path | None,
    bind: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    no_auth: bool | None,
    store: str | None,
    threads: int | None,
    workers: int,
) -> None:
    """Run the exporter (gunicorn: worker processes with threads)."""
    from cronmetrics.web.reconfigure import ConfigSource
    from cronmetrics.web.server import Server, check_can_start, claim, request_threads

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    tls = {"cert": tls_cert, "key": tls_key} if tls_cert is not None else None
    flags = {"jobs_dir": jobs_dir, "state_dir": state_dir, "bind": bind, "tls": tls}
    overrides = {**flags, "no_auth": no_auth, "store": store}
    source = ConfigSource(config_path, overrides)  # read again on SIGHUP
    config = build_config(config_path, **overrides)
    check_can_start(config, workers=workers)
    claimed = claim(config)  # held until the process exits
    try:
        threads = threads or request_threads(config)
        Server(config, threads=threads, workers=workers, source=source, state_lock=claimed).run()
    finally:
        if claimed is not None:
            os.close(claimed)


# -- config --------------------------------------------------------------------------------


@cli.group("config", cls=HelpGroup)
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@config_options
@click.option("--jobs-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--bind", default=None, help="HOST:PORT")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml")
def config_show(
    config_path: Path | None,
    jobs_dir: Path | None,
    state_dir: Path | None,
    bind: str | None,
    output: str,
) -> None:
    """Print the effective configuration (file < environment < flags), secrets masked."""
    from cronmetrics.jobs.yamlio import dumps_plain

    data = build_config(config_path, jobs_dir=jobs_dir, state_dir=state_dir, bind=bind).redacted()
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(dumps_plain(data), nl=False)


# -- token ---------------------------------------------------------------------------------

_SCOPES = click.Choice(["admin", "submit", "read", "metrics", "maintenance"])
#: ``token new`` prints its entry indented for a paste under ``tokens:`` as the docs show it
PASTE_HINT = """\
# paste this entry under tokens: in the server config (a whole file: docs/configuration.md)
# auth:
#   tokens:"""
ENTRY_INDENT = "    "


def _token_entry(
    token: str,
    scopes: tuple[str, ...],
    jobs: tuple[str, ...],
    name: str | None,
    *,
    ping_key: bool = False,
) -> str:
    """Check the entry as the server would, and return its ``auth.tokens`` line."""
    import pydantic

    from cronmetrics.config import TokenConfig
    from cronmetrics.web.auth import config_line, hash_token

    digest = hash_token(token)
    name = name or f"{scopes[0]}-{digest[:6]}"
    try:
        TokenConfig(
            name=name,
            sha256=digest,
            scopes=list(scopes),
            jobs=list(jobs) or None,
            ping_key=ping_key,
        )
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        hint = f"--{first['loc'][0]}" if first["loc"] else "--ping-key"
        raise click.BadParameter(str(first["msg"]), param_hint=hint) from None
    entry = config_line(name, token, list(dict.fromkeys(scopes)), list(jobs), ping_key=ping_key)
    return ENTRY_INDENT + entry


@cli.group("token", cls=HelpGroup)
def token_group() -> None:
    """Create API tokens; the server keeps only their SHA-256 hashes (docs/security.md)."""


@token_group.command("new")
@click.option("--scope", "scopes", type=_SCOPES, multiple=True, required=True, help="Repeatable.")
@click.option("--job", "jobs", multiple=True, metavar="GLOB", help="Limit to job ids (repeatable).")
@click.option("--name", default=None, help="Shown in logs (default: SCOPE-<hash prefix>).")
@click.option(
    "--ping-key", is_flag=True, help="Usable in /ping/<key>/<job> URLs (submit scope only)."
)
def token_new(
    scopes: tuple[str, ...], jobs: tuple[str, ...], name: str | None, ping_key: bool
) -> None:
    """Print a fresh random token (160 bits) and the config line holding its hash."""
    from cronmetrics.web.auth import new_token

    token = new_token()
    line = _token_entry(token, scopes, jobs, name, ping_key=ping_key)
    click.echo("# the token, shown only now: give it to the client (CRONMETRICS_TOKEN)")
    click.echo(token)
    click.echo(PASTE_HINT)
    click.echo(line)


@token_group.command("hash")
@click.option("--scope", "scopes", type=_SCOPES, multiple=True, help="Print a config line.")
@click.option("--job", "jobs", multiple=True, metavar="GLOB", help="Limit to job ids (repeatable).")
@click.option("--name", default=None, help="Shown in logs (default: SCOPE-<hash prefix>).")
def token_hash(scopes: tuple[str, ...], jobs: tuple[str, ...], name: str | None) -> None:
    """Read a token on stdin; print its SHA-256 (or, with --scope, its config line)."""
    from cronmetrics.web.auth import hash_token

    if sys.stdin.isatty():
        token = click.prompt("token", hide_input=True, err=True)
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise click.UsageError("no token on stdin")
    click.echo(_token_entry(token, scopes, jobs, name) if scopes else hash_token(token))


# -- client-bundle -------------------------------------------------------------------------


@cli.command("client-bundle")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def client_bundle(path: Path) -> None:
    """Write the one-file client (a zipapp, Python >= 3.9 standard library only) to PATH.

    \b
    python3 PATH run --url URL --job ID -- CMD   (also: result submit, ingest)
    The server offers the same bytes at GET /client.pyz.
    """
    from cronmetrics.client.bundle import bundle_bytes, bundle_digest
    from cronmetrics.fileio import atomic_write

    try:
        atomic_write(path, bundle_bytes(), mode=0o755)
    except OSError as exc:
        raise click.FileError(str(path), exc.strerror or str(exc)) from None
    click.echo(f"wrote {path} (sha256 {bundle_digest()})", err=True)


# -- client commands: job, result, run, ingest (cronmetrics/jobctl.py, runner.py, ingest.py)

from cronmetrics.cli.connect import light_command  # noqa: E402
from cronmetrics.cli.diff import diff_cmd  # noqa: E402
from cronmetrics.cli.jobctl import job_group, result_group  # noqa: E402
from cronmetrics.cli.maintenance import maintenance_group  # noqa: E402
from cronmetrics.cli.storage import backup_cmd, purge_cmd  # noqa: E402

cli.add_command(job_group)
cli.add_command(result_group)
cli.add_command(
    light_command(
        "run",
        ("run",),
        "Run a command and report its start, exit code, duration and output tail"
        " (cronmetrics run --help).",
    )
)
cli.add_command(
    light_command(
        "ingest", ("ingest",), "Submit JSONL run logs from a file (cronmetrics ingest --help)."
    )
)
result_group.add_command(
    light_command(
        "submit", ("result", "submit"), "Submit one result (cronmetrics result submit --help)."
    )
)
cli.add_command(purge_cmd)
cli.add_command(backup_cmd)
cli.add_command(maintenance_group)
cli.add_command(diff_cmd)
cli.epilog = """\b
Exit codes: 0 ok, 1 error (validation problems, server refused input),
2 usage or configuration error, 3 server unavailable, 4 not found,
5 conflict (exists, read-only jobs dir, state dir in use), 6 unauthorized
or forbidden, 130 interrupted. `run` exits with the command's own code.
\b
Environment: CRONMETRICS_URL, CRONMETRICS_TOKEN, CRONMETRICS_TOKEN_FILE,
CRONMETRICS_CACERT, CRONMETRICS_JOBS_DIR, CRONMETRICS_CONFIG, CRONMETRICS_<KEY>.
See docs/cli.md."""


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
        for problem in getattr(exc, "problems", [])[1:]:
            click.echo(f"error: {problem}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
