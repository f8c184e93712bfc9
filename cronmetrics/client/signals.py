"""Signal handlers for the CLI's long-running commands (``run``, ``ingest --follow``).

Handlers are installed only on the main thread (Python allows nothing else; a command
called from a test's worker thread runs without them) and always restored on the way out,
so a command invoked in-process leaves the caller's handlers as it found them.

A Python handler runs on the main thread between bytecodes. A signal that lands while
the main thread has let go of the GIL but is not yet inside its blocking call (another
thread holds the GIL) only flags the handler, and the call then blocks with the handler
unrun: ``run`` waiting in ``waitpid`` never forwarded the signal and waited for ever.
:func:`wakeup` closes that gap: every handled signal also writes a byte to a pipe, so a
main thread that waits by ``select`` on its read end wakes up whenever one arrived.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

#: typing costs a cron run ~3 ms to import: its names are for the type checker only
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    #: for the type checker only: ``FrameType | None`` evaluated at run time is a
    #: TypeError on Python 3.9, which the one-file client supports
    Handler = Callable[[int, FrameType | None], None]

__all__ = ["drain", "handling", "wakeup"]


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


@contextlib.contextmanager
def wakeup(also: Iterable[int] = ()) -> Iterator[int | None]:
    """Yield a file descriptor that becomes readable when a handled signal arrives.

    ``also`` are signals that get a do-nothing handler for the block only so that they
    wake the waiter too (``SIGCHLD``: the child exited); one that already has a Python
    handler (an in-process caller's) keeps it, as that writes to the pipe as well.
    Yields None where there is no such pipe to wait on (a thread other than the main one,
    a platform without it): the caller then waits the plain way.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield None
        return
    read_end, write_end = os.pipe()
    previous_fd: int | None = None
    previous: dict[int, Any] = {}
    try:
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)  # the C handler must never block on a full pipe
        previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for sig in also:
            if not callable(signal.getsignal(sig)):
                previous[int(sig)] = signal.signal(sig, _ignore)
        yield read_end
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
        if previous_fd is not None:
            signal.set_wakeup_fd(previous_fd)
        os.close(read_end)
        os.close(write_end)


def drain(fd: int) -> None:
    """Empty the wakeup pipe (what a signal wrote is only a nudge)."""
    with contextlib.suppress(OSError):
        while os.read(fd, 512):
            pass


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A handler that only makes the signal write to the wakeup pipe."""
