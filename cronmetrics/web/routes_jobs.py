"""The job API: list, read (and, with the repository writer, create/replace/update/delete)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pydantic
from flask import Blueprint, Response, request

from cronmetrics.errors import InvalidRequest
from cronmetrics.jobs.model import job_id as make_job_id
from cronmetrics.jobs.repository import JobFile
from cronmetrics.jobs.writer import JobWriter, check_job_id
from cronmetrics.logs import rfc3339
from cronmetrics.monitor import JobView
from cronmetrics.web.api import current, json_body, json_response, require

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
            "maintenance_end": _ts(e.maintenance_end),
            "maintenance_windows": list(e.windows),
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
    who = require("read")
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
    svc.monitor.tick(svc.clock())  # show the state at now, not at the last scheduler tick
    jobs = []
    for view in sorted(svc.monitor.views(), key=lambda v: v.id):
        if not who.allows_job(view.id):  # a token limited to some jobs sees only those
            continue
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
    svc = current()
    svc.monitor.tick(svc.clock())  # show the state at now, not at the last scheduler tick
    view = svc.monitor.view(job_id)
    body = job_json(view)
    body["state"]["run_output"] = svc.monitor.run_output(job_id) if view.state.running else None
    return json_response(body)


# -- writes (issue #4) ---------------------------------------------------------------------

_DOCUMENT = pydantic.TypeAdapter(dict[str, Any])


def _writer() -> JobWriter:
    """The app's writer (made by create_app): it keeps a warm index of jobs.d."""
    return current().writer


def _applied(written: JobFile, status: int = 200) -> Response:
    """Apply the write to the running monitor now, so the answer (and /metrics) is live.

    The reload rescans by stat and content hash, so it reads just the written file; the
    watcher sees the same change a moment later, finds it applied already and skips it.
    """
    svc = current()
    svc.reload()
    job = written.definition.id
    try:
        body = job_json(svc.monitor.view(job))
    except Exception:  # pragma: no cover - kept invalid by a concurrent edit
        body = {"id": job, **written.definition.model_dump(mode="json"), "file": written.display}
    response = json_response(body, status)
    if status == 201:
        response.headers["Location"] = f"/api/job/{quote(job, safe='@')}"
    return response


def _document() -> dict[str, Any]:
    doc: dict[str, Any] = json_body(_DOCUMENT)
    return doc


@bp.post("/api/job")
def create_job() -> Response:
    require("admin")
    doc = _document()
    name, host = doc.get("job_name"), doc.get("host")
    if isinstance(name, str) and (host is None or isinstance(host, str)):
        require("admin", make_job_id(name, host))  # token job globs apply to new ids too
    return _applied(_writer().create(doc), 201)


@bp.put("/api/job/<job_id>")
def replace_job(job_id: str) -> Response:
    check_job_id(job_id)
    require("admin", job_id)
    return _applied(_writer().replace(job_id, _document()))


@bp.patch("/api/job/<job_id>")
def patch_job(job_id: str) -> Response:
    check_job_id(job_id)
    require("admin", job_id)
    return _applied(_writer().patch(job_id, _document()))


@bp.delete("/api/job/<job_id>")
def delete_job(job_id: str) -> Response:
    check_job_id(job_id)
    require("admin", job_id)
    _writer().delete(job_id)
    svc = current()
    svc.reload()
    svc.monitor.drop(job_id)  # deleted on purpose: state and history go now, not later
    return Response(status=204)
