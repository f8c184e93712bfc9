"""Structured logging: JSON lines, UTC RFC 3339 with milliseconds, context fields."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cronmetrics import logs as cmlog

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    cmlog.configure("debug", "json", stream=out)
    cmlog.clear()
    yield out
    cmlog.clear()
    cmlog.configure("info", "json")


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_per_line(stream: io.StringIO) -> None:
    log = cmlog.get_logger("test")
    log.info("first")
    log.warning("second\nwith a newline")
    raw = stream.getvalue().splitlines()
    assert len(raw) == 2
    first, second = (json.loads(line) for line in raw)
    assert first["msg"] == "first"
    assert first["level"] == "info"
    assert first["logger"] == "cronmetrics.test"
    assert second["msg"] == "second\nwith a newline"
    assert second["level"] == "warning"


def test_timestamp_is_rfc3339_utc_with_milliseconds_and_z() -> None:
    assert cmlog.rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert cmlog.rfc3339(1764547200.1234) == "2025-12-01T00:00:00.123Z"
    assert RFC3339_MS_UTC.match(cmlog.rfc3339(1_700_000_000.5))


def test_log_lines_carry_an_rfc3339_utc_timestamp(stream: io.StringIO) -> None:
    cmlog.get_logger("test").info("x")
    assert RFC3339_MS_UTC.match(lines(stream)[0]["ts"])


def test_bound_context_fields_appear_on_every_line(stream: io.StringIO) -> None:
    cmlog.bind(request_id="r-1", job="backup", host="db1", token="ops", ignored=None)
    log = cmlog.get_logger("api")
    log.info("one")
    log.info("two")
    for entry in lines(stream):
        assert entry["request_id"] == "r-1"
        assert (entry["job"], entry["host"], entry["token"]) == ("backup", "db1", "ops")
        assert "ignored" not in entry


def test_context_manager_fields_are_removed_afterwards(stream: io.StringIO) -> None:
    log = cmlog.get_logger("test")
    with cmlog.context(request_id="abc"):
        log.info("inside")
    log.info("outside")
    inside, outside = lines(stream)
    assert inside["request_id"] == "abc"
    assert "request_id" not in outside


def test_extra_fields_are_included(stream: io.StringIO) -> None:
    cmlog.get_logger("test").info("reloaded", extra={"files": 3, "invalid": 0})
    entry = lines(stream)[0]
    assert (entry["files"], entry["invalid"]) == (3, 0)


def test_context_does_not_leak_between_threads(stream: io.StringIO) -> None:
    cmlog.bind(request_id="main")

    def worker() -> None:
        cmlog.get_logger("test").info("from thread")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert "request_id" not in lines(stream)[0]


def test_exceptions_are_logged_in_the_same_line(stream: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        cmlog.get_logger("test").exception("failed")
    (entry,) = lines(stream)
    assert "ValueError: boom" in entry["exc"]


def test_level_from_config_filters_lower_levels() -> None:
    out = io.StringIO()
    cmlog.configure("warning", "json", stream=out)
    try:
        log = cmlog.get_logger("test")
        log.info("hidden")
        log.error("shown")
    finally:
        cmlog.configure("info", "json")
    assert [e["msg"] for e in (json.loads(x) for x in out.getvalue().splitlines())] == ["shown"]


def test_configure_is_idempotent() -> None:
    out = io.StringIO()
    cmlog.configure("info", "json", stream=io.StringIO())
    cmlog.configure("info", "json", stream=out)
    try:
        cmlog.get_logger("test").info("once")
        handlers = [
            h
            for h in logging.getLogger("cronmetrics").handlers
            if getattr(h, "_cronmetrics", False)
        ]
        assert len(handlers) == 1
    finally:
        cmlog.configure("info", "json")
    assert len(out.getvalue().splitlines()) == 1


def test_text_format_is_one_readable_line() -> None:
    out = io.StringIO()
    cmlog.configure("info", "text", stream=out)
    try:
        with cmlog.context(job="backup"):
            cmlog.get_logger("test").info("hello")
    finally:
        cmlog.configure("info", "json")
    line = out.getvalue().rstrip("\n")
    ts, level, rest = line.split(maxsplit=2)
    assert RFC3339_MS_UTC.match(ts)
    assert level == "INFO"
    assert rest == "hello job=backup"
