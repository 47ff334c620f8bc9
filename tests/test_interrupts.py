"""A Ctrl-C or SIGTERM lands between writes to MLflow, never inside one (a cut SQLite read keeps its lock and
stalls every later write, the recording of the interrupted trial included)."""

from __future__ import annotations

import os
import signal

import pytest

from st_hpo._interrupts import uninterrupted

pytestmark = pytest.mark.serial  # signals, kills or several processes: run alone (tests/run.sh)


@pytest.fixture
def sigterm_raises():
    """SIGTERM raises KeyboardInterrupt, as under ``st-hpo run`` and ``st-hpo worker``."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_during_an_mlflow_write_stops_the_process_after_the_write(tmp_path, sigterm_raises):
    from st_hpo._tracking._mlflow import MlflowTracker, default_tracking_uri

    tracker = MlflowTracker(default_tracking_uri(tmp_path), "s")
    run = tracker.client.create_run(tracker.experiment_id)
    written = []

    def write_while_signalled():
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor died: its parent-death signal arrives now
        tracker.client.set_tag(run.info.run_id, "st_hpo.error", "the supervisor is gone")
        written.append(True)

    with pytest.raises(KeyboardInterrupt):
        tracker._call("tag the error", write_while_signalled)
    assert written, "the write was cut by the signal"
    assert tracker.client.get_run(run.info.run_id).data.tags["st_hpo.error"] == "the supervisor is gone"
    # and the store takes the next write at once: no lock was left behind
    tracker.client.set_terminated(run.info.run_id, "KILLED")
    assert tracker.client.get_run(run.info.run_id).info.status == "KILLED"


def test_signals_held_in_a_write_come_once_each_after_it(sigterm_raises):
    got = []

    def count(signum, frame):
        got.append(signum)

    signal.signal(signal.SIGTERM, count)
    with uninterrupted():
        for _ in range(3):  # a dying supervisor's parent-death signal, once per thread of it that exits
            os.kill(os.getpid(), signal.SIGTERM)
        assert got == []
    assert got == [signal.SIGTERM]


def test_a_repeated_sigterm_while_the_first_unwinds_is_recorded_not_raised():
    """A dying supervisor's parent-death SIGTERM comes once per thread of it: the second, arriving while the
    first's KeyboardInterrupt unwinds (a `with` block's exit, before the trial loop ignores SIGTERM), must
    not raise again and cut the recording of the trial. A second Ctrl-C still raises."""
    from st_hpo._interrupts import forget_stop, interrupt, stop_requested

    forget_stop()  # what an earlier test in this process asked for
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    recorded = []
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:  # unwinding, as HeartbeatThread.__exit__ does
                os.kill(os.getpid(), signal.SIGTERM)
                recorded.append("unwound")
        assert recorded == ["unwound"] and stop_requested()
        recorded.append("trial recorded")  # the trial loop records the trial here
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        forget_stop()
        with pytest.raises(KeyboardInterrupt):  # a stop acted on: the next SIGTERM stops again
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        forget_stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@pytest.fixture
def python_ctrl_c():
    """Ctrl-C handled as Python handles it by default, whatever this process started with (a process started
    in the background by a non-interactive shell ignores SIGINT, and Python then leaves it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_second_ctrl_c_is_not_held(python_ctrl_c):
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with uninterrupted():
            signal.raise_signal(signal.SIGINT)
            reached.append("first held")
            signal.raise_signal(signal.SIGINT)
            reached.append("second held")
    assert reached == ["first held"]


def test_the_cli_called_in_process_gives_ctrl_c_and_sigterm_back(python_ctrl_c, tmp_path, capsys):
    """`st-hpo run` turns SIGTERM and Ctrl-C into recorded stops; called from Python (a notebook) that ends
    with the command: a Ctrl-C at the prompt afterwards is Python's again, not a stop a later run acts on."""
    import sys

    from st_hpo.cli import main

    term, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    assert main(["run", str(tmp_path / "missing.py")]) == 1  # the handlers are installed before it fails
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is term and sys.unraisablehook is hook


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def cli_handlers():
    """SIGINT and SIGTERM as `st-hpo run` and `st-hpo worker` handle them; the stop record cleared after."""
    from st_hpo._interrupts import forget_stop, interrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    forget_stop()
    yield
    forget_stop()
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_a_stop_held_in_a_write_is_recorded_even_when_its_interrupt_is_then_swallowed(cli_handlers):
    from st_hpo._interrupts import stop_requested

    try:
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
    except KeyboardInterrupt:
        pass  # a library between the write and st-hpo's loop that catches it
    assert stop_requested(), "the loop would never learn that it was told to stop"


def test_a_stop_that_lands_in_a_finalizer_is_dropped_by_python_and_still_recorded(cli_handlers):
    """Python runs a signal's handler wherever the main thread is, a finalizer included, and drops what a
    finalizer raises ("Exception ignored in ..."): the KeyboardInterrupt of that stop never reaches st-hpo."""
    import gc

    from st_hpo._interrupts import stop_requested

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's SIGTERM comes while a cycle is collected
            sum(range(10))  # the handler runs here, inside the finalizer

    reached = []
    item = Finalized()
    item.cycle = item
    del item
    gc.collect()
    reached.append("after the collection")
    assert reached == ["after the collection"], "the interrupt was dropped, as Python does"
    assert stop_requested()
