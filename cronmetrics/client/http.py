"""The cron host's HTTP client: the one place that talks to a cronmetrics server.

Standard library only, and light: one HTTP/1.1 exchange per request over a plain socket
(``ssl`` is imported for ``https://`` alone, ``http.client`` only behind a proxy, because
importing it costs a cron run ~27 ms, measured on top of everything else the client
imports, which together cost ~20 ms: ``email``'s parser and its regexes). It runs inside
the one-file zipapp on any Python >= 3.9.

What the exchange does, and does not: ``Connection: close``, the request head and body in
one ``sendall`` (so Nagle's algorithm has no second segment to hold back and
``TCP_NODELAY`` would change nothing), the whole answer read to EOF within one deadline
(connect has its own, shorter one), ``Content-Length`` checked (a shorter body is a broken
answer) or ``chunked`` decoded, at most :data:`~cronmetrics.client.wire.MAX_ANSWER`
bytes. Redirects are refused with their ``Location`` (a POST must not be re-sent elsewhere
silently). Behind ``HTTP(S)_PROXY`` the exchange goes through ``http.client``
(absolute-form requests, or a ``CONNECT`` tunnel for https), with the proxy URL's
credentials.

Every failure becomes a :class:`~cronmetrics.errors.CronmetricsError` whose message is one
line that says what to do: the server's ``{"error": {...}}`` body is turned back into the
class the server raised (its exit code included; :mod:`cronmetrics.client.failures`), and
every network problem (refused, DNS, timeout, TLS) is
:class:`~cronmetrics.errors.ServerUnavailable` with its own advice. The answer's bytes are
parsed by :mod:`cronmetrics.client.wire`, the proxy is chosen by
:mod:`cronmetrics.client.proxy`, and :meth:`Client.request_retrying` waits as
:mod:`cronmetrics.client.retry` says.
"""

from __future__ import annotations

import json as jsonlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import quote, urlencode, urlsplit

from cronmetrics import __version__
from cronmetrics import errors as err
from cronmetrics.client.failures import (
    CertificateRejected,
    NotCronmetrics,
    UsageError,
    WrongScheme,
    error_from_response,
)
from cronmetrics.client.proxy import proxy_for
from cronmetrics.client.retry import Retry, retryable
from cronmetrics.client.wire import MAX_ANSWER, NotHttp, ProtocolError, parse_answer
from cronmetrics.errors import CronmetricsError, ServerUnavailable

#: typing costs a cron run ~3 ms to import: its names are for the type checker only
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Client"]

#: Per-request ceiling; callers with a deadline get less.
REQUEST_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0
#: How long the probe for a wrong scheme (https:// to a plain server...) may take.
PROBE_TIMEOUT = 1.0
#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = (62, 64)
CACERT_HINT = "pass the CA that signed it with --cacert FILE (or CRONMETRICS_CACERT)"
URL_HINT = "check --url (or CRONMETRICS_URL)"


class Client:
    """A small JSON client. One connection per request: a cron run sends two."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        cacert: str | None = None,
        insecure: bool = False,
        timeout: float = REQUEST_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--url {url!r} must look like http://HOST:PORT or https://HOST")
        self.url = url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        #: the host as getaddrinfo gets it: bytes when ASCII, since a str makes it import
        #: the idna codec (and unicodedata) on every cron run
        self._dial: Any = self.host.encode("ascii") if self.host.isascii() else self.host
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = {
            "User-Agent": f"cronmetrics/{__version__}",
            "Accept": "application/json",
        }
        if token:
            if not token.isascii() or not token.isprintable() or " " in token:
                raise UsageError(
                    "the token holds spaces, control or non-ASCII characters: a token never"
                    " does; check --token / CRONMETRICS_TOKEN / --token-file"
                )
            self.headers["Authorization"] = f"Bearer {token}"
        self._context: Any = None
        if self.scheme == "https":
            self._context = _tls_context(cacert, insecure)
        self._proxy = proxy_for(self.scheme, self.host, os.environ if environ is None else environ)
        self._sleep = sleep
        self._clock = clock
        self._rng = rng

    def close(self) -> None:
        """Nothing is kept open between requests; here for ``with`` blocks."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- core ------------------------------------------------------------------------------

    def _exchange(
        self, method: str, target: str, headers: dict[str, str], body: bytes, limit: float
    ) -> tuple[int, dict[str, str], bytes, bool]:
        """Send one request (``Connection: close``) and read the whole answer:
        ``(status, lower-cased headers, body, connected)``."""
        if self._proxy is not None:
            return self._exchange_via_proxy(method, target, headers, body, limit)
        deadline = time.monotonic() + limit
        sock = socket.create_connection(
            (self._dial, self.port), timeout=min(limit, CONNECT_TIMEOUT)
        )
        try:
            if self._context is not None:
                try:
                    sock = self._context.wrap_socket(sock, server_hostname=self.host)
                except (socket.timeout, TimeoutError) as exc:
                    exc.during_handshake = True  # type: ignore[attr-defined]
                    raise
            host = _bracketed(self.host)
            default = 443 if self.scheme == "https" else 80
            lines = [
                f"{method} {target} HTTP/1.1",
                f"Host: {host}" + ("" if self.port == default else f":{self.port}"),
            ]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.sendall("\r\n".join(lines).encode("latin-1") + body)
            chunks: list[bytes] = []
            size = 0
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise ProtocolError(f"answer larger than {MAX_ANSWER} bytes")
        finally:
            sock.close()
        status, answer_headers, data = parse_answer(b"".join(chunks))
        return status, answer_headers, data, True

    def _exchange_via_proxy(
        self, method: str, target: str, headers: dict[str, str], body: bytes, limit: float
    ) -> tuple[int, dict[str, str], bytes, bool]:

        conn = self._connection(limit)
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(limit)
            if self._proxy is not None and self._proxy[2] and self.scheme == "http":
                headers = {**headers, "Proxy-Authorization": self._proxy[2]}
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        answer = {k.lower(): v for k, v in response.getheaders()}
        return response.status, answer, data, True

    def _connection(self, limit: float) -> Any:
        import http.client

        connect = min(limit, CONNECT_TIMEOUT)
        target = self._proxy[:2] if self._proxy else (self.host, self.port)
        conn: Any
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(
                target[0], target[1], timeout=connect, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(target[0], target[1], timeout=connect)
        if self._proxy is not None and self.scheme == "https":
            auth = {"Proxy-Authorization": self._proxy[2]} if self._proxy[2] else None
            conn.set_tunnel(self.host, self.port, headers=auth)
        return conn

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        content_type: str | None = None,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One request; the decoded JSON body, or the mapped exception."""
        limit = self.timeout if timeout is None else max(0.05, min(timeout, self.timeout))
        target = self.prefix + path
        if params:
            target += "?" + urlencode(
                list(params.items()) if isinstance(params, Mapping) else params
            )
        if self._proxy is not None and self.scheme == "http":
            target = f"http://{_bracketed(self.host)}:{self.port}{target}"
        headers = dict(self.headers)
        if json is not None:
            body = jsonlib.dumps(json, separators=(",", ":")).encode("utf-8")
            content_type = "application/json"
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            status, answer, data, _ = self._exchange(method, target, headers, body or b"", limit)
        except Exception as exc:  # every network failure, whatever raised it
            raise self._network_error(exc, limit) from None
        try:
            decoded, json_ok = (jsonlib.loads(data) if data else None), True
        except ValueError:
            decoded, json_ok = None, False
        if 200 <= status < 300:
            if not json_ok:  # every answer of the API is JSON: this is another web app
                raise NotCronmetrics(
                    f"{self.url} answered {status} but not in JSON, as cronmetrics always"
                    f" does: nothing was recorded there; {URL_HINT}"
                )
            return decoded
        if 300 <= status < 400:
            # not followed: a POST would lose its body or be sent twice somewhere else
            where = answer.get("location", "?")
            raise err.InvalidRequest(
                f"{self.url} redirects ({status}) to {where}: put the final URL in --url"
                " (redirects are not followed)"
            )
        raise error_from_response(
            status,
            decoded,
            data[:2000].decode("utf-8", "replace"),
            retry_after=answer.get("retry-after"),
        )

    def _network_error(self, exc: BaseException, limit: float) -> CronmetricsError:
        """What went wrong on the way, and what to do about it, in one line."""
        where = f"{self.host}:{self.port}"
        ssl_mod = _ssl() if self.scheme == "https" else None
        if isinstance(exc, socket.gaierror):
            return ServerUnavailable(f"cannot resolve {self.host!r} (DNS): {URL_HINT}")
        if isinstance(exc, ConnectionRefusedError):
            return ServerUnavailable(
                f"cannot reach {where}: connection refused; is cronmetrics serving there?"
                f" {URL_HINT}"
            )
        if isinstance(exc, (socket.timeout, TimeoutError)):
            if self.scheme == "https" and getattr(exc, "during_handshake", False):
                # a plain HTTP server waits for a request line that a TLS hello never is
                if self._speaks(tls=False):
                    return WrongScheme(
                        f"{where} serves plain HTTP, not TLS: use http:// instead of"
                        " https:// in --url"
                    )
                return _timeout(
                    ServerUnavailable(
                        f"{where}: no TLS handshake within {min(limit, CONNECT_TIMEOUT):.1f}s:"
                        " if it serves plain HTTP, use http:// instead of https:// in --url"
                    )
                )
            return _timeout(ServerUnavailable(f"{self.url}: no answer within {limit:.1f}s"))
        if ssl_mod is not None and isinstance(exc, ssl_mod.SSLCertVerificationError):
            why = exc.verify_message or exc.reason or "verification failed"
            if exc.verify_code in _NAME_MISMATCH:  # trusted, but for other names
                return CertificateRejected(
                    f"{self.url}: the certificate does not name {self.host!r} ({why}): put a"
                    " host name or address it was issued for in --url"
                )
            return CertificateRejected(
                f"{self.url}: certificate not trusted ({why}): {CACERT_HINT}"
            )
        if ssl_mod is not None and isinstance(exc, ssl_mod.SSLError):
            reason = str(exc.reason or exc)
            if any(r in reason for r in ("WRONG_VERSION_NUMBER", "RECORD_LAYER", "record layer")):
                return WrongScheme(
                    f"{where} does not speak TLS: use http:// instead of https:// in --url"
                )
            return ServerUnavailable(f"{self.url}: TLS failed ({reason})")
        if self.scheme == "http" and isinstance(
            exc, (NotHttp, ConnectionResetError, BrokenPipeError)
        ):
            if self._speaks(tls=True):
                return WrongScheme(
                    f"{where} serves TLS, not plain HTTP: use https:// instead of http:// in --url"
                )
            return ServerUnavailable(
                f"{where} closed the connection without an HTTP answer: if it serves TLS,"
                " use https:// instead of http:// in --url"
            )
        if isinstance(exc, ProtocolError) or type(exc).__module__ == "http.client":
            return ServerUnavailable(f"{self.url}: broken answer ({exc or type(exc).__name__})")
        if isinstance(exc, OSError):
            return ServerUnavailable(f"cannot reach {where}: {exc.strerror or exc}")
        return ServerUnavailable(f"cannot reach {where}: {type(exc).__name__}: {exc}")

    def _speaks(self, *, tls: bool) -> bool:
        """Whether the server answers the other scheme (a probe, on the failure path
        only): a TLS handshake that completes, or an answer that starts ``HTTP/``."""
        try:
            with socket.create_connection((self._dial, self.port), timeout=PROBE_TIMEOUT) as raw:
                if tls:
                    context = _tls_context(None, insecure=True)
                    with context.wrap_socket(raw, server_hostname=self.host):
                        return True
                raw.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
                head = b""
                while len(head) < 5 and (chunk := raw.recv(5 - len(head))):
                    head += chunk
                return head == b"HTTP/"
        except Exception:  # a probe: any failure means "no"
            return False

    def request_retrying(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        budget: float = 10.0,
        cancel: threading.Event | None = None,
        on_retry: Callable[[CronmetricsError, float], None] | None = None,
    ) -> Any:
        """:meth:`request` again on network trouble, 5xx and 429 until ``budget`` s pass.

        The same body goes out on every try (a result's ``run_id`` included), so the
        server can tell a retry from a second run. 4xx answers are not retried.
        """
        retry = Retry(budget, clock=self._clock, rng=self._rng)
        previous: CronmetricsError | None = None
        while True:
            left = retry.remaining()
            try:
                return self.request(method, path, json=json, timeout=max(left, 0.05))
            except CronmetricsError as exc:
                if not retryable(exc) or (cancel is not None and cancel.is_set()):
                    raise
                wait = retry.next_wait(exc)
                if wait is None:
                    if previous is not None and left < self.timeout and _timed_out(exc):
                        # a last try cut short by the budget says less than the one before
                        raise previous from None
                    raise
                previous = exc
                if on_retry is not None:
                    on_retry(exc, wait)
                if cancel is not None:
                    if cancel.wait(wait):
                        raise
                else:
                    self._sleep(wait)

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
        return self._object(self.request("GET", f"/api/job/{quote_id(job_id)}"))

    def create_job(self, doc: Mapping[str, Any]) -> Any:
        return self.request("POST", "/api/job", json=dict(doc))

    def replace_job(self, job_id: str, doc: Mapping[str, Any]) -> Any:
        return self.request("PUT", f"/api/job/{quote_id(job_id)}", json=dict(doc))

    def patch_job(self, job_id: str, changes: Mapping[str, Any]) -> Any:
        return self.request("PATCH", f"/api/job/{quote_id(job_id)}", json=dict(changes))

    def delete_job(self, job_id: str) -> Any:
        return self.request("DELETE", f"/api/job/{quote_id(job_id)}")

    def job_stats(self, job_id: str) -> Any:
        return self.request("GET", f"/api/job/{quote_id(job_id)}/stats")

    def results(self, job_id: str | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
        """The newest retained results, newest first: one job's, or across jobs."""
        path = "/api/job-result" if job_id is None else f"/api/job/{quote_id(job_id)}/results"
        body = self._object(self.request("GET", path, params={"limit": limit}))
        return list(body.get("results") or [])

    def submit(
        self, results: Sequence[Mapping[str, Any]] | Mapping[str, Any], *, budget: float = 0
    ) -> Any:
        """POST one result or a batch; with ``budget`` > 0, retried within that many s."""
        body: Any = dict(results) if isinstance(results, Mapping) else [dict(r) for r in results]
        if budget > 0:
            return self.request_retrying("POST", "/api/job-result", json=body, budget=budget)
        return self.request("POST", "/api/job-result", json=body)

    @staticmethod
    def _object(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ServerUnavailable("server sent an unexpected answer (not a JSON object)")
        return body


def _bracketed(host: str) -> str:
    """An IPv6 literal as a URL or ``Host`` header writes it."""
    return f"[{host}]" if ":" in host else host


def _timeout(exc: ServerUnavailable) -> ServerUnavailable:
    exc.timed_out = True  # type: ignore[attr-defined]
    return exc


def _timed_out(exc: CronmetricsError) -> bool:
    """The request ran out of time (rather than being refused or answered badly)."""
    return bool(getattr(exc, "timed_out", False))


def quote_id(job_id: str) -> str:
    return quote(job_id, safe="@")


def _ssl() -> Any:
    import ssl

    return ssl


def _tls_context(cacert: str | None, insecure: bool) -> Any:
    ssl = _ssl()
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--cacert {cacert}: not a readable PEM CA file ({exc})") from None
