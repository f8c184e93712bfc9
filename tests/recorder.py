"""A scripted HTTP server on loopback that records what clients sent.

For client unit tests that need a server to fail on cue (503, 429 with Retry-After, a
stall) and to show what each try carried; the real-server behaviour is tested against
``cronmetrics serve`` elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Answer", "Recorder", "recorder"]


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: {"accepted": 1, "jobs": ["x"]})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Recorder:
    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.url = ""
        #: called with each request as it arrives (before it is answered)
        self.on_request: Callable[[Seen], None] | None = None

    def next(self, request: Seen) -> Answer:
        with self.lock:
            if self.on_request is not None:
                self.on_request(request)
            self.seen.append(request)
            return self.answers.pop(0) if self.answers else Answer()

    def bodies(self) -> list[Any]:
        return [s.json() for s in self.seen]


@contextlib.contextmanager
def recorder(*answers: Answer) -> Iterator[Recorder]:
    """Serve ``answers`` in order (then 200s) on ``rec.url`` until the block ends."""
    rec = Recorder(list(answers))

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            answer = rec.next(
                Seen(self.command, self.path, dict(self.headers), body, time.monotonic())
            )
            if answer.delay:
                time.sleep(answer.delay)
            raw = isinstance(answer.body, bytes)  # another web app's page, say
            data = answer.body if raw else json.dumps(answer.body).encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up first (a timeout test)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
