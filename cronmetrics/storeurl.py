"""The ``store`` URL: which Redis (plain, TLS or behind Sentinel) holds the job states.

A URL is checked when the config is validated, so a typo in it is a config error naming
where it was set, not a connection failure at the first write. Only the parts and ``?``
options we hand redis-py are accepted (an unknown option is an error, not dropped), TLS
options only on a TLS URL. A plain URL then goes to redis-py as it is; redis-py has no
Sentinel URLs, so the store takes one apart with :func:`parse_sentinel_url`, by the same
rules that checked it. Where a URL is shown (logs, ``cronmetrics config show``),
:func:`mask_url_password` hides its password. Nothing here opens a connection or imports
redis-py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = [
    "SENTINEL_URL_OPTIONS",
    "STORE_URL_OPTIONS",
    "SentinelURL",
    "check_store_url",
    "is_sentinel_url",
    "mask_url_password",
    "parse_sentinel_url",
]

#: what a ``store`` URL may say after ``?`` (redis-py connection options we support)
STORE_URL_OPTIONS = frozenset(
    {
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "socket_timeout",
        "socket_connect_timeout",
    }
)
_STORE_RE = re.compile(
    r"^(?P<scheme>rediss?)://(?:(?P<user>[^:@/]*)(?::(?P<password>[^@/]*))?@)?"
    r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>\d{1,5}))?"
    r"(?:/(?P<db>\d{1,2})?)?(?:\?(?P<query>.*))?$"
)


_HOST = r"(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)(?::\d{1,5})?"
_SENTINEL_RE = re.compile(
    r"^(?P<scheme>rediss?)\+sentinel://(?:(?P<user>[^:@/]*)(?::(?P<password>[^@/]*))?@)?"
    rf"(?P<hosts>{_HOST}(?:,{_HOST})*)/(?P<service>[A-Za-z0-9_.-]+)"
    r"(?:/(?P<db>\d{1,2})?)?(?:\?(?P<query>.*))?$"
)
#: what a ``redis+sentinel://`` URL may say after ``?`` (``rediss+sentinel://``: also
#: the ``ssl_*`` options, for the sentinels and the primary alike)
SENTINEL_URL_OPTIONS = STORE_URL_OPTIONS
_SECONDS_OPTIONS = frozenset({"socket_timeout", "socket_connect_timeout"})


@dataclass(frozen=True)
class SentinelURL:
    """The parts of ``redis+sentinel://[:password@]host:port[,host:port...]/service/db``
    (``rediss+sentinel://``: TLS to the sentinels and to the primary)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    password: str | None
    username: str | None
    #: socket timeouts, in seconds
    options: dict[str, float]
    tls: bool = False
    #: redis-py's ``ssl_*`` connection options (``ssl_check_hostname`` a bool)
    ssl: dict[str, str | bool] = field(default_factory=dict)


def is_sentinel_url(value: str) -> bool:
    """Whether ``value`` names Redis through Sentinel (``redis+sentinel://``, TLS or not)."""
    return value.startswith(("redis+sentinel:", "rediss+sentinel:"))


def parse_sentinel_url(value: str) -> SentinelURL | None:
    """The parts of a Sentinel URL (port 26379 when left out), None for any other URL."""
    match = _SENTINEL_RE.fullmatch(value)
    if match is None:
        return None
    sentinels = []
    for item in match.group("hosts").split(","):
        host, colon, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not colon or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = item, "26379"
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port {port} is out of range")
        sentinels.append((host.strip("[]"), int(port)))
    tls = match.group("scheme") == "rediss"
    options: dict[str, float] = {}
    ssl: dict[str, str | bool] = {}
    for pair in filter(None, (match.group("query") or "").split("&")):
        name, _, raw = pair.partition("=")
        if name not in SENTINEL_URL_OPTIONS:
            known = ", ".join(sorted(SENTINEL_URL_OPTIONS))
            raise ValueError(f"unknown store URL option {name!r} (known: {known})")
        if name not in _SECONDS_OPTIONS:
            if not tls:
                raise ValueError(f"{name} needs a rediss+sentinel:// (TLS) URL")
            ssl[name] = _tls_option(name, unquote(raw))
            continue
        try:
            options[name] = float(raw)
        except ValueError:
            raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
    db = int(match.group("db") or 0)
    if db > 15:
        raise ValueError("the Redis database number must be 0-15")
    return SentinelURL(
        tuple(sentinels),
        match.group("service"),
        db,
        unquote(match.group("password")) if match.group("password") is not None else None,
        unquote(match.group("user")) if match.group("user") else None,
        options,
        tls,
        ssl,
    )


def _tls_option(name: str, raw: str) -> str | bool:
    if name == "ssl_check_hostname":
        if raw.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError(f"ssl_check_hostname must be true or false, not {raw!r}")
        return raw.lower() in ("true", "yes", "1")
    if name == "ssl_cert_reqs" and raw not in ("none", "optional", "required"):
        raise ValueError(f"ssl_cert_reqs must be none, optional or required, not {raw!r}")
    return raw


def check_store_url(value: str) -> str:
    """``embedded``, or a ``redis://`` / ``rediss://`` / ``redis+sentinel://`` /
    ``rediss+sentinel://`` URL whose parts we understand."""
    if value == "embedded":
        return value
    if is_sentinel_url(value):
        if parse_sentinel_url(value) is None:
            raise ValueError(
                "must be redis+sentinel://[:password@]host:port[,host:port...]/service/db "
                "(rediss+sentinel:// for TLS)"
            )
        return value
    match = _STORE_RE.fullmatch(value)
    if match is None:
        raise ValueError(
            "must be 'embedded' or redis://[:password@]host:port/db (rediss:// for TLS; "
            "redis+sentinel://[:password@]host:port[,host:port...]/service/db for Sentinel, "
            "rediss+sentinel:// with TLS)"
        )
    if match.group("port") and not 1 <= int(match.group("port")) <= 65535:
        raise ValueError(f"port {match.group('port')} is out of range")
    if match.group("db") and int(match.group("db")) > 15:
        raise ValueError("the Redis database number must be 0-15")
    for pair in filter(None, (match.group("query") or "").split("&")):
        name, _, raw = pair.partition("=")
        if name not in STORE_URL_OPTIONS:
            raise ValueError(
                f"unknown store URL option {name!r} (known: {', '.join(sorted(STORE_URL_OPTIONS))})"
            )
        if name.startswith("ssl_"):
            if match.group("scheme") != "rediss":
                raise ValueError(f"{name} needs a rediss:// (TLS) URL")
            _tls_option(name, unquote(raw))
    return value


def mask_url_password(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``, for logs and config show."""
    return re.sub(r"^((?:rediss?|rediss?\+sentinel)://[^:@/]*:)[^@/]*@", r"\1***@", url)
