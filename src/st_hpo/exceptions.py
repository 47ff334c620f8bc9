"""Errors raised by st-hpo.

Every error st-hpo raises on purpose derives from :class:`StHpoError`, so callers can catch one class.
The CLI turns each into a one-line message and exit code 1 (tracebacks only with ``--debug``)::

    StHpoError
    ├── StudyDefinitionError      the study file or Study(...) is wrong (import error, bad field, bad objective)
    │   ├── SearchSpaceError      the search space names an unknown argument or allows a value it cannot take
    │   └── StudyFileError        the study file raised while it was imported (``user_traceback``: its own)
    ├── TrialError                one trial could not run (recorded as FAIL; the study goes on)
    ├── TrackingError             MLflow could not be reached or refused a write
    └── StorageError              the Optuna storage could not be opened or the study could not be found
        └── NoResultError         the study has no such result yet (no complete trial, the model not kept here)
"""

from __future__ import annotations

__all__ = [
    "StHpoError",
    "StudyDefinitionError",
    "SearchSpaceError",
    "StudyFileError",
    "TrialError",
    "TrackingError",
    "StorageError",
    "NoResultError",
]


class StHpoError(Exception):
    """Base class of every error st-hpo raises on purpose."""


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
