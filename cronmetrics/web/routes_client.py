"""``GET /client.pyz``: the one-file client for cron hosts, without auth (it holds no
secret), so a fleet installs it with one ``curl``. Built once per process and served from
memory with an ``ETag`` (its SHA-256): a conditional GET costs nothing."""

from __future__ import annotations

from flask import Blueprint, Response, request

from cronmetrics.client.bundle import bundle_bytes, bundle_digest

__all__ = ["bp"]

bp = Blueprint("client", __name__)


@bp.get("/client.pyz")
def client_pyz() -> Response:
    etag = bundle_digest()
    response = Response(bundle_bytes(), mimetype="application/zip")
    response.set_etag(etag)
    response.headers["Content-Disposition"] = 'attachment; filename="cronmetrics.pyz"'
    response.headers["Cache-Control"] = "public, max-age=300"
    response.make_conditional(request)
    return response
