"""History and statistics: what happened behind a red light.

- ``GET /api/job/<id>/results?limit=50`` (1..200): the job's retained results, newest first
- ``GET /api/job-result?job_id=&limit=50``: recent results across the jobs the token may read
- ``GET /api/job/<id>/stats``: :func:`cronmetrics.stats.job_stats` (shape documented there)
- ``DELETE /api/job/<id>/results?before=DATE`` (admin): purge one job's history (all of it
  without ``before``); ``DELETE /api/job-result?before=DATE[&job_id=]`` (admin): purge
  across jobs (``before`` required; ``before=all`` empties every history)

"Newest" means by the result's own timestamp (when the run happened), not by arrival.
Times are RFC 3339 UTC strings. Counters and the current state are never purged, only
history: ``cronjob_runs_total`` stays monotonic for Prometheus. The exception is a job
whose file is gone (detached): purging it by id drops it whole (``"dropped": true``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from cronmetrics.errors import InvalidRequest
from cronmetrics.logs import get_logger, rfc3339
from cronmetrics.stats import job_stats
from cronmetrics.storage.history import Result
from cronmetrics.storage.retention import parse_before
from cronmetrics.web.api import current, json_response, require

bp = Blueprint("history", __name__)
log = get_logger("history")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def result_json(r: Result) -> dict[str, Any]:
    return {
        "job_id": r.job_id,
        "status": r.status,
        "timestamp": rfc3339(r.timestamp),
        "received": rfc3339(r.received),
        "host": r.host,
        "duration": r.duration,
        "exit_code": r.exit_code,
        "run_id": r.run_id,
        "output": r.output,
        "labels": r.labels,
    }


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(
            f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw!r}", field="limit"
        )
    return int(raw)


@bp.get("/api/job/<job_id>/results")
def job_results(job_id: str) -> Response:
    require("read", job_id)
    limit = _limit()
    svc = current()
    svc.monitor.view(job_id)  # 404 for a job not served
    results = svc.store.history(job_id, limit)
    return json_response(
        {
            "job_id": job_id,
            "limit": limit,
            "count": len(results),
            "results": [result_json(r) for r in results],
        }
    )


@bp.get("/api/job-result")
def recent_results() -> Response:
    who = require("read")
    limit = _limit()
    job_id = request.args.get("job_id") or None
    svc = current()
    if job_id is not None:
        require("read", job_id)
        svc.monitor.view(job_id)
        results = svc.store.history(job_id, limit)
    else:
        served = [j for j in svc.monitor.ids() if who.allows_job(j)]
        results = svc.store.recent(served, limit)
    return json_response(
        {"limit": limit, "count": len(results), "results": [result_json(r) for r in results]}
    )


@bp.get("/api/job/<job_id>/stats")
def stats(job_id: str) -> Response:
    require("read", job_id)
    svc = current()
    view = svc.monitor.view(job_id)
    history = svc.store.history(job_id)
    return json_response(job_stats(job_id, history, svc.clock(), view.state))


def _purged(job_id: str | None, before: float, removed: int, dropped: bool = False) -> Response:
    """Answer a manual purge (a purge is how an operator removes a secret a job printed):
    the store has taken the purged results off the disk before it returned."""
    log.info(
        "history purged by request",
        extra={"job": job_id, "removed": removed, "dropped": dropped},
    )
    return json_response(
        {
            "job_id": job_id,
            "before": None if before == float("inf") else rfc3339(before),
            "removed": removed,
            "dropped": dropped,
        }
    )


def _purge_one(job_id: str, before: float) -> Response:
    return _purged(job_id, before, *current().monitor.purge_job(before, job_id))


@bp.delete("/api/job/<job_id>/results")
def purge_job(job_id: str) -> Response:
    require("admin", job_id)
    return _purge_one(job_id, parse_before(request.args.get("before"), current().clock()))


@bp.delete("/api/job-result")
def purge_all() -> Response:
    who = require("admin")
    svc = current()
    job_id = request.args.get("job_id") or None
    raw = request.args.get("before")
    if not raw:
        raise InvalidRequest(
            "before is required when purging across jobs (a date, an age like 30d, or 'all')",
            field="before",
        )
    before = parse_before(raw, svc.clock())
    if job_id is not None:
        require("admin", job_id)
        return _purge_one(job_id, before)
    if who.jobs is None:
        return _purged(None, before, svc.monitor.purge_history(before))
    allowed = [j for j in svc.store.ids() if who.allows_job(j)]
    return _purged(None, before, svc.monitor.purge_jobs(before, allowed))
