"""Healthchecks-style pings: ``/ping/<key>/<job_id>[/start|/fail|/log|/<0-255>]``, GET or POST.

Anything written for Healthchecks (its client libraries, runitor, backup tools' "ping this
URL" hooks, busybox ``wget``) reports here by changing its base URL. ``<key>`` is a token
whose config entry says ``ping_key: true`` (submit scope only, its job globs apply): it
travels in the URL, so log lines show ``/ping/[key]/`` instead (:mod:`cronmetrics.logs`).
The body is the run's output whatever its Content-Type; ``?rid=`` pairs a start with its
finish. ``/log`` appends its body to the output of the job's running run (the run
``?rid=`` names, if given): the run's finish shows it, in front of its own body; with no
such run running it is refused (409) and nothing is kept. A ping is answered ``OK``
(text/plain), errors with the usual JSON body, and every answer advertises the stored
output limit in ``Ping-Body-Limit``.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from cronmetrics import logs as cmlog
from cronmetrics.errors import Forbidden, NotFound, Problem, ValidationError
from cronmetrics.web.api import current, raw_body
from cronmetrics.web.auth import Identity
from cronmetrics.web.routes_results import (
    ping_result,
    split_id,
    submit_one,
    suggest,
    validated_result,
)

__all__ = ["bp"]

bp = Blueprint("ping", __name__)
METHODS = ["GET", "POST"]


def _key_identity(key: str) -> Identity:
    """The token behind ``key``; wrong keys count against the address like bad tokens."""
    svc = current()
    who = svc.auth.identify(
        f"Bearer {key}", client=request.remote_addr or "unknown", now=svc.clock()
    )
    if not svc.auth.disabled and not who.ping_key:
        raise Forbidden(
            f"token {who.name!r} is not a ping key: use a submit-only token with"
            " ping_key: true (cronmetrics token new --scope submit --ping-key)"
        )
    g.identity = who
    cmlog.bind(token=who.name)
    return who


def _ping(key: str, job_id: str, action: str) -> Response:
    g.submission = True
    _key_identity(key)  # before the id or the body is looked at
    submit_one(ping_result(job_id, action))
    return Response("OK", mimetype="text/plain")


@bp.route("/ping/<key>/<job_id>", methods=METHODS)
def ping_success(key: str, job_id: str) -> Response:
    """``curl -fsS -m 10 --retry 5 https://cm.example/ping/KEY/backup@db1``."""
    return _ping(key, job_id, "success")


@bp.route("/ping/<key>/<job_id>/<action>", methods=METHODS)
def ping_action(key: str, job_id: str, action: str) -> Response:
    """``start``, ``fail``, or the command's exit code (0 is success)."""
    if action == "log":
        return _log(key, job_id)
    return _ping(key, job_id, action)


def _log(key: str, job_id: str) -> Response:
    """Append the body to the running run's output (the append-only execution log)."""
    g.submission = True
    svc, who = current(), _key_identity(key)
    name, host = split_id(job_id)
    validated_result({"job_name": name, "host": host, "status": "start"})  # its id rules
    run_id = request.args.get("run_id") or request.args.get("rid")
    if run_id is not None and not 1 <= len(run_id) <= 128:
        raise ValidationError([Problem("rid must be 1 to 128 characters", field="rid")])
    text = raw_body().decode("utf-8", "replace")
    try:
        svc.monitor.append_output(
            name,
            host,
            text,
            run_id=run_id,
            now=svc.clock(),
            authorize=lambda j: svc.auth.require(who, "submit", j),
        )
    except NotFound as exc:
        raise NotFound(exc.message + suggest(name, host, who), field=exc.field) from None
    return Response("OK", mimetype="text/plain")


@bp.after_request
def _body_limit(response: Response) -> Response:
    response.headers["Ping-Body-Limit"] = str(current().config.limits.max_output_bytes)
    return response
