"""Where workers run: this machine (``local``), a SLURM job array (``slurm``), Ray actors (``ray``).

:func:`engine_for` chooses the engine in one place; :func:`ended_reason` asks the engine a trial's
``engine_ref`` names whether that worker still runs, for recovery (see :mod:`st_hpo._engines._base`).
"""

from __future__ import annotations

from st_hpo._engines._base import ClusterEngine, Engine, EngineSettings, Submission, SupervisingEngine
from st_hpo.exceptions import UsageError

__all__ = ["ENGINES", "ClusterEngine", "Engine", "EngineSettings", "Submission", "SupervisingEngine", "ended_reason",
           "engine_for"]

#: The engines ``--engine`` takes.
ENGINES = ("local", "slurm", "ray")


def _engine_class(name: str) -> type[Engine]:
    if name == "local":
        from st_hpo._engines._local import LocalEngine

        return LocalEngine
    if name == "slurm":
        from st_hpo._engines._slurm import SlurmEngine

        return SlurmEngine
    if name == "ray":
        from st_hpo._engines._ray import RayEngine

        return RayEngine
    raise UsageError(f"engine={name!r}: give one of {', '.join(ENGINES)}", parameters=("engine",))


def engine_for(settings: EngineSettings) -> Engine:
    """The engine ``settings.name`` names."""
    return _engine_class(settings.name)(settings)


def ended_reason(ref: str) -> str | None:
    """Why the worker ``ref`` (``slurm:12_1``, ``ray:...``, ``local:4242``) no longer runs, as its engine
    tells it; None while it runs, or when the engine is unknown here or cannot tell."""
    name, _, own = ref.partition(":")
    if name not in ENGINES or not own:
        return None
    return _engine_class(name).ended(own)
