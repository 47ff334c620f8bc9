"""Writes that a Ctrl-C or SIGTERM does not cut in half.

A ``KeyboardInterrupt`` raised in the middle of a database call can leave a cursor open with SQLite's lock
on the file: the process that then records the interrupted trial waits on its own lock (20 s per try, and
MLflow's client retries), and so does every other process writing to that store. :func:`uninterrupted`
holds Ctrl-C and SIGTERM back until the write is done and then delivers them as they would have been
delivered (the handler that was in place runs, at a point where no write is under way).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["uninterrupted"]

_HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration of the block, then deliver those that came.

    A second Ctrl-C within the block is not held: whoever presses it twice wants out now. Outside the main
    thread (where Python delivers no signal) this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        if signum == signal.SIGINT and signal.SIGINT in pending:
            raise KeyboardInterrupt(f"signal {signum} (twice)")
        pending.append(signum)

    previous = {}
    for signum in _HELD:
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN or handler is None:  # ignored, or set from outside Python: leave it
            continue
        previous[signum] = signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):  # each once: a dying supervisor's SIGTERM can come repeatedly
            signal.raise_signal(signum)
