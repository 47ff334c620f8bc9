"""Errors raised by st-hpo.

Every error st-hpo raises on purpose derives from :class:`StHpoError`, so callers can catch one class.
The CLI turns each into a one-line message and exit code 1 (tracebacks only with ``--debug``)::

    StHpoError
    ├── StudyDefinitionError      the study file or Study(...) is wrong (import error, bad field, bad objective)
    │   └── SearchSpaceError      the search space names an unknown argument or allows a value it cannot take
    ├── TrialError                one trial could not run (recorded as FAIL; the study goes on)
    ├── TrackingError             MLflow could not be reached or refused a write
    └── StorageError              the Optuna storage could not be opened or the study could not be found
"""

from __future__ import annotations

__all__ = [
    "StHpoError",
    "StudyDefinitionError",
    "SearchSpaceError",
    "TrialError",
    "TrackingError",
    "StorageError",
]


class StHpoError(Exception):
    """Base class of every error st-hpo raises on purpose."""


class StudyDefinitionError(StHpoError):
    """The study definition cannot run as written; the message says what to change."""


class SearchSpaceError(StudyDefinitionError):
    """The search space names an unknown training argument or can sample a value it cannot take."""


class TrialError(StHpoError):
    """A trial could not be run; it is recorded as FAIL and the study continues."""


class TrackingError(StHpoError):
    """MLflow could not be reached, or refused a write."""


class StorageError(StHpoError):
    """The Optuna storage could not be opened, or holds no such study."""
