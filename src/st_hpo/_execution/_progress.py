"""Progress on the terminal: a line when a trial starts, a line per finished trial with state, value, best
so far, elapsed and ETA, and on long trials a line at an evaluation at most every ``HEARTBEAT_SECONDS``."""

from __future__ import annotations

import sys
import time
from typing import Any

from st_hpo._tracking._census import OUT_OF_MEMORY, study_census

__all__ = ["Progress", "finished_of", "format_params"]

_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", OUT_OF_MEMORY: "red"}

#: A running trial prints where it is at an evaluation when this long has passed since its last line.
HEARTBEAT_SECONDS = 30.0


class Progress:
    """Prints a line per trial to stderr (rich markup when stderr is a terminal); ``enabled=False`` is silent."""

    def __init__(self, *, budget: int, enabled: bool = True, worker: str | None = None, noun: str = "trial") -> None:
        self.budget = budget
        self.enabled = enabled
        self.worker = worker
        #: what a line numbers: "trial", or "confirm run" for ``st-hpo confirm``'s runs (not the study's trials)
        self.noun = noun
        self.started = time.monotonic()
        self.finished_at_start: int | None = None
        self.finished = 0
        self._console: Any = None
        self._last_line: dict[int, float] = {}  # trial number -> when its last line was printed

    def _print(self, text: str) -> None:
        if not self.enabled:
            return
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        self._console.print(text)

    def set_finished(self, finished: int) -> None:
        if self.finished_at_start is None:
            self.finished_at_start = finished
        self.finished = finished

    def _eta(self) -> str:
        done_here = self.finished - (self.finished_at_start or 0)
        left = self.budget - self.finished
        if done_here <= 0 or left <= 0:
            return "-"
        return _clock((time.monotonic() - self.started) / done_here * left)

    def _who(self) -> str:
        return _escape(f"[{self.worker}] ") if self.worker else ""

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self._last_line[number] = time.monotonic()
        shown = format_params(params)
        shown = _escape(shown or "(base arguments)")
        self._print(f"{self._who()}{self.noun} {number:>3}  started   [dim]{shown}[/dim]")

    def trial_evaluated(self, number: int, step: int, max_steps: int, value: float, *, subset: bool) -> None:
        """A line for a long trial: where it is and its last value (at most one per ``HEARTBEAT_SECONDS``)."""
        now = time.monotonic()
        if now - self._last_line.get(number, now) < HEARTBEAT_SECONDS:
            return
        self._last_line[number] = now
        which = "objective on the eval subset" if subset else "objective"
        self._print(f"{self._who()}{self.noun} {number:>3}  running   step {step}/{max_steps} "
                    f"({step / max(max_steps, 1):.0%} of training), {which} {value:.4f}")

    def trial_done(self, outcome: Any, study: Any) -> None:
        self._last_line.pop(outcome.number, None)
        try:  # the study's count over every worker, not only this one's
            self.finished = study_census(study).finished
        except Exception:  # noqa: BLE001 - a storage hiccup must not stop the trials; count this one
            self.finished += outcome.state in ("COMPLETE", "PRUNED")
        value = "-" if outcome.value is None else f"{outcome.value:.4f}"
        if getattr(outcome, "values", None):  # several objectives: every value, and the front's size
            value = "/".join(f"{v:.4g}" for v in outcome.values)
        try:
            if len(study.directions) > 1:
                from st_hpo._tracking._front import study_front

                best_text = f"front of {len(study_front(study))}"
            else:
                best = study.best_trial
                best_text = f"{best.value:.4f} (#{best.number})"
        except ValueError:
            best_text = "-"
        style = _STYLE.get(outcome.state, "white")
        line = (f"{self._who()}{self.noun} {outcome.number:>3}  [{style}]{outcome.state:<8}[/{style}]  "
                f"value {value:>8}  "
                f"best {best_text}  {outcome.seconds:6.1f}s  "
                f"[{self.finished}/{self.budget} finished, elapsed "
                f"{_clock(time.monotonic() - self.started)}, ETA {self._eta()}]")
        if outcome.model_dir:
            line += "  [green]model kept[/green]"
        if getattr(outcome, "infeasible", None):  # complete, never the best nor on the front: say why
            line += f"  [yellow]infeasible: {_escape(outcome.infeasible[:160])}[/yellow]"
        if outcome.error and outcome.state == "PRUNED":  # e.g. "pruned at step 12 (12% of training)"
            line += f"  [dim]{_escape(outcome.error.split(' with ')[0][:120])}[/dim]"
        if outcome.error and outcome.state in ("FAIL", OUT_OF_MEMORY):
            line += f"\n      [red]{_escape(outcome.error.splitlines()[0][:300])}[/red]"
        self._print(line)

    def message(self, text: str) -> None:
        self._print(text)


def format_params(params: dict[str, Any]) -> str:
    """Sampled values in one short line: ``learning_rate=2.5e-05, batch_sampler=no_duplicates``."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def finished_of(finished: int, budget: int) -> str:
    """``"3 of 8 trials finished"``; when more finished than the budget (lowered by a later ``--n-trials``, or
    a last trial each of two workers finished), says so instead of "2 of 1"."""
    if finished <= budget:
        return f"{finished} of {budget} trials finished"
    return f"{finished} trials finished, {finished - budget} more than the budget of {budget}"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
