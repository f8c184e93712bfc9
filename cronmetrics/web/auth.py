"""Bearer tokens: SHA-256 hashes in the config, scopes, job-id globs.

Tokens are never stored, only their hashes, and a presented token is hashed and compared
with every configured hash in constant time, so timing tells nothing about which one
nearly matched.

Failed authentications are rate limited per client address (:mod:`cronmetrics.web.ratelimit`);
a request with a good token is never counted. The token value itself is never logged or
kept: only its name travels on (:class:`Identity`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cronmetrics.config import Config, TokenConfig
from cronmetrics.errors import Forbidden, RateLimited, Unauthorized
from cronmetrics.web.ratelimit import FailureLimiter

__all__ = [
    "ANONYMOUS",
    "Identity",
    "TokenAuth",
    "config_line",
    "hash_token",
    "new_token",
]

TOKEN_PREFIX = "cm_"  # noqa: S105 - a prefix, not a secret


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token: 160 bits from the OS CSPRNG, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(20)


def config_line(
    name: str,
    token: str,
    scopes: Sequence[str],
    jobs: Sequence[str] = (),
    *,
    ping_key: bool = False,
) -> str:
    """The ``auth.tokens`` entry for ``token``, as one YAML flow-mapping list item.

    JSON strings are valid YAML flow scalars, so every value is quoted by ``json.dumps``:
    a glob like ``backup*`` or a name like ``@ops`` cannot be misread as YAML syntax.
    """
    parts = [
        f"name: {json.dumps(name)}",
        f"sha256: {json.dumps(hash_token(token))}",
        f"scopes: [{', '.join(json.dumps(s) for s in scopes)}]",
    ]
    if jobs:
        parts.append(f"jobs: [{', '.join(json.dumps(j) for j in jobs)}]")
    if ping_key:
        parts.append("ping_key: true")
    return "- {" + ", ".join(parts) + "}"


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    scopes: frozenset[str]
    jobs: tuple[str, ...] | None = None  # None = every job
    #: the token may be the key of ``/ping/<key>/...`` URLs (``ping_key: true``)
    ping_key: bool = False

    def allows_job(self, job_id: str) -> bool:
        if self.jobs is None:
            return True
        return any(fnmatch.fnmatchcase(job_id, pattern) for pattern in self.jobs)


ANONYMOUS = Identity("anonymous", frozenset({"admin", "submit", "read", "metrics"}))


class TokenAuth:
    def __init__(
        self,
        tokens: Sequence[TokenConfig],
        *,
        disabled: bool = False,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.disabled = disabled
        self.limiter = limiter if limiter is not None else FailureLimiter()
        self._tokens = [
            (
                bytes.fromhex(t.sha256),
                Identity(
                    t.name, frozenset(t.scopes), tuple(t.jobs) if t.jobs else None, t.ping_key
                ),
            )
            for t in tokens
        ]
        self.protects_metrics = any("metrics" in t.scopes for t in tokens)

    @classmethod
    def from_config(cls, config: Config) -> TokenAuth:
        limit = config.auth.failure_limit
        limiter = FailureLimiter(burst=limit.burst, rate=limit.per_minute / 60.0)
        return cls(config.auth.tokens, disabled=config.no_auth, limiter=limiter)

    def identify(
        self, header: str | None, *, client: str | None = None, now: float = 0.0
    ) -> Identity:
        """Who sent ``Authorization: header``; raise :class:`Unauthorized` if nobody.

        With ``client`` (the peer address) failures are counted, and an address that
        failed too often gets :class:`RateLimited` before its token is even checked, so
        a correct guess cannot be told apart from a wrong one while it is limited.
        """
        if self.disabled:
            return ANONYMOUS
        if client is not None:
            wait = self.limiter.retry_after(client, now)
            if wait > 0:
                raise RateLimited(
                    "too many failed authentication attempts from this address; retry later",
                    retry_after=wait,
                )
        try:
            return self._lookup(header)
        except Unauthorized:
            if client is not None:
                self.limiter.failed(client, now)
            raise

    def _lookup(self, header: str | None) -> Identity:
        if not header:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found: Identity | None = None
        for stored, identity in self._tokens:
            if hmac.compare_digest(stored, digest) and found is None:
                found = identity
        if found is None:
            raise Unauthorized("unknown token")
        return found

    def named(self, name: str) -> tuple[bytes, Identity] | None:
        """The configured token called ``name``: its SHA-256 and its identity. A dashboard
        session keeps the name and a keyed digest of that hash, never the token."""
        for stored, identity in self._tokens:
            if identity.name == name:
                return stored, identity
        return None

    @staticmethod
    def require(identity: Identity, scope: str, job_id: str | None = None) -> None:
        if scope not in identity.scopes:
            raise Forbidden(f"token {identity.name!r} lacks the {scope!r} scope")
        if job_id is not None and not identity.allows_job(job_id):
            raise Forbidden(f"token {identity.name!r} may not access job {job_id!r}")
