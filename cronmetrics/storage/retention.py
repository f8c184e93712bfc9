"""History retention: the age limit, offline purges, and the ``--before`` date syntax.

The count limit (``retention.max_results_per_job``) is structural: each job's history is
bounded, so it can never be exceeded. The age limit (``retention.days``) needs a sweep;
:func:`purge_expired` runs on the scheduler (hourly) and once at start: it drops results
older than the limit, and the jobs whose definition has been gone that long (a detached
job is kept that long so that a file that blinks keeps its history).
:func:`purge_offline` is ``cronmetrics purge --state-dir``: it edits ``state.db`` of a
*stopped* server (a running one keeps the purged results in its memory).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from pathlib import Path

from cronmetrics.errors import Conflict, InvalidRequest, StorageError
from cronmetrics.logs import get_logger
from cronmetrics.storage.interface import Store

__all__ = ["PURGE_EVERY", "parse_before", "purge_expired", "purge_offline"]

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


def purge_expired(store: Store, days: int, now: float) -> int:
    """Drop history older than ``days`` before ``now``, and the jobs detached that long;
    return how many results went."""
    cutoff = now - days * 86_400.0
    removed = store.purge(cutoff)
    if removed:
        log.info("history purged", extra={"removed": removed, "older_than_days": days})
    expired = store.expire_detached(cutoff)
    if expired:
        log.info(
            "dropped jobs whose definition has been gone for the retention period",
            extra={"jobs": len(expired), "sample": expired[:5], "days": days},
        )
    return removed


def purge_offline(
    state_dir: Path, max_results_per_job: int, before: float, job_id: str | None, now: float
) -> tuple[int, bool]:
    """Purge ``state.db`` in ``state_dir`` of a stopped server (``--job``: that job only;
    a job whose definition is gone is dropped whole); return (results removed, whether
    the job was dropped); :class:`Conflict` when a server holds the state dir."""
    from cronmetrics.storage.persistence import open_store
    from cronmetrics.storage.statedir import claim_state_dir

    if not (state_dir / "state.db").is_file():
        raise StorageError(f"no state database in {state_dir}")
    try:
        claimed = claim_state_dir(state_dir, "cronmetrics purge")
    except Conflict as exc:
        raise Conflict(
            f"{exc.message}; purge through the running server instead (--url, admin token)"
        ) from None
    try:
        store, report = open_store(state_dir, max_results_per_job, durable=True, now=now)
        if report.fallback or report.unavailable:
            raise StorageError(
                f"the state in {state_dir} is unusable ({report.fallback or report.unavailable}); "
                "not purging"
            )
        try:
            if job_id is None:
                return store.purge(before), False
            state = store.state(job_id)
            if state is None:
                raise StorageError(f"no job {job_id!r} in {state_dir}")
            removed = store.purge(before, [job_id])
            if state.detached_since is not None:
                return removed, store.drop(job_id)
            return removed, False
        finally:
            store.close()
    finally:
        if claimed is not None:
            os.close(claimed)
