"""Signal handlers for the CLI's long-running commands (``run``, ``ingest --follow``).

Handlers are installed only on the main thread (Python allows nothing else; a command
called from a test's worker thread runs without them) and always restored on the way out,
so a command invoked in-process leaves the caller's handlers as it found them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

#: typing costs a cron run ~3 ms to import: its names are for the type checker only
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["handling"]

Handler = Callable[[int, FrameType | None], None]


@contextlib.contextmanager
def handling(signals: Iterable[int], handler: Handler, *, enabled: bool = True) -> Iterator[None]:
    """Route ``signals`` to ``handler`` for the duration of the block."""
    previous: dict[int, Any] = {}
    if enabled and threading.current_thread() is threading.main_thread():
        for sig in signals:
            previous[int(sig)] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
