"""Result submissions: ``POST /api/job-result`` and the curl-friendly ping."""

from __future__ import annotations

import difflib
import logging
from typing import Annotated, Any

import pydantic
from flask import Blueprint, Response, g, request

from cronmetrics.errors import InvalidRequest, NotFound, Problem, ValidationError
from cronmetrics.jobs.model import ResultIn, ResultStatus, split_job_id
from cronmetrics.jobs.model import job_id as make_job_id
from cronmetrics.logs import bind, get_logger
from cronmetrics.web.api import current, json_body, json_response, raw_body, require
from cronmetrics.web.auth import Identity

bp = Blueprint("results", __name__)
log = get_logger("results")

_ONE = pydantic.TypeAdapter(ResultIn)
_adapters: dict[int, pydantic.TypeAdapter[Any]] = {}


def _batch_adapter(limit: int) -> pydantic.TypeAdapter[Any]:
    adapter = _adapters.get(limit)
    if adapter is None:
        adapter = pydantic.TypeAdapter(
            Annotated[list[ResultIn], pydantic.Field(min_length=1, max_length=limit)]
        )
        _adapters[limit] = adapter
    return adapter


def _submit(results: list[ResultIn], *, batch: bool) -> list[str]:
    svc = current()
    who = require("submit")
    if len(results) == 1:
        bind(job=make_job_id(results[0].job_name, results[0].host), host=results[0].host)
    try:
        targets = svc.monitor.submit(
            results,
            svc.clock(),
            index_errors=batch,
            authorize=lambda job_id: svc.auth.require(who, "submit", job_id),
        )
    except NotFound as exc:
        if exc.field != "job_name" or len({(r.job_name, r.host) for r in results}) != 1:
            raise  # a batch for several jobs: the message names the item already
        raise NotFound(
            exc.message + suggest(results[0].job_name, results[0].host, who),
            field="job_name",
        ) from None
    svc.metrics.submissions.labels("accepted").inc(len(results))
    if log.isEnabledFor(logging.DEBUG):
        log.debug("results accepted", extra={"count": len(results), "jobs": targets[:10]})
    return targets


def suggest(job_name: str, host: str | None, who: Identity) -> str:
    """ "; did you mean ...?" for an unknown job: the ids defined for its name, else the
    closest ids, among those the token may report to (it learns nothing else)."""
    defined = list(current().monitor.definitions)
    allowed = [job_id for job_id in defined if who.allows_job(job_id)]
    wanted = make_job_id(job_name, host)
    same_name = sorted(j for j in allowed if j.partition("@")[0] == job_name)
    if same_name:
        hosts = "that host" if len(same_name) == 1 else "those hosts"
        ids = " or ".join(map(repr, same_name))
        return f"; did you mean {ids}? ({job_name!r} is defined for {hosts} only)"
    close = difflib.get_close_matches(wanted, allowed, n=3, cutoff=0.6)
    if close:
        return f"; did you mean {' or '.join(map(repr, close))}?"
    return "; define it in jobs.d (cronmetrics job add) or check --job"


@bp.post("/api/job-result")
def job_result() -> Response:
    g.submission = True
    require("submit")  # authenticate before reading the body: no parsing for strangers
    svc = current()
    body = raw_body().lstrip()
    if body[:1] == b"[":
        limit = svc.config.limits.max_batch
        results = json_body(_batch_adapter(limit))
        targets = _submit(results, batch=True)
        return json_response(_accepted(results, targets))
    result = json_body(_ONE)
    targets = _submit([result], batch=False)
    return json_response(_accepted([result], targets))


def _accepted(results: list[ResultIn], targets: list[str]) -> dict[str, Any]:
    """The answer; it says how many results are older than the history keeps (retention.days),
    so a replay of old logs (``cronmetrics ingest``) can warn that they will be purged."""
    svc = current()
    body: dict[str, Any] = {"accepted": len(targets), "jobs": targets}
    days = svc.config.retention.days
    cutoff = svc.clock() - days * 86400
    old = sum(1 for r in results if r.timestamp is not None and r.timestamp.timestamp() < cutoff)
    if old:
        body.update(older_than_retention=old, retention_days=days)
    return body


def split_id(job_id: str) -> tuple[str, str | None]:
    try:
        return split_job_id(job_id)
    except ValueError as exc:
        raise ValidationError([Problem(f"invalid job id: {exc}", field="job_id")]) from None


def ping_result(job_id: str, action: str) -> ResultIn:
    """The result a ping stands for: the action, ``?run_id=`` (or Healthchecks' ``?rid=``),
    ``?duration=``, and the body as output whatever its Content-Type."""
    name, host = split_id(job_id)
    exit_code: int | None = None
    if action == "start":
        status = ResultStatus.START
    elif action == "success":
        status, exit_code = ResultStatus.SUCCESS, 0
    elif action in ("fail", "failure"):
        status = ResultStatus.FAILURE
    elif action.isdigit() and len(action) <= 3 and int(action) <= 255:
        exit_code = int(action)
        status = ResultStatus.SUCCESS if exit_code == 0 else ResultStatus.FAILURE
    else:
        raise InvalidRequest(
            f"unknown ping action {action!r}: use start, success, fail or an exit code 0-255",
            field="action",
        )
    fields: dict[str, Any] = {"job_name": name, "host": host, "status": status}
    if exit_code is not None:
        fields["exit_code"] = exit_code
    run_id = request.args.get("run_id") or request.args.get("rid")
    if run_id is not None:
        fields["run_id"] = run_id
    duration = request.args.get("duration")
    if duration is not None:
        try:
            fields["duration"] = float(duration)
        except ValueError:
            raise ValidationError(
                [Problem("duration must be a number of seconds", field="duration")]
            ) from None
    output = raw_body()
    if output:
        fields["output"] = output.decode("utf-8", "replace")
    return validated_result(fields)


def validated_result(fields: dict[str, Any]) -> ResultIn:
    """``fields`` as a result, or the 400 naming what breaks its rules (a ping's id too)."""
    try:
        return ResultIn.model_validate(fields)
    except pydantic.ValidationError as exc:
        from cronmetrics.jobs.model import problems_from_pydantic

        raise ValidationError(problems_from_pydantic(exc)) from None


def submit_one(result: ResultIn) -> list[str]:
    """Record one result for the request's (already authenticated) identity."""
    return _submit([result], batch=False)


@bp.post("/api/ping/<path:job_id>/<action>")
def ping(job_id: str, action: str) -> Response:
    """``curl -X POST --data-binary @log .../api/ping/backup@db1/success``.

    ``path:`` takes ids with a slash too (``/api/ping/team/backup/success``), so that a
    folder name mistaken for part of the id gets the id rule, not "no such endpoint".
    """
    g.submission = True
    require("submit")  # authenticate before looking at the id or the body
    targets = submit_one(ping_result(job_id, action))
    return json_response({"accepted": 1, "jobs": targets})
