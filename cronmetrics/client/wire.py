"""An HTTP/1.x answer, as the cron host's hand-written exchange reads it off the socket.

The client sends ``Connection: close`` and reads to EOF (:mod:`cronmetrics.client.http`),
so what arrives here is the whole answer: its status, its headers, and a body that is
exactly what ``Content-Length`` or ``chunked`` says it is, or an exception. A peer that
does not speak HTTP at all (a TLS server on an ``http://`` URL) is told apart from a
broken HTTP answer (:class:`NotHttp`), so the client can say which scheme to use.

Standard library only, and Python 3.9-compatible: the one-file client ships it.
"""

from __future__ import annotations

__all__ = ["MAX_ANSWER", "NotHttp", "ProtocolError", "parse_answer"]

#: Bigger answers are not ours (a misrouted URL serving a file): stop reading.
MAX_ANSWER = 8 << 20


class ProtocolError(Exception):
    """The peer's answer is broken HTTP/1.x."""


class NotHttp(ProtocolError):
    """The peer answered nothing, or something that is not HTTP/1.x at all."""


def parse_answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """``(status, lower-cased headers, body)`` of a complete HTTP/1.x answer."""
    end = raw.find(b"\r\n\r\n")
    if not raw.startswith(b"HTTP/1.") or end < 0:
        raise NotHttp("no HTTP answer" if not raw else "not an HTTP answer")
    head = raw[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {head[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in head[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    body = raw[end + 4 :]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif headers.get("content-length", "").isdigit():
        length = int(headers["content-length"])
        if len(body) < length:
            raise ProtocolError(f"answer cut short: {len(body)} of {length} bytes")
        body = body[:length]
    return int(parts[1]), headers, body


def _dechunk(data: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise ProtocolError("truncated chunked answer")
        try:
            size = int(data[pos:eol].split(b";")[0].strip() or b"0", 16)
        except ValueError:
            raise ProtocolError("bad chunk size in a chunked answer") from None
        if size == 0:
            return b"".join(out)
        out.append(data[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2
