"""The ``cronmetrics`` console script: route the cron host's commands before click loads.

``run``, ``result submit`` and ``ingest`` run on every cron host for every job, so they go
straight to :mod:`cronmetrics.client.cli` (standard library only, the same code as the
zipapp); everything else is the click CLI in :mod:`cronmetrics.cli.main`, which imports
click, pydantic and the config model at load time.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["is_light", "main"]

_HELP = ("-h", "--help")


def is_light(argv: Sequence[str]) -> bool:
    """True for ``run ...``, ``result submit ...``, ``ingest ...`` (their --help included)."""
    from cronmetrics.client.cli import COMMANDS

    return any(tuple(argv[: len(words)]) == words for words in COMMANDS)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if is_light(args):
        from cronmetrics.client.cli import main as client_main

        sys.exit(client_main(args))
    from cronmetrics.cli.main import main as full_main

    full_main(args)
