"""HTTP client for the CLI: one place that talks to a cronmetrics server.

Every failure becomes a :class:`~cronmetrics.errors.CronmetricsError`: the server's
``{"error": {...}}`` body is turned back into the exception class the server raised (so the
CLI prints the server's message and the matching exit code), and every network problem is
:class:`~cronmetrics.errors.ServerUnavailable`. ``httpx`` costs ~0.4 s to import, so it is
imported only when a client is built: ``cronmetrics validate`` must stay quick.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cronmetrics import __version__
from cronmetrics import errors as err
from cronmetrics.errors import CronmetricsError, Problem, ServerUnavailable

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_URL",
    "Client",
    "ClientSettings",
    "client_options",
    "error_from_response",
    "job_option",
    "split_job_id",
]

DEFAULT_URL = "http://127.0.0.1:9479"
#: Per-request ceiling; callers with a deadline get less.
REQUEST_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0


def _error_classes() -> dict[str, type[CronmetricsError]]:
    found: dict[str, type[CronmetricsError]] = {}
    todo: list[type[CronmetricsError]] = [CronmetricsError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


def _build_error(
    status: int,
    code: str,
    message: str,
    field: str | None,
    body: Any,
    retry_after: float | None = None,
) -> Exception:
    if status >= 500 or code in ("UNAVAILABLE", "STORAGE_ERROR", "INTERNAL"):
        return ServerUnavailable(f"server error ({status}): {message}", field=field)
    cls = _error_classes().get(code)
    if cls is None:
        cls = {
            401: err.Unauthorized,
            403: err.Forbidden,
            404: err.NotFound,
            409: err.Conflict,
            413: err.PayloadTooLarge,
            415: err.UnsupportedMediaType,
            429: err.RateLimited,
        }.get(status, err.InvalidRequest)
    if issubclass(cls, err.ValidationError):
        problems = [
            Problem(str(p.get("message", "")), field=p.get("field"))
            for p in body.get("problems", [])
            if isinstance(p, dict)
        ] or [Problem(message, field=field)]
        return cls(problems)
    if issubclass(cls, err.RateLimited):
        return cls(message, retry_after=retry_after if retry_after is not None else 1.0)
    if cls in (CronmetricsError, err.ConfigError):
        cls = err.InvalidRequest
    return cls(message, field=field)


def error_from_response(
    status: int, body: Any, fallback: str = "", *, retry_after: str | None = None
) -> Exception:
    """The exception a non-2xx answer stands for (the server's own code when it sent one)."""
    wait = _retry_after_seconds(retry_after)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        message = str(error.get("message") or fallback or f"HTTP {status}")
        field = error.get("field")
        field = field if isinstance(field, str) else None
        return _build_error(status, code, message, field, error, wait)
    text = fallback.strip().splitlines()[0][:200] if fallback.strip() else ""
    message = f"HTTP {status}" + (f": {text}" if text else "")
    return _build_error(status, "", message, None, {}, wait)


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds (only the delta-seconds form: the server sends that)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None


def split_job_id(job_id: str) -> tuple[str, str | None]:
    """``name@host`` -> ``(name, host)``; raises a usage error for a malformed id."""
    from cronmetrics.jobs import model

    try:
        return model.split_job_id(job_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--job'") from None


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What ``--url/--token/--insecure/--cacert`` said (flags win over the environment)."""

    url: str = DEFAULT_URL
    token: str | None = None
    insecure: bool = False
    cacert: Path | None = None
    #: True when the URL came from a flag or CRONMETRICS_URL rather than the default
    explicit_url: bool = False

    def client(self, **kwargs: Any) -> Client:
        return Client(
            self.url,
            self.token,
            verify=self.cacert if self.cacert is not None else not self.insecure,
            **kwargs,
        )


def _read_token_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="'--token-file'") from None


def client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the server connection flags; the command receives ``settings: ClientSettings``."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        url = kwargs.pop("url")
        token = kwargs.pop("token")
        token_file = kwargs.pop("token_file")
        insecure = kwargs.pop("insecure")
        cacert = kwargs.pop("cacert")
        if token is None and token_file is not None:
            token = _read_token_file(token_file)
        if url is not None and not url.startswith(("http://", "https://")):
            raise click.BadParameter("must start with http:// or https://", param_hint="'--url'")
        kwargs["settings"] = ClientSettings(
            url=(url or DEFAULT_URL).rstrip("/"),
            token=token or None,
            insecure=insecure,
            cacert=cacert,
            explicit_url=url is not None,
        )
        return func(*args, **kwargs)

    options = [
        click.option(
            "--url",
            envvar="CRONMETRICS_URL",
            default=None,
            metavar="URL",
            help=f"Server base URL [env CRONMETRICS_URL; default {DEFAULT_URL}].",
        ),
        click.option(
            "--token",
            envvar="CRONMETRICS_TOKEN",
            default=None,
            metavar="TOKEN",
            help="Bearer token [env CRONMETRICS_TOKEN].",
        ),
        click.option(
            "--token-file",
            envvar="CRONMETRICS_TOKEN_FILE",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Read the token from this file (keeps it out of `ps`).",
        ),
        click.option(
            "--insecure", is_flag=True, default=False, help="Do not verify the TLS certificate."
        ),
        click.option(
            "--cacert",
            envvar="CRONMETRICS_CACERT",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="CA bundle to verify the server's certificate with.",
        ),
    ]
    decorated: Callable[..., Any] = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def job_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--job ID``, the job a result is for (``run``, ``ingest``, ``result submit``)."""
    option = click.option("--job", "job_id", required=True, metavar="ID", help="name or name@host.")
    return option(func)


class Client:
    """A small JSON client; thread-safe enough for one reporter thread plus the main one."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        verify: bool | Path = True,
        timeout: float = REQUEST_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import httpx

        headers = {"User-Agent": f"cronmetrics/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        tls: bool | ssl.SSLContext = bool(verify)
        if url.startswith("http://"):
            tls = False  # no TLS to verify (redirects are not followed): skip the CA store
        elif isinstance(verify, Path):
            try:
                tls = ssl.create_default_context(cafile=os.fspath(verify))
            except (OSError, ssl.SSLError) as exc:
                raise err.ConfigError(f"--cacert {verify}: {exc}") from None
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            verify=tls,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            follow_redirects=False,
            trust_env=True,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- core ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One request; the decoded JSON body, or the mapped exception."""
        import httpx

        limit = self.timeout if timeout is None else max(0.05, min(timeout, self.timeout))
        try:
            response = self._http.request(
                method,
                path,
                json=json,
                params=params,  # type: ignore[arg-type]
                timeout=httpx.Timeout(limit, connect=min(limit, CONNECT_TIMEOUT)),
            )
        except httpx.TimeoutException:
            raise ServerUnavailable(f"{self.url}: no answer within {limit:g}s") from None
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"cannot reach {self.url}: {_reason(exc)}") from None
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        if response.is_success:
            return body
        raise error_from_response(
            response.status_code,
            body,
            response.text,
            retry_after=response.headers.get("Retry-After"),
        )

    def request_retrying(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        budget: float = 10.0,
        cancel: threading.Event | None = None,
        first_delay: float = 0.25,
    ) -> Any:
        """Retry on :class:`ServerUnavailable` with exponential backoff within ``budget`` s.

        Client errors (4xx) are not retried: sending the same thing again cannot help.
        """
        deadline = self._clock() + budget
        delay = first_delay
        while True:
            remaining = deadline - self._clock()
            try:
                return self.request(method, path, json=json, timeout=max(remaining, 0.05))
            except (ServerUnavailable, err.RateLimited) as exc:
                remaining = deadline - self._clock()
                wait = exc.retry_after if isinstance(exc, err.RateLimited) else delay
                if remaining <= wait or (cancel is not None and cancel.is_set()):
                    raise
                if isinstance(exc, err.RateLimited):
                    delay = wait
                if cancel is not None:
                    if cancel.wait(delay):
                        raise
                else:
                    self._sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- API -------------------------------------------------------------------------------

    def list_jobs(
        self,
        *,
        status: str | None = None,
        host: str | None = None,
        labels: Sequence[tuple[str, str]] = (),
        query: str | None = None,
    ) -> list[dict[str, Any]]:
        params: list[tuple[str, str]] = []
        if status:
            params.append(("status", status))
        if host is not None:
            params.append(("host", host))
        params.extend(("label", f"{k}={v}") for k, v in labels)
        if query:
            params.append(("q", query))
        body = self.request("GET", "/api/job", params=params)
        jobs = body.get("jobs", []) if isinstance(body, dict) else body
        return list(jobs or [])

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._object(self.request("GET", f"/api/job/{_quote(job_id)}"))

    def create_job(self, doc: Mapping[str, Any]) -> Any:
        return self.request("POST", "/api/job", json=dict(doc))

    def replace_job(self, job_id: str, doc: Mapping[str, Any]) -> Any:
        return self.request("PUT", f"/api/job/{_quote(job_id)}", json=dict(doc))

    def patch_job(self, job_id: str, changes: Mapping[str, Any]) -> Any:
        return self.request("PATCH", f"/api/job/{_quote(job_id)}", json=dict(changes))

    def delete_job(self, job_id: str) -> Any:
        return self.request("DELETE", f"/api/job/{_quote(job_id)}")

    def job_stats(self, job_id: str) -> Any:
        return self.request("GET", f"/api/job/{_quote(job_id)}/stats")

    def results(self, job_id: str | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
        """The newest retained results, newest first: one job's, or across jobs."""
        path = "/api/job-result" if job_id is None else f"/api/job/{_quote(job_id)}/results"
        body = self._object(self.request("GET", path, params={"limit": limit}))
        return list(body.get("results") or [])

    def submit(self, results: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> Any:
        body: Any = dict(results) if isinstance(results, Mapping) else [dict(r) for r in results]
        return self.request("POST", "/api/job-result", json=body)

    @staticmethod
    def _object(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ServerUnavailable("server sent an unexpected answer (not a JSON object)")
        return body


def _quote(job_id: str) -> str:
    from urllib.parse import quote

    return quote(job_id, safe="@")


def _reason(exc: Exception) -> str:
    """The innermost, most specific reason (``Connection refused``, not a wrapper's text)."""
    seen: Exception = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        nxt = seen.__cause__ or seen.__context__
        if not isinstance(nxt, Exception):
            break
        seen = nxt
    if isinstance(seen, OSError) and seen.strerror:
        return seen.strerror
    text = str(seen) or str(exc) or type(exc).__name__
    return text.splitlines()[0]
