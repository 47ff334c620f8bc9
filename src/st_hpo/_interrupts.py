"""Stop requests (Ctrl-C, SIGTERM) that are never lost, and writes that they do not cut in half.

A stop comes as a signal whose handler raises ``KeyboardInterrupt`` wherever the process happens to be.
That exception can be lost: a library may catch it or turn it into another error (which code that ignores a
failed write then ignores too), and Python prints and drops one that a finalizer (``__del__``, a weakref
callback, run by the garbage collector anywhere) raises. So every stop is also *recorded* (:func:`request_stop`, by :func:`interrupt`, the
handler the CLI installs, and by :func:`uninterrupted`), and the trial loop and its trainer callback ask
:func:`stop_requested` at points where stopping is safe: a worker told to stop ends its trial as
interrupted and never starts another, whatever became of the exception.

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

__all__ = ["forget_stop", "interrupt", "request_stop", "stop_requested", "uninterrupted"]

_HELD = (signal.SIGINT, signal.SIGTERM)
#: The signals that asked this process to stop and that nobody has acted on yet.
_requested: list[int] = []


def request_stop(signum: int) -> None:
    """Record that signal ``signum`` asked this process to stop."""
    _requested.append(signum)


def stop_requested() -> bool:
    """Whether a stop was requested and not yet acted on (see :func:`forget_stop`)."""
    return bool(_requested)


def forget_stop() -> None:
    """The stop was acted on (the interrupted trial is recorded, the run reported as interrupted): a later
    run in the same process starts afresh."""
    _requested.clear()


def interrupt(signum: int, frame: object) -> None:
    """A signal handler: record the stop, then raise ``KeyboardInterrupt`` (Python's Ctrl-C)."""
    request_stop(signum)
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def uninterrupted(*, deliver: bool = True) -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration of the block, recording them as stop requests; then,
    with ``deliver``, deliver those that came (without, the caller asks :func:`stop_requested`).

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
        request_stop(signum)

    previous: dict[int, object] = {}
    try:
        for signum in _HELD:
            handler = signal.getsignal(signum)
            if handler is signal.SIG_IGN or handler is None:  # ignored, or set from outside Python: leave it
                continue
            # signal.signal first runs the handlers of signals already pending: one may raise (a stop that
            # came just now); the finally below then puts back what was already swapped
            signal.signal(signum, hold)
            previous[signum] = handler
        yield
    finally:
        _restore(previous)
        if deliver:
            for signum in dict.fromkeys(pending):  # each once: a dying supervisor's SIGTERM can come repeatedly
                signal.raise_signal(signum)


def _restore(previous: dict[int, object]) -> None:
    """Put the handlers back, all of them even if a pending signal's handler raises on the way (signal.signal
    runs those first, and sets nothing when one raises)."""
    left = list(previous.items())
    try:
        while left:
            signal.signal(*left[0])  # type: ignore[call-overload]
            left.pop(0)
    finally:
        for signum, handler in left:  # the handler that raised has run: this sets the handler
            signal.signal(signum, handler)  # type: ignore[call-overload]
