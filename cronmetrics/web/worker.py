"""The gunicorn worker: gthread, except that a thread only ever gets a whole request.

gunicorn's gthread worker hands every new connection to a thread, which waits up to 5 s
for a first byte and then reads the headers and the body with blocking reads and no
deadline: a hundred idle connections, or a few clients sending a byte a second, hold
every thread, and ``/metrics`` stops answering. Here the worker's event loop reads each
request itself, non-blocking, until its headers and body are complete (:class:`Framing`
finds where a request ends without parsing it), under two deadlines
(``connections.header_timeout``, ``connections.body_timeout``); only then does a thread
parse and serve it, from memory. Idle and slow connections cost a file descriptor and a
buffer, never a thread. Open connections are also limited per client address
(``connections.per_client``), and the bytes that unfinished requests hold, all
connections together, by ``connections.max_buffered_bytes``: many clients each sending
most of a 1 MiB body slowly cannot take the process's memory, nor keep small requests
out, while a lone big request always finishes.

TLS handshakes run in the event loop too (non-blocking), with the header deadline.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from gunicorn import http, util
from gunicorn import sock as gsock
from gunicorn.workers.gthread import TConn, ThreadWorker

from cronmetrics.config import Config

__all__ = ["Framing", "GuardedWorker", "Limits", "worker_class"]

#: request line plus headers; gunicorn's own limits (4094 + 100 x 8190) are far larger,
#: and a request past this one is refused here with 431
MAX_HEADER_BYTES = 64 * 1024
_READ = 65_536
#: seconds a closed connection is drained of what its client still sends
LINGER = 2.0
_REFUSED_LIMIT = (
    b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Retry-After: 1\r\nContent-Length: 52\r\n\r\n"
    b"too many open connections from this address, retry\r\n"
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Retry-After: 1\r\nContent-Length: 46\r\n\r\n"
    b"too many unfinished requests held here, retry\n"
)
_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class Limits:
    """The worker's per-connection limits (from ``connections:`` and ``limits:``)."""

    per_client: int = 64
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_body_bytes: int = 1_048_576
    max_buffered_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        c = config.connections
        return cls(
            c.per_client,
            c.header_timeout,
            c.body_timeout,
            config.limits.max_body_bytes,
            c.max_buffered_bytes,
        )


class Framing:
    """Where one HTTP/1.1 request ends in the bytes received so far.

    Only the framing headers are looked at (``Content-Length``, ``Transfer-Encoding``,
    ``Expect``); gunicorn's parser still validates everything. A request whose body is
    larger than the limit counts as complete once its headers are: the app answers 413
    without reading the body, and the connection is closed after that answer.
    """

    def __init__(self, data: bytes = b"", *, max_body_bytes: int) -> None:
        self.buf = bytearray(data)
        self.max_body_bytes = max_body_bytes
        #: offset just past the blank line ending the headers, once seen
        self.header_end = -1
        #: the client waits for ``100 Continue`` before it sends the body
        self.expects_continue = False
        #: the body was not (wholly) buffered: the connection must not be reused
        self.truncated = False
        self._length: int | None = None  # Content-Length, once the headers are in
        self._chunked = False
        self._scan = 0  # chunked: offset of the next chunk-size line
        self._body = 0  # chunked: body bytes seen so far

    def feed(self, data: bytes) -> str:
        """Add bytes; answer ``"more"``, ``"complete"`` or ``"headers too large"``."""
        start = max(0, len(self.buf) - 3)
        self.buf += data
        if self.header_end < 0:
            end = self.buf.find(b"\r\n\r\n", start)
            if end < 0:
                return "headers too large" if len(self.buf) > MAX_HEADER_BYTES else "more"
            if end + 4 > MAX_HEADER_BYTES:
                return "headers too large"
            self.header_end = end + 4
            if not self._read_headers():
                return "complete"
        return "complete" if self._body_complete() else "more"

    def _read_headers(self) -> bool:
        """Note the framing headers; ``False`` if there is no body to wait for."""
        lines = bytes(self.buf[: self.header_end - 4]).split(b"\r\n")
        http11 = lines[0].rstrip().endswith(b"HTTP/1.1")
        keep = [lines[0]]
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                if not value.isdigit() or self._length is not None or self._chunked:
                    return False  # malformed or ambiguous: gunicorn answers 400
                self._length = int(value)
            elif name == b"transfer-encoding":
                if self._length is not None:
                    return False
                self._chunked = value.endswith(b"chunked")
            elif name == b"expect" and value == b"100-continue" and http11:
                # answered here (the client sends nothing more until then), so the line
                # goes: gunicorn must not answer it a second time after the body
                self.expects_continue = True
                continue
            keep.append(line)
        if self._length is None and not self._chunked:
            return False
        if self._length is not None and self._length > self.max_body_bytes:
            self.truncated = True
            return False
        if self.expects_continue:
            head = b"\r\n".join(keep) + b"\r\n\r\n"
            del self.buf[: self.header_end]
            self.buf[:0] = head
            self.header_end = len(head)
        self._scan = self.header_end
        return True

    def _body_complete(self) -> bool:
        if self._length is not None:
            return len(self.buf) >= self.header_end + self._length
        buf = self.buf
        while True:  # chunked: chunk-size line, data, CRLF ... "0" line, trailers, CRLF
            eol = buf.find(b"\r\n", self._scan)
            if eol < 0:
                return False
            size_text = bytes(buf[self._scan : eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                self.truncated = True
                return True  # gunicorn answers 400
            if size == 0:
                if buf[eol + 2 : eol + 4] == b"\r\n":
                    return True
                return buf.find(b"\r\n\r\n", eol + 2) >= 0
            if self._body + min(size, len(buf) - eol - 2) > self.max_body_bytes:
                # the app reads up to the limit and one byte more, then answers 413:
                # all of that is here, so its thread never waits on the client
                self.truncated = True
                return True
            nxt = eol + 2 + size + 2
            if nxt > len(buf):
                return False
            self._body += size
            self._scan = nxt


class _Conn(TConn):  # type: ignore[misc]
    """A connection that gives its client-address slot back however it is closed."""

    def __init__(self, worker: GuardedWorker, *args: Any) -> None:
        super().__init__(*args)
        self.worker = worker
        self.address = _address(self.client)
        self.framing: Framing | None = None
        self.deadline = 0.0
        self.handshaking = False
        self.ready = False  # a whole request is buffered: a thread may serve it
        self.closed = False
        self.buffered = 0  # bytes of an unfinished request, counted in worker.buffered

    def close(self, graceful: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.worker.forget(self)
        if graceful:
            self.worker.linger(self.sock)
        else:
            util.close(self.sock)


def _address(client: Any) -> str:
    if isinstance(client, tuple) and client:
        return str(client[0])
    return str(client or "")


class GuardedWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with whole requests for its threads; see the module docstring."""

    limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.per_address: Counter[str] = Counter()
        self.reading: dict[int, _Conn] = {}
        self.lingering: dict[socket.socket, float] = {}
        self.ssl_context: ssl.SSLContext | None = None
        self.buffered = 0  # bytes all unfinished requests hold (connections.max_buffered_bytes)

    def init_process(self) -> None:
        if self.cfg.is_ssl:  # loaded at start: a broken certificate fails here, loudly
            self.ssl_context = gsock.ssl_context(self.cfg)
        super().init_process()

    # -- connections in -----------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = _Conn(self, self.cfg, client, address, listener.getsockname())
        self.nr_conns += 1
        self.per_address[conn.address] += 1
        limit = self.limits.per_client
        if limit and self.per_address[conn.address] > limit:
            self.log.warning("refused a connection from %s: %d open", conn.address, limit)
            _send_quietly(client, _REFUSED_LIMIT)
            self._drop(conn)
            return
        if self.ssl_context is not None:
            # the ssl_context hook (web/tls.py) hands back its cached context, or a new one
            # once the certificate changed on disk: two stats, no file read
            self.ssl_context = gsock.ssl_context(self.cfg)
            conn.sock = self.ssl_context.wrap_socket(
                client,
                server_side=True,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
            )
            conn.handshaking = True
        self._read_request(conn, b"")

    def enqueue_req(self, conn: _Conn) -> None:
        """Every way into a thread passes here: only whole requests go on."""
        if conn.ready:
            conn.ready = False
            super().enqueue_req(conn)
            return
        leftover = b""
        if conn.parser is not None:  # kept alive, or bytes pipelined behind the last one
            leftover = conn.parser.unreader.take_buffered()
        conn.sock.setblocking(False)
        self._read_request(conn, leftover)

    def _read_request(self, conn: _Conn, data: bytes) -> None:
        conn.framing = Framing(max_body_bytes=self.limits.max_body_bytes)
        conn.deadline = time.monotonic() + self.limits.header_timeout
        self.reading[conn.sock.fileno()] = conn
        if data and self._feed(conn, data):
            return
        self.poller.register(conn.sock, selectors.EVENT_READ, lambda _s: self._readable(conn))

    def _readable(self, conn: _Conn) -> None:
        if conn.handshaking and not self._handshake(conn):
            return
        chunks, eof = [], False
        while True:  # TLS may hold decrypted bytes the poller cannot see: take them all
            try:
                data = conn.sock.recv(_READ)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (OSError, ValueError):
                eof = True
                break
            if not data:
                eof = True
                break
            chunks.append(data)
            if not (isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending()):
                break
        if chunks and self._feed(conn, b"".join(chunks), registered=True):
            return  # a whole request, even from a client that half-closed after it
        if eof:
            self._drop(conn)

    def _handshake(self, conn: _Conn) -> bool:
        try:
            conn.sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False  # a WantWrite is rare here (tiny handshakes): the next read retries
        except (OSError, ValueError) as exc:
            self.log.debug("TLS handshake failed: %s", exc)
            self._drop(conn)
            return False
        conn.handshaking = False
        return True

    def _feed(self, conn: _Conn, data: bytes, *, registered: bool = False) -> bool:
        """Take bytes; hand the request to a thread once whole. ``True`` if it left."""
        framing = conn.framing
        assert framing is not None
        had_headers = framing.header_end >= 0
        verdict = framing.feed(data)
        held = len(framing.buf)
        self.buffered += held - conn.buffered
        conn.buffered = held
        if verdict == "more" and self._over_budget(conn):
            return True
        if verdict == "headers too large":
            _send_quietly(conn.sock, _TOO_LARGE)
            self._drop(conn)
            return True
        if not had_headers and framing.header_end >= 0:
            conn.deadline = time.monotonic() + self.limits.body_timeout
            if verdict == "more" and framing.expects_continue:
                _send_quietly(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        if verdict == "more":
            return False
        self.reading.pop(conn.sock.fileno(), None)
        self._release(conn)
        if registered:
            self.poller.unregister(conn.sock)
        if conn.parser is None:
            conn.initialized = True  # the TLS handshake, if any, is done already
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(framing.buf))
        conn.data_ready = conn.ready = True
        self.enqueue_req(conn)
        return True

    # -- deadlines and bookkeeping ------------------------------------------------------

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for sock in [s for s, deadline in self.lingering.items() if deadline <= now]:
            self._unlinger(sock)
        for conn in [c for c in self.reading.values() if c.deadline <= now]:
            framing = conn.framing
            if framing is not None and framing.buf:
                _send_quietly(conn.sock, _TIMEOUT)
            self._drop(conn, registered=True)

    def _cap_keepalive(self, deadline: float) -> None:
        """Stopping: idle connections go now, half-received requests get until
        ``deadline`` (what gunicorn gives kept-alive ones), so SIGTERM stays fast."""
        super()._cap_keepalive(deadline)
        for conn in list(self.reading.values()):
            if conn.framing is None or not conn.framing.buf:
                self._drop(conn, registered=True)
            else:
                conn.deadline = min(conn.deadline, deadline)

    def _keepalive_after(self, conn: _Conn, keepalive: bool) -> bool:
        """A body that was not buffered (over the limit) is not drained: close instead."""
        if conn.framing is not None and conn.framing.truncated:
            return False
        return bool(super()._keepalive_after(conn, keepalive))

    def handle_request(self, req: Any, conn: _Conn) -> bool:
        if conn.framing is not None and conn.framing.truncated:
            req.must_close = True  # say so in the response: the client must not reuse it
        conn.sock.settimeout(self.limits.body_timeout)  # a client that never reads
        return bool(super().handle_request(req, conn))

    def _over_budget(self, conn: _Conn) -> bool:
        """Past ``max_buffered_bytes``: refuse ``conn``, the request whose read passed it,
        unless it is small (under one read): then the request holding the most is refused
        instead, so whoever fills the budget cannot keep small requests out (a ping whose
        headers arrive before its body). Never the last one: a lone request always
        finishes. ``True`` if ``conn`` itself was refused."""
        while self.buffered > self.limits.max_buffered_bytes:
            holders = [c for c in self.reading.values() if c.buffered]
            if len(holders) < 2:
                return False
            victim = conn
            if conn.buffered < _READ:
                victim = max(holders, key=lambda c: c.buffered)
            self.log.warning(
                "refused a request from %s: %d bytes held", victim.address, victim.buffered
            )
            _send_quietly(victim.sock, _BUSY)
            self._drop(victim, graceful=True)  # drain: a reset would destroy the answer
            if victim is conn:
                return True
        return False

    def _release(self, conn: _Conn) -> None:
        """The request left the event loop (to a thread, or closed): its bytes no longer
        count against ``max_buffered_bytes``."""
        self.buffered -= conn.buffered
        conn.buffered = 0

    def _drop(self, conn: _Conn, *, registered: bool = False, graceful: bool = False) -> None:
        self._release(conn)
        if self.reading.pop(conn.sock.fileno(), None) is not None or registered:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
        if not conn.closed:
            self.nr_conns -= 1
        conn.close(graceful=graceful)

    def linger(self, sock: socket.socket) -> None:
        """Close like RFC 9112 section 9.6 asks (FIN, then read what the client still
        sends so the kernel does not answer it with a reset that destroys our response),
        in the event loop: gunicorn lingers up to 2 s per connection in its main thread."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, lambda _s: self._drain(sock))
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self.lingering[sock] = time.monotonic() + LINGER

    def _drain(self, sock: socket.socket) -> None:
        try:
            more = len(sock.recv(_READ)) > 0
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except (OSError, ValueError):
            more = False
        if not more:
            self._unlinger(sock)

    def _unlinger(self, sock: socket.socket) -> None:
        self.lingering.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(sock)
        util.close(sock)

    def forget(self, conn: _Conn) -> None:
        """Called once per connection, when it closes."""
        left = self.per_address[conn.address] - 1
        if left > 0:
            self.per_address[conn.address] = left
        else:
            del self.per_address[conn.address]


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Best effort, never blocking: the connection is about to close anyway."""
    try:
        sock.setblocking(False)
        sock.send(data)
    except (OSError, ValueError):
        pass


def worker_class(config: Config) -> type[GuardedWorker]:
    """A :class:`GuardedWorker` with this config's limits (gunicorn forks, so a class
    made here reaches the worker as it is)."""
    return type("CronmetricsWorker", (GuardedWorker,), {"limits": Limits.from_config(config)})
