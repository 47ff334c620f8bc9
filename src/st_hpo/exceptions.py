"""Errors raised by st-hpo.

Every error st-hpo raises on purpose derives from :class:`StHpoError`, so callers can catch one class.
The CLI turns each into a one-line message and exit code 1 (tracebacks only with ``--debug``). A message
names parameters as the API does (``workers=0``, ``pass output_dir=``); the CLI shows them as its options
(``--workers 0``, ``pass --output-dir``), see :meth:`StHpoError.as_options`::

    StHpoError
    ├── UsageError                an argument to the API (or an option of the CLI) is out of range or contradicts
    │                             another; also a ValueError
    ├── StudyDefinitionError      the study file or Study(...) is wrong (import error, bad field, bad objective)
    │   ├── SearchSpaceError      the search space names an unknown argument or allows a value it cannot take
    │   └── StudyFileError        the study file raised while it was imported (``user_traceback``: its own)
    ├── TrialError                one trial could not run (recorded as FAIL; the study goes on)
    ├── TrackingError             MLflow could not be reached or refused a write
    └── StorageError              the Optuna storage could not be opened or the study could not be found
        └── NoResultError         the study has no such result yet (no complete trial, the model not kept here)
"""

from __future__ import annotations

import re

__all__ = [
    "StHpoError",
    "UsageError",
    "StudyDefinitionError",
    "SearchSpaceError",
    "StudyFileError",
    "TrialError",
    "TrackingError",
    "StorageError",
    "NoResultError",
]


class StHpoError(Exception):
    """Base class of every error st-hpo raises on purpose.

    A message names what to change as the API does, ``name=value`` (``workers=0: give at least 1``);
    ``parameters`` lists the names it uses, which the CLI shows as its options (``--workers 0: give at least
    1``, see :meth:`as_options`)."""

    def __init__(self, message: str = "", *, parameters: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.parameters = parameters

    def as_options(self) -> str:
        """The message with each ``name=`` of :attr:`parameters` written as the CLI option ``--name ``."""
        text = str(self)
        for name in sorted(self.parameters, key=len, reverse=True):
            option = f"--{name.replace('_', '-')}"
            text = re.sub(rf"(?<![\w-]){re.escape(name)}=(?=[\s,;)]|$)", option, text)  # "gpus= out"
            text = re.sub(rf"(?<![\w-]){re.escape(name)}=", f"{option} ", text)  # "workers=0", "workers=N"
        return text


class UsageError(StHpoError, ValueError):
    """An argument to the API is out of range or contradicts another (``workers=0``): not the study
    definition's fault. Also a ``ValueError``."""


class StudyDefinitionError(StHpoError):
    """The study definition cannot run as written; the message says what to change."""


class SearchSpaceError(StudyDefinitionError):
    """The search space names an unknown training argument or can sample a value it cannot take."""


class StudyFileError(StudyDefinitionError):
    """The study file raised while it was imported; ``user_traceback`` is the file's own traceback."""

    def __init__(self, message: str, user_traceback: str) -> None:
        super().__init__(message)
        self.user_traceback = user_traceback


class TrialError(StHpoError):
    """A trial could not be run; it is recorded as FAIL and the study continues."""


class TrackingError(StHpoError):
    """MLflow could not be reached, or refused a write."""


class StorageError(StHpoError):
    """The Optuna storage could not be opened, or holds no such study."""


class NoResultError(StorageError):
    """The study exists but has no such result yet: no complete trial, or its best model is not kept here."""
