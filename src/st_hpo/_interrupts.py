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

import _thread
import contextlib
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["forget_stop", "interrupt", "redeliver_interrupts_from_finalizers", "request_stop", "stop_requested",
           "uninterrupted"]

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
    """A signal handler: record the stop, then raise ``KeyboardInterrupt`` (Python's Ctrl-C).

    A SIGTERM that comes while an earlier one is not yet acted on is recorded, not raised: a worker whose
    supervisor dies gets its parent-death SIGTERM once per thread of the supervisor that exits, in quick
    succession, and a second ``KeyboardInterrupt`` raised while the first unwinds (before the trial loop
    ignores SIGTERM to record the trial) left the trial RUNNING. A second Ctrl-C (SIGINT) still raises."""
    repeated = signum == signal.SIGTERM and signal.SIGTERM in _requested
    request_stop(signum)
    if not repeated:
        raise KeyboardInterrupt(f"signal {signum}")
#: Seconds before an interrupt taken from a finalizer is raised again (the finalizer has returned by then).
REDELIVERY_DELAY = 0.05


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


def redeliver_interrupts_from_finalizers() -> None:
    """A Ctrl-C (or SIGTERM turned into one) that lands in a finalizer is delivered again, quietly.

    Python runs signal handlers wherever the main thread is, a ``__del__`` included (``Dataset.__del__``,
    run as an interrupted trial's objects are freed): the ``KeyboardInterrupt`` raised there cannot
    propagate, so Python prints "Exception ignored in: ... KeyboardInterrupt" with a traceback and drops
    it, and a second Ctrl-C neither stops the command nor stays quiet. This hook takes such an interrupt
    without a word and raises the same signal again in the main thread, from a helper thread, so that it
    lands in ordinary code and stops the command as a Ctrl-C does. Other unraisable errors go to the hook
    that was in place. Installing it twice is harmless.
    """
    previous = sys.unraisablehook
    if getattr(previous, "st_hpo_redelivers", False):
        return

    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            signum = _signal_of(unraisable.exc_value)
            try:
                _deliver_soon(signum)
            except KeyboardInterrupt:  # delivered before this hook returned: once more, from out of here
                _deliver_soon(signum)
            return
        previous(unraisable)

    hook.st_hpo_redelivers = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _deliver_soon(signum: int) -> None:
    """Raise ``signum`` in the main thread in a moment, once the finalizer and this hook have returned."""
    def deliver() -> None:
        time.sleep(REDELIVERY_DELAY)
        _thread.interrupt_main(signum)

    threading.Thread(target=deliver, name="st-hpo-interrupt", daemon=True).start()


def _signal_of(exc: BaseException | None) -> int:
    """The signal a KeyboardInterrupt stands for: SIGINT, or the one its message names ("signal 15")."""
    match = re.match(r"signal (\d+)", str(exc or ""))
    return int(match.group(1)) if match else signal.SIGINT
