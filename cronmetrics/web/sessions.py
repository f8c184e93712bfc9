"""Dashboard logins and CSRF tokens, kept in Flask's signed session cookie.

A browser logs in once with a token (``POST /login``); from then on the cookie says who it
is. The cookie is signed (itsdangerous HMAC) with ``dashboard.session_secret`` and holds
the token's *name*, a keyed digest of the token's configured hash, when the login happened,
a random session id and the CSRF token: never the token. Removing or rotating a token in
the config ends its sessions at the next request, because the digest no longer matches;
changing the secret ends all of them.

A cookie is its own proof, so clearing it in the browser alone would leave a copy of it
(a shared machine, a proxy log, a HAR file sent with a bug report) valid until it
expires. Logging out therefore also writes the session id, as a keyed digest, to the
store's runtime records (kind :data:`LOGOUT_KIND`, kept until the session would have
expired): every replica refuses that cookie from then on. Logging in and out costs a
token holder nothing, so a token keeps at most :data:`MAX_LOGOUTS_PER_TOKEN` of those
records: one more folds them into a single mark, "this token's logins from before T are
over" (its other browsers log in again), so the records stay bounded however often a
script logs in and out. A store that cannot be read does not lock operators out of the
dashboard during an outage: the check is skipped, and logged.

The cookie is ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` whenever the request came
over TLS (or the server serves TLS itself).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, request, session
from flask.sessions import SecureCookieSessionInterface

from cronmetrics.config import Config
from cronmetrics.errors import Forbidden, StorageError
from cronmetrics.logs import get_logger
from cronmetrics.storage.interface import RuntimeRecord, Store
from cronmetrics.web.auth import Identity, TokenAuth

__all__ = [
    "LOGOUT_KIND",
    "SESSION_COOKIE",
    "check_csrf",
    "csrf_token",
    "install",
    "log_in",
    "log_out",
    "user",
]

log = get_logger("dashboard")
SESSION_COOKIE = "cronmetrics_session"
#: a login may claim to be this much from the future (clock skew between replicas)
_SKEW = 300.0
#: runtime records of ended sessions: key = keyed digest of the session id (or, for the
#: mark that ends a token's older logins at once, of the token's name)
LOGOUT_KIND = "dashboard_logout"
#: ended sessions remembered one by one per token; past it they fold into one mark
MAX_LOGOUTS_PER_TOKEN = 100


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, ``Secure`` per request: TLS here or at the ingress."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure or app.config["SESSION_COOKIE_SECURE"])


def install(app: Flask, config: Config) -> None:
    """Key and shape the session cookie; a generated secret is logged (not its value)."""
    secret = config.dashboard.session_secret
    if secret is None:
        secret = secrets.token_urlsafe(32)
        if not config.no_auth:
            log.warning(
                "dashboard.session_secret is not set: this process signs dashboard logins "
                "with a random key, so logins end at a restart and do not span workers "
                "or replicas"
            )
    app.secret_key = secret
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=config.tls is not None,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=config.dashboard.session_hours),
    )
    app.session_interface = _SessionInterface()


def _keyed(purpose: bytes, data: bytes) -> str:
    key = str(current_app.secret_key).encode()
    return hmac.new(key, purpose + b"\0" + data, hashlib.sha256).hexdigest()[:32]


def _fingerprint(stored: bytes) -> str:
    return _keyed(b"cronmetrics-login", stored)


def _logout_key(sid: str) -> str:
    return _keyed(b"cronmetrics-logout", sid.encode())


def _token_key(name: str) -> str:
    return _keyed(b"cronmetrics-logout-token", name.encode())


def log_in(auth: TokenAuth, who: Identity, now: float) -> None:
    """Start a fresh session for ``who`` (a new CSRF token too: no session fixation)."""
    found = auth.named(who.name)
    assert found is not None  # who was just identified by this auth
    session.clear()
    session.permanent = True
    session.update(
        tok=who.name,
        fp=_fingerprint(found[0]),
        iat=now,
        sid=secrets.token_urlsafe(16),
        csrf=_new_csrf(),
    )


def log_out(records: Store, now: float, lifetime: float) -> None:
    """Clear the cookie and refuse every copy of it until it would have expired."""
    sid, issued, name = session.get("sid"), session.get("iat"), session.get("tok")
    session.clear()
    if not (isinstance(sid, str) and isinstance(name, str) and isinstance(issued, int | float)):
        return
    token = _token_key(name)
    try:
        mine = []
        for old in records.list_records(LOGOUT_KIND):  # the expired ones are no use
            until = old.value.get("until")
            if not isinstance(until, int | float) or until <= now:
                records.delete_record(LOGOUT_KIND, old.key)
            elif old.value.get("tok") == token and old.key != token:
                mine.append(old)
        ended = {"until": issued + lifetime, "tok": token, "iat": issued}
        records.put_record(LOGOUT_KIND, _logout_key(sid), ended, now)
        if len(mine) >= MAX_LOGOUTS_PER_TOKEN:
            _fold(records, token, mine, lifetime, now)
    except StorageError as exc:
        log.warning(
            "dashboard logout: the cookie is cleared here, but copies of it stay valid "
            "until it expires: the store did not take the logout",
            extra={"error": exc.message},
        )


def _fold(
    records: Store, token: str, ended: list[RuntimeRecord], lifetime: float, now: float
) -> None:
    """Replace a token's ended sessions by one mark that ends all its logins up to the
    latest of them (written first: a failure in between refuses more, never less)."""
    issued = [r.value.get("iat") for r in ended]
    before = max(i for i in issued if isinstance(i, int | float))
    mark = records.get_record(LOGOUT_KIND, token)
    if mark is not None and isinstance(mark.value.get("before"), int | float):
        before = max(before, mark.value["before"])
    records.put_record(
        LOGOUT_KIND, token, {"until": before + lifetime, "tok": token, "before": before}, now
    )
    for record in ended:
        records.delete_record(LOGOUT_KIND, record.key)
    log.warning(
        "dashboard logout: this token ended more sessions than are remembered one by one; "
        "its logins up to the newest of them end too",
        extra={"limit": MAX_LOGOUTS_PER_TOKEN},
    )


def _logged_out(records: Store, sid: str, name: str, issued: float) -> bool:
    if records.get_record(LOGOUT_KIND, _logout_key(sid)) is not None:
        return True
    mark = records.get_record(LOGOUT_KIND, _token_key(name))
    before = None if mark is None else mark.value.get("before")
    return isinstance(before, int | float) and issued <= before


def user(auth: TokenAuth, now: float, lifetime: float, records: Store) -> Identity | None:
    """Who the session cookie says is logged in, or None (none, expired, token gone,
    logged out)."""
    name, fingerprint, issued = session.get("tok"), session.get("fp"), session.get("iat")
    sid = session.get("sid")
    if not (isinstance(name, str) and isinstance(fingerprint, str) and isinstance(sid, str)):
        return None
    if not isinstance(issued, int | float) or not (now - lifetime < issued <= now + _SKEW):
        return None
    found = auth.named(name)
    if found is None or not hmac.compare_digest(fingerprint, _fingerprint(found[0])):
        return None
    try:
        if _logged_out(records, sid, name, issued):
            return None
    except StorageError as exc:
        log.warning(
            "dashboard session: the store cannot say whether it was logged out; let in",
            extra={"error": exc.message},
        )
    return found[1]


def _new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_token() -> str:
    """This session's CSRF token (made on first use); every dashboard form carries it."""
    token: Any = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = _new_csrf()
    return str(token)


def check_csrf() -> None:
    """Refuse a form POST without this session's token, or sent from another origin."""
    sent = request.form.get("csrf", "")
    expected = session.get("csrf")
    origin = request.headers.get("Origin")
    # the host only: behind a TLS-terminating ingress the scheme seen here is http
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise Forbidden(f"form sent from another origin ({origin}); use the dashboard itself")
    if not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
        raise Forbidden(
            "this form is out of date or did not come from the dashboard: reload the page "
            "and try again"
        )
