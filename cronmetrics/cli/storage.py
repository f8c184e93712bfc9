"""``cronmetrics purge`` and ``cronmetrics backup``: the state dir from the command line.

``purge`` goes through the running server by default (it owns the state in memory);
``--state-dir``/``--config`` edits ``state.db`` of a stopped one. ``backup`` copies
``state.db`` with SQLite's online backup, so it works while the server runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from cronmetrics.cli.connect import client_options

__all__ = ["backup_cmd", "purge_cmd"]

_STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The server's state dir (default: from the config).",
)
_CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CRONMETRICS_CONFIG",
    default=None,
    help="Take the state dir from this config file.",
)


@click.command("purge")
@client_options
@click.option(
    "--before",
    required=True,
    metavar="WHEN",
    help="RFC 3339 time, date (UTC midnight), age such as 30d or 12h, or 'all'.",
)
@click.option("--job", "job_id", default=None, metavar="ID", help="Only this job.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Offline: edit state.db in this state dir (the server must be stopped).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Offline: take the state dir from this config file.",
)
def purge_cmd(
    settings: Any,
    before: str,
    job_id: str | None,
    state_dir: Path | None,
    config_path: Path | None,
) -> None:
    """Delete results from the history (counters and current state stay).

    Online by default (DELETE /api/job/ID/results or /api/job-result, admin scope);
    with --state-dir or --config it edits state.db of a stopped server instead. A job
    whose definition is gone is dropped whole by --job.
    """
    from cronmetrics.storage.retention import parse_before, purge_offline

    now = time.time()
    cutoff = parse_before(before, now)
    if state_dir is not None or config_path is not None:
        from cronmetrics.config import load_config

        config = load_config(config_path, state_dir=state_dir)
        max_results = config.retention.max_results_per_job
        removed, dropped = purge_offline(config.state_dir, max_results, cutoff, job_id, now)
    else:
        with settings.client() as client:
            if job_id is not None:
                path = f"/api/job/{quote(job_id, safe='@')}/results"
                body = client.request("DELETE", path, params={"before": before})
            else:
                body = client.request("DELETE", "/api/job-result", params={"before": before})
        removed, dropped = int(body["removed"]), bool(body.get("dropped"))
    where = f" of {job_id}" if job_id else ""
    click.echo(f"removed {removed} results{where}")
    if dropped:
        click.echo(f"dropped {job_id} (its file is gone): state and counters too")


@click.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@_STATE_DIR
@_CONFIG
def backup_cmd(path: Path, state_dir: Path | None, config_path: Path | None) -> None:
    """Copy state.db to PATH, consistently, while the server runs.

    The copy is a standard SQLite database (open it with sqlite3, or put it back as
    state.db of a stopped server to restore)."""
    from cronmetrics.config import load_config
    from cronmetrics.storage.database import DB_NAME, backup

    config = load_config(config_path, state_dir=state_dir)
    size = backup(config.state_dir / DB_NAME, path)
    click.echo(f"backed up {config.state_dir / DB_NAME} to {path} ({size} bytes)")
