"""The job API: list, read (and, with the repository writer, create/replace/update/delete)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from .api import current, json_response, require
from .errors import InvalidRequest
from .logging import rfc3339
from .monitor import JobView

bp = Blueprint("jobs", __name__)


def _ts(value: float | None) -> str | None:
    return None if value is None else rfc3339(value)


def job_json(view: JobView) -> dict[str, Any]:
    """A job as the API shows it: its definition plus its current state."""
    svc = current()
    s, e = view.state, view.evaluation
    jf = svc.jobs_dir.file_of(view.id)
    return {
        "id": view.id,
        **view.definition.model_dump(mode="json"),
        "file": jf.display if jf else None,
        "unmanaged": view.unmanaged,
        "state": {
            "status": e.lifecycle,
            "value": e.value,
            "reason": e.reason,
            "deadline": _ts(e.deadline),
            "running": s.running,
            "run_started": _ts(s.run_started),
            "last_report": _ts(s.last_report),
            "last_run": _ts(s.last_run),
            "last_success": _ts(s.last_success),
            "last_failure": _ts(s.last_failure),
            "last_status": s.last_status,
            "last_duration": s.last_duration,
            "last_exit_code": s.last_exit_code,
            "consecutive_failures": s.consecutive_failures,
            "runs_total": s.runs_total,
            "failures_total": s.failures_total,
        },
    }


def _label_filters() -> list[tuple[str, str]]:
    out = []
    for raw in request.args.getlist("label"):
        key, sep, value = raw.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"label filter must be key=value, got {raw!r}", field="label")
        out.append((key, value))
    return out


@bp.get("/api/job")
def list_jobs() -> Response:
    require("read")
    svc = current()
    status = request.args.get("status")
    host = request.args.get("host")
    query = (request.args.get("q") or "").lower()
    labels = _label_filters()
    allowed = {"active", "maintenance", "paused", "retired", "failing", "ok"}
    if status is not None and status not in allowed:
        raise InvalidRequest(
            f"status filter must be one of {', '.join(sorted(allowed))}", field="status"
        )
    jobs = []
    for view in sorted(svc.monitor.views(), key=lambda v: v.id):
        d, e = view.definition, view.evaluation
        if status == "failing" and e.value != 0:
            continue
        if status == "ok" and e.value != 1:
            continue
        if status not in (None, "failing", "ok") and e.lifecycle != status:
            continue
        if host is not None and (d.host or "") != host:
            continue
        if any(d.labels.get(k) != v for k, v in labels):
            continue
        if query and query not in view.id.lower() and query not in (d.description or "").lower():
            continue
        jobs.append(job_json(view))
    return json_response({"jobs": jobs, "count": len(jobs)})


@bp.get("/api/job/<job_id>")
def get_job(job_id: str) -> Response:
    require("read", job_id)
    return json_response(job_json(current().monitor.view(job_id)))
