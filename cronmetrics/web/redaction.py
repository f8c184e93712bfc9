"""Output redaction: the ``redact`` patterns of the config as one function.

Its own module because both the application factory and the live config reload
(:mod:`cronmetrics.web.reconfigure`) build it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["make_redactor"]


def make_redactor(patterns: list[str]) -> Callable[[str], str] | None:
    """Replace every match with ``[REDACTED]``; only the ``(?P<secret>...)`` group if the
    pattern has one, so ``DB_PASSWORD=[REDACTED]`` still says what was hidden."""
    if not patterns:
        return None
    compiled = [re.compile(p) for p in patterns]

    def hide(match: re.Match[str]) -> str:
        if "secret" not in match.re.groupindex or match.start("secret") < 0:
            return "[REDACTED]"
        text, base = match.group(0), match.start()
        start, end = match.span("secret")
        return text[: start - base] + "[REDACTED]" + text[end - base :]

    def redact(text: str) -> str:
        for regex in compiled:
            text = regex.sub(hide, text)
        return text

    return redact
