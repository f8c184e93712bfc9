"""Idle and slow clients cannot hold the server (issue 13, case 1).

A real ``cronmetrics serve`` and real loopback sockets: hundreds of idle connections,
headers and bodies sent a byte at a time, and ``/health`` and ``/metrics`` must still
answer. Every loop is bounded; every socket is closed at the end.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from liveserver import LiveServer, live_server

from cronmetrics.web.worker import Framing

pytestmark = pytest.mark.slow

#: an answer within this long means "answered"; the unguarded server took > 10 s
ANSWER_TIMEOUT = 5.0


def limited(
    jobs_dir: Path, state: Path, per_client: int, timeout: float
) -> contextlib.AbstractContextManager[LiveServer]:
    env = {
        "CRONMETRICS_CONNECTIONS__PER_CLIENT": str(per_client),
        "CRONMETRICS_CONNECTIONS__HEADER_TIMEOUT": str(timeout),
        "CRONMETRICS_CONNECTIONS__BODY_TIMEOUT": str(timeout),
    }
    return live_server(jobs_dir, state, env=env)


@pytest.fixture
def guarded(jobs_dir: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """Timeouts longer than any test here, no per-address limit to speak of."""
    with limited(jobs_dir, tmp_path / "state", 1000, 30) as live:
        yield live


def connect(live: LiveServer, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", live.port), timeout=ANSWER_TIMEOUT, source_address=(source, 0)
    )


@contextlib.contextmanager
def trickling(socks: list[socket.socket], data: bytes, *, interval: float) -> Iterator[None]:
    """Send ``data`` to every socket, one byte per ``interval``, until the block ends."""
    stop = threading.Event()

    def run() -> None:
        for index in range(len(data)):  # bounded: never more than the data
            if stop.wait(interval):
                return
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(data[index : index + 1])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def answers(live: LiveServer, path: str) -> int:
    response = httpx.get(f"{live.url}{path}", timeout=ANSWER_TIMEOUT)
    return response.status_code


SLOW_HEADER = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
SLOW_BODY_HEAD = (
    b"POST /api/ping/backup@db1/success HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
)


def test_health_and_metrics_answer_while_200_idle_and_20_slow_connections_are_held(
    guarded: LiveServer,
) -> None:
    idle = [connect(guarded) for _ in range(200)]
    slow_headers = [connect(guarded) for _ in range(10)]
    slow_bodies = [connect(guarded) for _ in range(10)]
    try:
        for sock in slow_bodies:
            sock.sendall(SLOW_BODY_HEAD)
        with (
            trickling(slow_headers, SLOW_HEADER, interval=1.0),
            trickling(slow_bodies, b"x" * 500, interval=1.0),
        ):
            time.sleep(1.5)  # every connection is open and has started, none is complete
            for _ in range(3):
                assert answers(guarded, "/health") == 200
                assert answers(guarded, "/metrics") == 200
    finally:
        for sock in idle + slow_headers + slow_bodies:
            sock.close()
    assert guarded.process.poll() is None


@pytest.fixture
def strict(jobs_dir: Path, tmp_path: Path) -> Iterator[LiveServer]:
    with limited(jobs_dir, tmp_path / "state", 5, 1) as live:
        yield live


def read_all(sock: socket.socket, limit: float = 10.0) -> bytes:
    """What the server sends until it closes (or ``limit`` seconds pass)."""
    sock.settimeout(limit)
    out = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(4096):
            out += chunk
    return out


def test_headers_sent_a_byte_at_a_time_hit_the_header_deadline(strict: LiveServer) -> None:
    sock = connect(strict)
    with sock, trickling([sock], SLOW_HEADER, interval=0.2):
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_a_body_sent_a_byte_at_a_time_hits_the_body_deadline(strict: LiveServer) -> None:
    sock = connect(strict)
    with sock:
        sock.sendall(SLOW_BODY_HEAD)
        with trickling([sock], b"x" * 500, interval=0.2):
            answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_an_idle_connection_is_closed_at_the_header_deadline(strict: LiveServer) -> None:
    with connect(strict) as sock:
        assert read_all(sock) == b""  # closed (nothing was asked, nothing to answer)


def test_connections_are_limited_per_client_address(jobs_dir: Path, tmp_path: Path) -> None:
    # the header deadline is far off: on a loaded machine a 1 s one closed the held
    # connections before the sixth was accepted, which then was not refused (a flake)
    with limited(jobs_dir, tmp_path / "state", 5, 30) as strict:
        _check_the_limit_per_address(strict)


def _check_the_limit_per_address(strict: LiveServer) -> None:
    # an address of their own: the readiness check's kept-alive connection from 127.0.0.1
    # counts until the server reads its close, which can come after the held ones arrive
    # (then the fifth was refused and the sixth let in: a flake seen in CI)
    client = "127.0.0.3"
    held = [connect(strict, source=client) for _ in range(5)]
    try:
        with connect(strict, source=client) as sixth:
            refused = read_all(sixth)
            assert refused.startswith(b"HTTP/1.1 429 "), refused
            assert b"\r\nRetry-After: 1\r\n" in refused  # clients back off, then retry
        for sock in held:  # the five are held open, not refused
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
        with connect(strict, source="127.0.0.2") as other:  # another client is not limited
            other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_all(other).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
    assert answers(strict, "/health") == 200  # the slots came back when they closed


def test_unfinished_bodies_together_are_bounded_and_a_lone_one_finishes(
    jobs_dir: Path, tmp_path: Path
) -> None:
    env = {"CRONMETRICS_CONNECTIONS__MAX_BUFFERED_BYTES": str(1024 * 1024)}
    head = (
        b"POST /api/ping/cert_renew/success HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 800000\r\nConnection: close\r\n\r\n"
    )
    with live_server(jobs_dir, tmp_path / "state", env=env) as live:
        with connect(live) as first, connect(live) as second:
            first.sendall(head + b"a" * 700_000)  # 0.7 MB held: under the budget alone
            time.sleep(0.5)  # the event loop has read it (nothing to wait on but time)
            second.sendall(head)
            with contextlib.suppress(OSError):  # refused mid-send: a reset is fine
                second.sendall(b"b" * 700_000)
            refused = read_all(second)
            assert refused.startswith(b"HTTP/1.1 503 "), refused[:200]
            assert b"\r\nRetry-After: 1\r\n" in refused
            first.sendall(b"a" * 100_000)  # the one that was first finishes normally
            assert read_all(first).startswith(b"HTTP/1.1 200 ")
        with connect(live) as alone:  # the budget came back: a lone 0.8 MB body is fine
            alone.sendall(head + b"c" * 800_000)
            assert read_all(alone).startswith(b"HTTP/1.1 200 ")


def test_a_full_budget_refuses_the_biggest_request_not_a_small_one(
    jobs_dir: Path, tmp_path: Path
) -> None:
    budget = 1024 * 1024
    env = {"CRONMETRICS_CONNECTIONS__MAX_BUFFERED_BYTES": str(budget)}
    head = (
        b"POST /api/ping/cert_renew/success HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 1000000\r\nConnection: close\r\n\r\n"
    )
    small = b"POST /api/ping/cert_renew/success HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
    filled = budget - 700_000 - 2 * len(head) - 20  # the budget is full but for 20 bytes
    with (
        live_server(jobs_dir, tmp_path / "state", env=env) as live,
        connect(live) as big,
        connect(live) as filler,
        connect(live) as legit,
    ):
        big.sendall(head + b"a" * 700_000)
        time.sleep(0.5)  # the event loop has read it (nothing to wait on but time)
        filler.sendall(head + b"b" * filled)
        time.sleep(0.5)
        legit.sendall(small)  # its headers first, its body after: more than 20 bytes
        time.sleep(0.5)
        legit.sendall(b"hello")
        assert read_all(legit).startswith(b"HTTP/1.1 200 "), "the small one passes"
        refused = read_all(big)
        assert refused.startswith(b"HTTP/1.1 503 "), refused[:200]
        filler.sendall(b"b" * (1_000_000 - filled))
        assert read_all(filler).startswith(b"HTTP/1.1 200 ")


def test_keep_alive_pipelining_and_expect_continue_still_work(guarded: LiveServer) -> None:
    with connect(guarded) as sock:
        two = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2
        sock.sendall(two + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(sock).count(b"HTTP/1.1 200 ") == 3
    with connect(guarded) as sock:
        sock.sendall(
            b"POST /api/ping/cert_renew/success HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        sock.settimeout(ANSWER_TIMEOUT)
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"done")
        answer = read_all(sock)
        assert b"HTTP/1.1 200 " in answer
        assert b"100 Continue" not in answer  # answered once, not again after the body
    with httpx.Client(timeout=ANSWER_TIMEOUT) as client:  # keep-alive across requests
        for _ in range(5):
            assert client.get(f"{guarded.url}/health").status_code == 200


def test_sigterm_is_fast_with_idle_and_half_sent_requests_open(guarded: LiveServer) -> None:
    socks = [connect(guarded) for _ in range(50)]
    try:
        for sock in socks[:10]:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        time.sleep(0.5)
        started = time.monotonic()
        assert guarded.stop(timeout=30) == 0
        assert time.monotonic() - started < 10  # not the 20 s graceful timeout
    finally:
        for sock in socks:
            sock.close()


# -- where a request ends (pure) --------------------------------------------------------------


def test_framing_finds_the_end_of_headers_content_length_and_chunked_bodies() -> None:
    f = Framing(max_body_bytes=100)
    assert f.feed(b"GET / HTTP/1.1\r\nHost: x\r") == "more"
    assert f.feed(b"\n\r\n") == "complete"
    f = Framing(max_body_bytes=100)
    assert f.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab") == "more"
    assert f.feed(b"cde") == "complete"
    f = Framing(max_body_bytes=100)
    assert f.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab") == "more"
    assert f.feed(b"c\r\n0\r\n") == "more"
    assert f.feed(b"\r\n") == "complete"
    assert not f.truncated


def test_framing_stops_buffering_past_the_body_limit() -> None:
    f = Framing(max_body_bytes=10)
    assert f.feed(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n") == "complete"
    assert f.truncated  # answered 413 from the headers; the connection closes after
    f = Framing(max_body_bytes=10)
    assert f.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n") == "more"
    assert f.feed(b"x" * 10) == "more"
    assert f.feed(b"x") == "complete"  # limit + 1 byte buffered: enough for the 413
    assert f.truncated
    assert Framing(max_body_bytes=10).feed(b"GET / HTTP/1.1\r\n" + b"a" * 70_000) == (
        "headers too large"
    )


def test_a_body_over_the_limit_is_answered_413_and_the_connection_closed(
    guarded: LiveServer,
) -> None:
    with connect(guarded) as sock:
        sock.sendall(
            b"POST /api/ping/cert_renew/success HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 2000000\r\n\r\n" + b"x" * 1000
        )  # the rest never comes: the answer must not wait for it
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"\r\nConnection: close\r\n" in answer


def test_a_worker_holds_thousands_of_connections_not_gunicorns_1000() -> None:
    """gunicorn's default of 1,000 let 16 addresses at 64 connections each lock everyone
    out; the capacity follows the open-file limit, which serve raises for it."""
    import resource

    from cronmetrics.web.server import MAX_CONNECTIONS, connection_capacity

    capacity = connection_capacity()
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert capacity <= MAX_CONNECTIONS
    assert soft == resource.RLIM_INFINITY or capacity <= soft - 256 or capacity == 64
    if soft == resource.RLIM_INFINITY or soft >= MAX_CONNECTIONS + 256:
        assert capacity == MAX_CONNECTIONS
