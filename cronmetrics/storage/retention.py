"""History retention: the age limit, manual purges, and the ``--before`` date syntax.

The count limit (``retention.max_results_per_job``) is structural: each job's history is
a bounded deque, so it can never be exceeded. The age limit (``retention.days``) needs a
sweep; :func:`purge_expired` runs on the scheduler (hourly) and once at start.
:func:`purge_offline` is ``cronmetrics purge --state-dir``: it edits the snapshot of a
*stopped* server (a running one would overwrite it with its next snapshot).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from cronmetrics.config import Config
from cronmetrics.errors import Conflict, InvalidRequest, StorageError
from cronmetrics.logs import get_logger

if TYPE_CHECKING:  # the CLI imports this module: keep `cronmetrics validate` quick
    from cronmetrics.monitor import Monitor

__all__ = ["PURGE_EVERY", "parse_before", "purge_cmd", "purge_expired", "purge_offline"]

log = get_logger("retention")
PURGE_EVERY = 3600.0
_RELATIVE = re.compile(r"^(\d{1,12})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_before(text: str | None, now: float, *, field: str = "before") -> float:
    """A cut-off instant: RFC 3339 (``2025-10-01T00:00:00Z``), a date (UTC midnight), an age
    (``30d``, ``12h``: that long before ``now``) or ``all``/absent (everything)."""
    if text is None or text.strip() in ("", "all"):
        return math.inf
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return _representable(now - int(relative.group(1)) * _UNITS[relative.group(2)])
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"{field} must be an RFC 3339 time (2025-10-01T00:00:00Z), a date (2025-10-01) "
            f"or an age like 30d or 12h; got {text!r}",
            field=field,
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return _representable(when.timestamp())


def _representable(cutoff: float) -> float:
    """Clamp to 1970..9999: results are all after 2000, and the answer shows it as RFC 3339."""
    return min(max(cutoff, 0.0), 253_402_300_799.0)


def purge_expired(monitor: Monitor, days: int, now: float) -> int:
    """Drop history older than ``days`` before ``now``; return how many entries went."""
    removed = monitor.purge_history(now - days * 86_400.0)
    if removed:
        log.info("history purged", extra={"removed": removed, "older_than_days": days})
    return removed


def purge_offline(config: Config, before: float, job_id: str | None, now: float) -> int:
    """Purge the snapshot (and journal) in ``config.state_dir`` of a stopped server;
    :class:`Conflict` when a server holds the state dir."""
    from cronmetrics.storage.generations import claim_state_dir

    try:
        claimed = claim_state_dir(config.state_dir, "cronmetrics purge")
    except Conflict as exc:
        raise Conflict(
            f"{exc.message}; purge through the running server instead (--url, admin token)"
        ) from None
    try:
        return _purge_offline(config, before, job_id, now)
    finally:
        if claimed is not None:
            os.close(claimed)


def _purge_offline(config: Config, before: float, job_id: str | None, now: float) -> int:
    from cronmetrics.monitor import Monitor
    from cronmetrics.storage.snapshot import Snapshotter
    from cronmetrics.storage.store import MemoryStore
    from cronmetrics.web.metrics import SelfMetrics

    monitor = Monitor(MemoryStore(config.retention.max_results_per_job), accept_unknown=True)
    snapshotter = Snapshotter(
        monitor,
        config.state_dir,
        clock=lambda: now,
        interval=config.snapshot.interval,
        journal=False,
        metrics=SelfMetrics(monitor.counts),
    )
    report = snapshotter.restore()
    if report.fallback:
        raise StorageError(
            f"the snapshot in {config.state_dir} is unusable ({'; '.join(report.problems)}); "
            "not purging (start the server once to let it recover)"
        )
    removed = monitor.purge_history(before, job_id)
    snapshotter.scrub()  # both generations and the journal, not just the newest file
    return removed


# -- cronmetrics purge ---------------------------------------------------------------------


def _purge_command() -> click.Command:
    from cronmetrics.cli.connect import client_options

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
        help="Offline: edit the snapshot in this state dir (the server must be stopped).",
    )
    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Offline: take the state dir from this config file.",
    )
    def purge(
        settings: Any,
        before: str,
        job_id: str | None,
        state_dir: Path | None,
        config_path: Path | None,
    ) -> None:
        """Delete results from the history (counters and current state stay).

        Online by default (DELETE /api/job/ID/results or /api/job-result, admin scope);
        with --state-dir or --config it edits the snapshot of a stopped server instead.
        """
        now = time.time()
        cutoff = parse_before(before, now)
        if state_dir is not None or config_path is not None:
            from cronmetrics.config import load_config

            config = load_config(config_path, state_dir=state_dir)
            removed = purge_offline(config, cutoff, job_id, now)
        else:
            with settings.client() as client:
                if job_id is not None:
                    path = f"/api/job/{quote(job_id, safe='@')}/results"
                    body = client.request("DELETE", path, params={"before": before})
                else:
                    body = client.request("DELETE", "/api/job-result", params={"before": before})
            removed = int(body["removed"])
        where = f" of {job_id}" if job_id else ""
        click.echo(f"removed {removed} results{where}")

    return purge


purge_cmd = _purge_command()
