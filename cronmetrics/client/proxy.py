"""Which proxy, if any, the cron host's requests go through: the environment's say.

Cron hosts behind a proxy set ``HTTP(S)_PROXY`` and ``NO_PROXY`` for every tool, so the
client reads them as curl and httpx do, and a loopback server is never proxied. The
exchange through the proxy itself is the HTTP client's (:mod:`cronmetrics.client.http`).

Standard library only, and Python 3.9-compatible: the one-file client ships it.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["proxy_for"]


def _no_proxy(host: str, environ: Mapping[str, str]) -> bool:
    raw = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    for entry in (e.strip().lower() for e in raw.split(",")):
        if entry == "*":
            return True
        entry = entry.lstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def proxy_for(
    scheme: str, host: str, environ: Mapping[str, str]
) -> tuple[str, int, str | None] | None:
    """``(host, port, Proxy-Authorization or None)`` of the HTTP(S)_PROXY to go through,
    as curl and httpx do."""
    if host in ("127.0.0.1", "::1", "localhost") or _no_proxy(host.lower(), environ):
        return None
    value = environ.get(f"{scheme}_proxy") or environ.get(f"{scheme.upper()}_PROXY")
    if not value:
        return None
    parts = urlsplit(value if "://" in value else f"http://{value}")
    if not parts.hostname:
        return None
    auth = None
    if parts.username is not None:
        import base64
        from urllib.parse import unquote

        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return parts.hostname, parts.port or 8080, auth
