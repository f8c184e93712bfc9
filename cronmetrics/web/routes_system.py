"""Health, ``/metrics`` and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, request

from cronmetrics.errors import NotFound
from cronmetrics.web.api import OPENAPI, current, json_response, require
from cronmetrics.web.exposition import CONTENT_TYPE
from cronmetrics.web.health import readiness

bp = Blueprint("system", __name__)


@bp.get("/health")
def health() -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@bp.get("/health/deep")
def health_deep() -> Response:
    """Readiness ("can serve"): 503 naming every failed critical check."""
    body, status = readiness(current().health())
    return json_response(body, status)


@bp.get("/metrics")
def metrics() -> Response:
    svc = current()
    if svc.auth.protects_metrics:
        require("metrics")
    gzip = "gzip" in request.headers.get("Accept-Encoding", "")
    chunks = svc.exposition.render(svc.clock(), gzip=gzip)
    response = Response(chunks, mimetype=None, content_type=CONTENT_TYPE)
    response.headers["Content-Length"] = str(sum(len(c) for c in chunks))
    if gzip:
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api/openapi.yaml")
def openapi() -> Response:
    try:
        text = OPENAPI.read_bytes()
    except OSError:
        raise NotFound("the OpenAPI document is not installed with this copy") from None
    return Response(text, mimetype="application/yaml")
