"""Configuration: YAML file < ``CRONMETRICS_*`` environment < command-line flags.

pydantic-settings does the merging and the environment parsing; the file is read through
:mod:`cronmetrics.jobs.yamlio` so a config file gets the same YAML 1.2 reading and the same
``file:line: message`` errors as a job file. The two settings sources (a strict file, a
lenient environment) live in :mod:`cronmetrics.configsources`, the rules for a ``store``
URL in :mod:`cronmetrics.storeurl`.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cronmetrics.configsources import EnvSource, FileSource, file_settings
from cronmetrics.errors import ConfigError, Problem
from cronmetrics.storeurl import check_store_url, mask_url_password

__all__ = ["Config", "Scope", "TokenConfig", "default_state_dir", "load_config"]

Scope = Literal["admin", "submit", "read", "metrics", "maintenance"]
#: Secrets that must not leave the process; ``cronmetrics config show`` masks them.
SECRET_FIELDS = frozenset({"sha256", "session_secret"})

#: Secrets in job output, replaced by ``[REDACTED]`` before a result is stored or logged
#: (only the ``secret`` group where there is one; docs/security.md explains each). Every
#: pattern begins with one literal character or a small set, so the regex engine skips
#: ahead instead of trying each position; ``(?<!\w.)`` right after that character is a
#: word boundary in front of it. Quantifiers are bounded and possessive, so a hostile
#: 1 MiB output costs linear time (benchmarks/bench_security.py).
DEFAULT_REDACT = [
    # password=..., DB_PASSWORD: ..., "client_secret": "...", GITHUB_TOKEN=..., api-key=...
    r"(?i)[acpst](?:(?<=p)assw(?:or)?d|(?<=t)oken|(?<=s)ecret|(?<=a)pi[_-]?key"
    r"|(?<=a)ccess[_-]?key|(?<=c)redentials?)[a-z0-9_.-]{0,20}+[\"']?"
    r"[ \t]{0,4}+[=:][ \t]{0,4}+(?P<secret>\"[^\"\n]*\"|'[^'\n]*'|\S+)",
    # Authorization: Bearer xyz / Basic ... / Proxy-Authorization: ...
    r"(?i)a(?<!\w.)uthorization[ \t]{0,8}+:[ \t]{0,8}+"
    r"(?:(?:bearer|basic|token|digest|negotiate)[ \t]++)?(?P<secret>[^\s\"']+)",
    r"(?i)b(?<!\w.)earer[ \t]++(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
    # AWS access key ids
    r"A(?<!\w.)(?:KIA|SIA)[0-9A-Z]{16}\b",
    # credentials in URLs: scheme://user:password@host
    r"/(?<=://)[^/\s:@]{1,256}+:(?P<secret>[^/\s@]{1,256}+)(?=@)",
    # cronmetrics tokens (``cronmetrics token new``: cm_ + 27 URL-safe characters), anywhere
    # (glued to what precedes it too: an ANSI colour code ends in "m", "xcm_..." is a paste)
    r"cm_[A-Za-z0-9_-]{16,}+",
    # Healthchecks-style ping URLs: /ping/<key>/<job> (the key is a token; /api/ping/ is not)
    r"p(?<=/p)(?<!/api/p)ing/(?P<secret>[^/\s?#\"'<>]{1,256}+)",
    # PEM private keys
    r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----(?P<secret>[\s\S]*?)"
    r"(?:-----END [A-Z ]{0,40}PRIVATE KEY-----|$)",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Section):
    cert: Path
    key: Path


class TokenConfig(_Section):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    scopes: Annotated[list[Scope], Field(min_length=1)]
    jobs: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None
    #: usable as the key in Healthchecks-style ping URLs (``/ping/<key>/<job>``); such a
    #: token appears in URLs (crontabs, proxies' logs), so it may only submit
    ping_key: StrictBool = False

    @model_validator(mode="after")
    def _ping_key_submits_only(self) -> TokenConfig:
        if self.ping_key and set(self.scopes) != {"submit"}:
            raise ValueError(
                "a token with ping_key: true may only have the submit scope"
                " (it appears in URLs); make a separate token for the other scopes"
            )
        return self


class FailureLimitConfig(_Section):
    """Failed authentications allowed per client address: a burst, then a steady rate."""

    burst: Annotated[StrictInt, Field(ge=1, le=100_000)] = 10
    per_minute: Annotated[StrictFloat, Field(gt=0, le=100_000)] = 10.0


class AuthConfig(_Section):
    tokens: list[TokenConfig] = Field(default_factory=list)
    failure_limit: FailureLimitConfig = Field(default_factory=FailureLimitConfig)

    @field_validator("tokens")
    @classmethod
    def _unique_names(cls, tokens: list[TokenConfig]) -> list[TokenConfig]:
        names = [t.name for t in tokens]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"token names must be unique: {', '.join(dupes)}")
        return tokens


class DashboardConfig(_Section):
    """The web dashboard's login sessions (docs/dashboard.md)."""

    #: signs the session cookie; set the same value on every replica. Unset: a random
    #: one per process, so sessions end at a restart and do not span replicas
    session_secret: Annotated[str, Field(min_length=32, max_length=512)] | None = None
    #: how long a login lasts, in hours
    session_hours: Annotated[StrictFloat, Field(gt=0, le=24 * 31)] = 12.0


class SnapshotConfig(_Section):
    interval: Annotated[StrictFloat, Field(ge=0.5, le=3600)] = 10.0
    journal: StrictBool = False


class RetentionConfig(_Section):
    days: Annotated[StrictInt, Field(ge=1, le=3660)] = 30
    max_results_per_job: Annotated[StrictInt, Field(ge=1, le=100_000)] = 100


class LimitsConfig(_Section):
    max_body_bytes: Annotated[StrictInt, Field(ge=1024, le=64 * 1024 * 1024)] = 1_048_576
    max_output_bytes: Annotated[StrictInt, Field(ge=0, le=1_048_576)] = 10_000
    max_batch: Annotated[StrictInt, Field(ge=1, le=100_000)] = 1000


class ConnectionsConfig(_Section):
    """What one client connection may hold; read when the server starts."""

    #: open connections per client address (the TCP peer); 0 = no limit. Behind a
    #: reverse proxy every client shares the proxy's address: raise it there
    per_client: Annotated[StrictInt, Field(ge=0, le=100_000)] = 64
    #: seconds from a connection's first byte (or its opening) to the end of the headers
    header_timeout: Annotated[StrictFloat, Field(gt=0, le=3600)] = 10.0
    #: seconds from the end of the headers to the end of the body, and to send a response
    body_timeout: Annotated[StrictFloat, Field(gt=0, le=3600)] = 30.0
    #: bytes of unfinished requests all connections of a worker may hold together; past
    #: it the request that reads more is answered 503 (a lone request always may finish)
    max_buffered_bytes: Annotated[StrictInt, Field(ge=1024 * 1024, le=16 * 1024**3)] = (
        64 * 1024 * 1024
    )


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class WatchConfig(_Section):
    """Hot reload of jobs.d: file events are hints, a periodic full rescan backs them up."""

    enabled: StrictBool = True
    #: ``null`` = auto: inotify, polling on network filesystems or when inotify fails
    poll: StrictBool | None = None
    #: seconds between polls in polling mode
    poll_interval: Annotated[StrictFloat, Field(ge=0.1, le=60)] = 1.0
    #: quiet time (seconds) after the last event before reloading; a burst of events
    #: (a git checkout) becomes one reload
    debounce: Annotated[StrictFloat, Field(ge=0.01, le=10)] = 0.2
    #: seconds between rescans of the whole tree whatever the events said (by stat;
    #: every tenth one re-reads every file)
    rescan_interval: Annotated[StrictFloat, Field(ge=1, le=86400)] = 60.0
    #: seconds one reload may take; a longer one is logged and counted, and fails
    #: /health/deep while it runs
    reload_budget: Annotated[StrictFloat, Field(gt=0, le=3600)] = 30.0


class MaintenanceConfig(_Section):
    """Runtime maintenance windows (``/api/maintenance``, ``cronmetrics maintenance``)."""

    #: the longest window the API accepts, in seconds (default 30 days)
    max_duration: Annotated[StrictInt, Field(ge=60, le=366 * 86400)] = 30 * 86400
    #: how long an ended window is kept (listed as expired) before it is deleted, seconds
    keep_expired: Annotated[StrictInt, Field(ge=0, le=366 * 86400)] = 5 * 86400


def default_state_dir(jobs_dir: Path | None = None) -> Path:
    """``$XDG_STATE_HOME/cronmetrics/<jobs dir name>-<hash>``: a state dir per jobs dir.

    Two servers on different jobs dirs (a trial beside the real one, the README's example
    and the guide's) then never share state: the second would otherwise drop the first
    one's jobs as "no longer defined". The hash is of the resolved path, so ``./jobs.d``
    and its absolute path are the same dir. Without ``jobs_dir``: the common parent.
    """
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    if jobs_dir is None:
        return base / "cronmetrics"
    resolved = Path(jobs_dir).resolve()
    digest = hashlib.sha256(str(resolved).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", resolved.name) or "root"
    return base / "cronmetrics" / f"{name}-{digest}"


#: ``state_dir`` not given: :func:`default_state_dir` of the jobs dir, found by a validator
_AUTO_STATE_DIR = Path("\0default")


_BIND_PATTERN = r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]*):(\d{1,5})$"
_BIND_RE = re.compile(_BIND_PATTERN)


class Config(BaseSettings):
    """The effective server configuration (docs/configuration.md)."""

    model_config = SettingsConfigDict(
        env_prefix="CRONMETRICS_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    jobs_dir: Path = Path("jobs.d")
    #: default: :func:`default_state_dir` of ``jobs_dir``
    state_dir: Path = Field(default_factory=lambda: _AUTO_STATE_DIR, validate_default=True)
    #: HOST:PORT; an exporter listens on all interfaces by default
    bind: Annotated[str, Field(json_schema_extra={"pattern": _BIND_PATTERN})] = "0.0.0.0:9479"
    tls: TlsConfig | None = None
    #: reverse proxies in front that append to X-Forwarded-For; the client address
    #: (failure rate limiting, logs) is then taken from that header, not the TCP peer
    trusted_proxy_hops: Annotated[StrictInt, Field(ge=0, le=10)] = 0
    #: read job files through symlinks that leave jobs_dir (refused by default: a link to
    #: /etc/shadow in a pull request must not be read, nor quoted in errors)
    follow_external_symlinks: StrictBool = False
    auth: AuthConfig = Field(default_factory=AuthConfig)
    no_auth: StrictBool = False
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    connections: ConnectionsConfig = Field(default_factory=ConnectionsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    redact: list[str] = Field(default_factory=lambda: list(DEFAULT_REDACT))
    unknown_jobs: Literal["reject", "accept"] = "reject"
    #: API and CLI writes to jobs.d: ``auto`` refuses them where the next sync would drop
    #: them (a git-sync worktree, a ConfigMap volume), ``disabled`` always (git only)
    job_writes: Literal["auto", "enabled", "disabled"] = "auto"
    log: LogConfig = Field(default_factory=LogConfig)
    #: where job states and histories live: ``embedded`` (memory + state_dir/state.db, one
    #: server) or ``redis://[:password@]host:port/db`` (``rediss://`` for TLS,
    #: ``redis+sentinel://host:port[,host:port...]/service/db`` behind Sentinel,
    #: ``rediss+sentinel://`` with TLS) shared by replicas
    store: str = "embedded"
    #: a file whose first line is the Redis password (a mounted secret), instead of one in
    #: the ``store`` URL
    store_password_file: Path | None = None
    #: with ``redis+sentinel://`` or ``rediss+sentinel://``: a file whose first line is the
    #: sentinels' own password (``requirepass`` in sentinel.conf), not the primary's
    store_sentinel_password_file: Path | None = None
    watch: WatchConfig = Field(default_factory=WatchConfig)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        match = _BIND_RE.fullmatch(value)
        if not match or not 1 <= int(match.group(2)) <= 65535:
            raise ValueError(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:9479 or [::1]:9479)")
        return value

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        return check_store_url(value)

    @property
    def redis(self) -> bool:
        """Whether the store is a Redis server (replicas, ``--workers N``)."""
        return self.store != "embedded"

    @field_validator("redact")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"redact[{index}] is not a valid regular expression: {exc}"
                ) from None
        return patterns

    @field_validator("state_dir", mode="before")
    @classmethod
    def _default_state_dir(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        if value is _AUTO_STATE_DIR:
            jobs_dir = info.data.get("jobs_dir")
            return default_state_dir(Path(jobs_dir) if jobs_dir is not None else Path("jobs.d"))
        return value

    @field_validator("state_dir")
    @classmethod
    def _state_outside_jobs(cls, value: Path, info: pydantic.ValidationInfo) -> Path:
        """A field check (``jobs_dir`` is validated first), so the error names where
        ``state_dir`` was set: a config line, an environment variable or a flag."""
        jobs_dir = info.data.get("jobs_dir")
        if jobs_dir is None:  # invalid itself, reported on its own
            return value
        jobs = Path(jobs_dir).resolve()
        state = value.resolve()
        if state == jobs or jobs in state.parents:
            raise ValueError(f"must not be inside jobs_dir {jobs_dir} (it would be watched)")
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.bind.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, EnvSource(settings_cls), FileSource(settings_cls)

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with secrets masked, for ``config show``."""
        masked: dict[str, Any] = _mask(self.model_dump(mode="json"))
        masked["store"] = mask_url_password(self.store)
        return masked


def _mask(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: ("***" if k in SECRET_FIELDS else _mask(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [_mask(v) for v in data]
    return data


def load_config(path: Path | None = None, **overrides: Any) -> Config:
    """Build the effective config; raise :class:`ConfigError` naming file:line or variable."""
    from cronmetrics.jobs.model import problems_from_pydantic
    from cronmetrics.jobs.yamlio import YamlSyntaxError, load_fast

    data: dict[str, Any] = {}
    text: str | None = None
    shown = str(path) if path else None
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: config file is not UTF-8 text") from None
        try:
            loaded = load_fast(text)
        except YamlSyntaxError as exc:
            raise ConfigError(str(exc.problem(shown))) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}:1:1: config file must be a mapping of settings")
        data = loaded
    flags = {k: v for k, v in overrides.items() if v is not None}
    with file_settings(data):
        try:
            return Config(**flags)
        except pydantic.ValidationError as exc:
            problems = problems_from_pydantic(exc, path=shown, text=text)
            raise ConfigError(_describe([_attribute(p, flags) for p in problems])) from None


def _attribute(problem: Problem, flags: dict[str, Any]) -> Problem:
    """Name the flag or environment variable a bad value came from, else the file line."""
    if problem.field is None:
        return problem
    parts = problem.field.split(".")
    if parts[0] in flags:
        return Problem(problem.message, path=f"--{parts[0].replace('_', '-')}", field=problem.field)
    node: Any = EnvSource(Config)()
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return problem
    variable = "CRONMETRICS_" + "__".join(parts[:2]).upper()
    return Problem(problem.message, path=variable, field=problem.field)


def _describe(problems: list[Problem]) -> str:
    lines = [str(p) for p in problems]
    return lines[0] if len(lines) == 1 else "invalid configuration:\n  " + "\n  ".join(lines)
