"""``/api/maintenance``: runtime maintenance windows (list, create, read, end early).

Scopes (which do not imply each other): reading takes ``read`` or ``maintenance``;
creating and ending take ``maintenance`` (the on-call scope: silence jobs and see the
windows, nothing else) or ``admin``. A token
limited to some jobs cannot create or end windows: a window selects jobs by matchers, so
it could silence jobs outside its globs.
"""

from __future__ import annotations

import pydantic
from flask import Blueprint, Response, request

from cronmetrics.errors import Forbidden, InvalidRequest
from cronmetrics.maintenance import STATES, Maintenance, WindowIn, window_json
from cronmetrics.web.api import current, identity, json_body, json_response
from cronmetrics.web.auth import Identity
from cronmetrics.windows import Window

bp = Blueprint("maintenance", __name__)

_READ = frozenset({"read", "maintenance"})
_WRITE = frozenset({"maintenance", "admin"})
_ADAPTER = pydantic.TypeAdapter(WindowIn)


def _require(write: bool) -> Identity:
    who = identity()
    allowed = _WRITE if write else _READ
    if not who.scopes & allowed:
        need = "'maintenance' or 'admin'" if write else "'read' or 'maintenance'"
        raise Forbidden(f"token {who.name!r} lacks the {need} scope")
    if write and who.jobs is not None:
        raise Forbidden(
            f"token {who.name!r} is limited to some jobs; maintenance windows select jobs by "
            "matchers, so they need a token without job globs"
        )
    return who


def _service() -> Maintenance:
    svc = current()
    assert svc.maintenance is not None
    return svc.maintenance


def _answer(window: Window, who: Identity, status: int = 200) -> Response:
    svc = current()
    jobs = [j for j in _service().jobs(window) if who.allows_job(j)]
    response = json_response(window_json(window, svc.clock(), jobs), status)
    if status == 201:
        response.headers["Location"] = f"/api/maintenance/{window.id}"
    return response


@bp.get("/api/maintenance")
def list_windows() -> Response:
    who = _require(write=False)
    raw = request.args.get("state", "active,pending")
    states = list(STATES) if raw == "all" else [s for s in raw.split(",") if s]
    unknown = [s for s in states if s not in STATES]
    if unknown or not states:
        raise InvalidRequest(
            f"state must be a comma list of {', '.join(STATES)}, or all", field="state"
        )
    service = _service()
    service.sync()
    now = current().clock()
    windows = [
        window_json(w, now, [j for j in service.jobs(w) if who.allows_job(j)])
        for w in service.windows(states)
    ]
    return json_response({"windows": windows, "count": len(windows)})


@bp.post("/api/maintenance")
def create_window() -> Response:
    who = _require(write=True)
    body = json_body(_ADAPTER)
    return _answer(_service().create(body, who.name), who, 201)


@bp.get("/api/maintenance/<wid>")
def get_window(wid: str) -> Response:
    who = _require(write=False)
    return _answer(_service().get(wid), who)


@bp.delete("/api/maintenance/<wid>")
def end_window(wid: str) -> Response:
    who = _require(write=True)
    return _answer(_service().end(wid, who.name), who)
