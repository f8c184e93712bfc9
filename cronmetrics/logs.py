"""Structured logging: one JSON object per line, UTC RFC 3339 timestamps with milliseconds.

Request-scoped fields (``request_id``, ``job``, ``host``, ``token``) live in context
variables, so any code path can log without threading a logger through; the API sets
them per request. :func:`configure` is the one place handlers are installed.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["bind", "configure", "context", "get_logger"]

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "cronmetrics_log_context", default=None
)
_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("cronmetrics") else f"cronmetrics.{name}")


def bind(**fields: Any) -> None:
    """Add fields to every log line of the current context (thread / request)."""
    current = dict(_context.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    _context.set(current)


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def clear() -> None:
    _context.set(None)


def rfc3339(ts: float) -> str:
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


#: The key of a Healthchecks-style ping URL is a token: no log line may carry it.
_PING_KEY_RE = re.compile(r"(?<!/api)/ping/[^/\s\"'?]+")


def scrub(text: str) -> str:
    """``text`` with every ``/ping/<key>`` shown as ``/ping/[key]``."""
    return _PING_KEY_RE.sub("/ping/[key]", text) if "/ping/" in text else text


class ScrubFilter(logging.Filter):
    """Scrub ping keys from records of loggers we do not format (gunicorn's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_context.get() or {})
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {**(_context.get() or {})}
        fields.update(
            {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}
        )
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{rfc3339(record.created)} {record.levelname:<7} {record.getMessage()}"
        if extra:
            line += f" {extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Install the cronmetrics handler on the package logger (idempotent)."""
    root = logging.getLogger("cronmetrics")
    for handler in list(root.handlers):
        if getattr(handler, "_cronmetrics", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._cronmetrics = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
