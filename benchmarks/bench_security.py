"""Issue #5 cost checks: output redaction on hostile 1 MiB outputs, token lookup per request.

Redaction runs on every submitted output before it is stored, over at most
``limits.max_body_bytes`` (1 MiB by default) per request, so its worst case is bounded by
what one request can carry. The default patterns start with a literal keyword and use
possessive, bounded quantifiers; this script feeds them inputs built to make a
backtracking regex engine go quadratic and prints the time per MiB.

Token lookup hashes the presented token once and compares it with every configured hash
in constant time (no early exit), so its cost grows with the number of tokens.

``--server`` (issue 13) starts a real ``cronmetrics serve`` on loopback and times
``/health`` and ``/metrics`` while 200 idle connections and 20 slow ones (a header, and a
POST body, one byte a second) are held, then ``/metrics`` while four clients post 1 MB
outputs as fast as they can.

    python3 benchmarks/bench_security.py
    python3 benchmarks/bench_security.py --server
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from common import REPO, loadavg, machine, process_tree_cpu

from cronmetrics.config import DEFAULT_REDACT, TokenConfig
from cronmetrics.testing import ServerProcess, running_server
from cronmetrics.web.app import make_redactor
from cronmetrics.web.auth import TokenAuth, hash_token

MIB = 1024 * 1024


def hostile_outputs() -> dict[str, str]:
    def fill(unit: str) -> str:
        return (unit * (MIB // len(unit) + 1))[:MIB]

    log = "".join(
        f"2025-10-30T19:56:{i % 60:02d}Z rsync: sent {i * 37} bytes to backup3:/srv/{i}\n"
        for i in range(20_000)
    )
    return {
        "plain log lines": (log * (MIB // len(log) + 1))[:MIB],
        "one long word": fill("x"),
        "keyword repeated": fill("token"),
        "keyword + separator repeated": fill("password="),
        "header name repeated": fill("authorization: "),
        "AKIA prefix repeated": fill("AKIA"),
        "URL scheme repeated": fill("a://b:"),
        "PEM header repeated": fill("-----BEGIN PRIVATE KEY-----"),
        "many real secrets": fill("DB_PASSWORD=hunter2 Authorization: Bearer abc.def "),
    }


def timed(func: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--by-pattern", action="store_true", help="time each pattern alone")
    parser.add_argument("--server", action="store_true", help="slow clients and a flood")
    parser.add_argument("--seconds", type=float, default=20, help="flood duration (--server)")
    args = parser.parse_args()
    if args.server:
        serve_benchmarks(args.seconds)
        return
    redact = make_redactor(DEFAULT_REDACT)
    assert redact is not None
    print("redaction with the default patterns, 1 MiB of output, median of", args.runs)
    worst = 0.0
    for name, text in hostile_outputs().items():
        seconds = timed(functools.partial(redact, text), args.runs)
        worst = max(worst, seconds)
        print(f"  {name:<30} {seconds * 1000:8.1f} ms")
    print(f"  worst case: {worst * 1000:.0f} ms per MiB")
    if args.by_pattern:
        print("per pattern (ms per MiB, same inputs in the same order):")
        for pattern in DEFAULT_REDACT:
            one = make_redactor([pattern])
            assert one is not None
            row = [
                timed(functools.partial(one, text), 1) * 1000 for text in hostile_outputs().values()
            ]
            print("  " + " ".join(f"{ms:5.0f}" for ms in row), pattern[:40])
    print("token lookup (hash + constant-time compare with every configured hash)")
    for count in (1, 100, 1000):
        tokens = [
            TokenConfig(name=f"t{i}", sha256=hash_token(f"cm_token_{i}"), scopes=["submit"])
            for i in range(count)
        ]
        auth = TokenAuth(tokens)
        header, n = f"Bearer cm_token_{count - 1}", 2000

        def lookups(auth: TokenAuth = auth, header: str = header, n: int = n) -> None:
            for _ in range(n):
                auth.identify(header)

        seconds = timed(lookups, args.runs)
        print(f"  {count:>5} tokens: {seconds / n * 1e6:8.1f} µs per request")


# -- a real server: slow clients, and a flood of 1 MB submissions ----------------------------


def get(port: int, path: str, timeout: float = 30) -> float:
    """Seconds for one ``GET`` on a fresh connection (what a scrape or a probe does)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
    finally:
        conn.close()
    return time.perf_counter() - start


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms  "
        f"max {ordered[-1] * 1000:6.1f} ms  (n={len(ordered)})"
    )


@contextlib.contextmanager
def held_connections(port: int) -> Iterator[None]:
    """200 idle connections, 10 sending a header and 10 a POST body one byte a second.

    From four other loopback addresses (50 each): one address alone is refused past
    ``connections.per_client`` (64 by default), which is a limit, not what is measured.
    """
    address = ("127.0.0.1", port)

    def connect(index: int) -> socket.socket:
        return socket.create_connection(address, source_address=(f"127.0.0.{10 + index % 4}", 0))

    idle = [connect(i) for i in range(200)]
    headers = [connect(i) for i in range(10)]
    bodies = [connect(i) for i in range(10)]
    head = b"POST /api/ping/cert_renew/success HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n"
    for sock in bodies:
        sock.sendall(head)
    header = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 900
    stop = threading.Event()

    def trickle() -> None:
        for index in range(900):  # bounded: 15 minutes at most
            if stop.wait(1.0):
                return
            for sock in headers:
                with contextlib.suppress(OSError):
                    sock.send(header[index : index + 1])
            for sock in bodies:
                with contextlib.suppress(OSError):
                    sock.send(b"x")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(2)
        yield
    finally:
        stop.set()
        thread.join(5)
        for sock in idle + headers + bodies:
            sock.close()


def flood(port: int, seconds: float, clients: int = 4) -> tuple[list[float], int]:
    """``/metrics`` latencies while ``clients`` threads post 1 MB outputs; and the posts."""
    output = (b"rsync: sent 4096 bytes to backup3:/srv/data password=hunter2\n" * 20_000)[
        :1_000_000
    ]
    deadline = time.monotonic() + seconds
    posted = [0] * clients

    def post(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.monotonic() < deadline:
                conn.request("POST", "/api/ping/cert_renew/success", body=output)
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status
                posted[index] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    samples = []
    while time.monotonic() < deadline:
        samples.append(get(port, "/metrics"))
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    return samples, sum(posted)


def serve_benchmarks(seconds: float) -> None:
    print(f"machine: {machine()}, load {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "jobs.d", root / "jobs.d")
        with running_server(root / "jobs.d", root / "state", ready=healthy) as server:
            port = server.port
            for path in ("/health", "/metrics"):  # warm
                get(port, path)
            with held_connections(port):
                for path in ("/health", "/metrics"):
                    samples = [get(port, path) for _ in range(100)]
                    print(f"{path:<9} with 200 idle + 20 slow connections: {percentiles(samples)}")
            samples, posts = flood(port, seconds)
            print(
                f"/metrics  while 4 clients post 1 MB outputs ({posts / seconds:.1f} posts/s): "
                f"{percentiles(samples)}"
            )
            print(f"server CPU: {process_tree_cpu(server.process.pid):.1f} s")


def healthy(server: ServerProcess) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException, AssertionError):
        return get(server.port, "/health", timeout=1) < 1
    return False


if __name__ == "__main__":
    main()
