"""Run the real CLI entry point in process, for tests: the error mapping and exit codes of
``cronmetrics.cli.main.main`` included, with no server or jobs dir leaking in from the
environment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from click.testing import CliRunner

from cronmetrics.cli.main import main

__all__ = ["Run", "cm"]


@dataclass
class Run:
    code: int
    out: str
    err: str


def cm(args: Sequence[str], *, input: str | None = None, env: dict[str, str] | None = None) -> Run:
    """``cronmetrics ARGS`` with ``input`` on stdin and ``env`` over a clean environment."""
    base = {"CRONMETRICS_URL": None, "CRONMETRICS_TOKEN": None, "CRONMETRICS_JOBS_DIR": None}
    with CliRunner().isolation(input=input, env={**base, "COLUMNS": "80", **(env or {})}) as (
        out,
        err,
        _,
    ):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Run(code, out.getvalue().decode(), err.getvalue().decode())
