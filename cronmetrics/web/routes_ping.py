"""Healthchecks-style pings: ``/ping/<key>/<job_id>[/start|/fail|/<0-255>]``, GET or POST.

Anything written for Healthchecks (its client libraries, runitor, backup tools' "ping this
URL" hooks, busybox ``wget``) reports here by changing its base URL. ``<key>`` is a token
whose config entry says ``ping_key: true`` (submit scope only, its job globs apply): it
travels in the URL, so log lines show ``/ping/[key]/`` instead (:mod:`cronmetrics.logs`).
The body is the run's output whatever its Content-Type; ``?rid=`` pairs a start with its
finish. A ping is answered ``OK`` (text/plain), errors with the usual JSON body, and every
answer advertises the stored output limit in ``Ping-Body-Limit``.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from cronmetrics import logs as cmlog
from cronmetrics.errors import Forbidden, InvalidRequest
from cronmetrics.web.api import current
from cronmetrics.web.auth import Identity
from cronmetrics.web.routes_results import ping_result, submit_one

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
        _key_identity(key)
        raise InvalidRequest(
            "log pings are not supported yet: send the output with the finishing ping"
            " (its body), or use start, fail, success or an exit code 0-255",
            field="action",
        )
    return _ping(key, job_id, action)


@bp.after_request
def _body_limit(response: Response) -> Response:
    response.headers["Ping-Body-Limit"] = str(current().config.limits.max_output_bytes)
    return response
