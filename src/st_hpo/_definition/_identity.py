"""What a study is: the definition it was created with, and what it ran on.

A study keeps, in its Optuna user attributes, a record of the definition its trials were run under: the
base training arguments, the search space, the model, a fingerprint of each dataset, and of the loss, the
evaluator and the objective (with its direction). A later session
(a resume, an extension, a worker joining from another machine) compares its own definition with that
record and is refused when they differ, because trials of two definitions cannot be compared: the
message says what changed and how to start a new study instead.

The parent MLflow run gets the same record for review: package versions, the git commit of the study
file's repository, the model, and the datasets as MLflow dataset inputs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition import _args
from st_hpo._tracking._schema import DEFINITION_ATTR, GIT_DIRTY_KEY, KIND_ATTR, MODEL_KEY, VERSION_TAG_PREFIX
from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:
    from st_hpo._definition._study import Study

__all__ = ["DEFINITION_ATTR", "PACKAGES", "check_unchanged", "dataset_fingerprint", "definition_record",
           "fingerprint", "git_commit", "package_versions"]

logger = logging.getLogger(__name__)

#: Packages whose versions the parent run records.
PACKAGES = ("st-hpo", "torch", "transformers", "sentence-transformers", "optuna", "mlflow", "datasets",
            "accelerate")
#: Argument fields that name where one run writes, not what it trains with.
# Fields that do not change what a trial trains: where it writes, what it reports, and ``disable_tqdm``, which
# transformers derives from its logger's level (``st-hpo -vv run`` and a notebook's ``run_study`` differ)
_PER_RUN_FIELDS = {"output_dir", "logging_dir", "run_name", "report_to", "disable_tqdm"}


def package_versions() -> dict[str, str]:
    """The installed version of each of :data:`PACKAGES` ("not installed" when missing)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(path: str | Path | None) -> tuple[str, bool] | None:
    """(commit, dirty) of the git repository holding ``path``, or None when it is in none (or no git)."""
    if path is None:
        return None
    folder = Path(path).resolve()
    folder = folder if folder.is_dir() else folder.parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip(), bool(status.stdout.strip())


def dataset_fingerprint(dataset: Any) -> str | None:
    """A digest of a dataset's columns, row count and content (None for no dataset).

    A ``datasets.Dataset`` is hashed from its Arrow data, batch by batch; a dict of datasets (a
    ``DatasetDict``, several training sets) from each of its datasets under its key.
    """
    if dataset is None:
        return None
    digest = hashlib.sha256()
    if isinstance(dataset, Mapping):
        for key in sorted(dataset):
            digest.update(f"{key}={dataset_fingerprint(dataset[key])};".encode())
        return digest.hexdigest()[:16]
    digest.update(json.dumps([list(dataset.column_names), len(dataset)]).encode())
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    for batch in table.to_batches(max_chunksize=65536):
        digest.update(batch.serialize())
    return digest.hexdigest()[:16]


def _describe(value: Any) -> str:
    if isinstance(value, str) or value is None:
        return str(value)
    if isinstance(value, Mapping):  # e.g. a dict of losses keyed by dataset name
        return "{" + ", ".join(f"{key}: {_describe(part)}" for key, part in value.items()) + "}"
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if name is not None:
        return f"{getattr(value, '__module__', '')}.{name}".lstrip(".")
    named = getattr(value, "name_or_path", None) or getattr(getattr(value, "model_card_data", None),
                                                             "base_model", None)
    return f"{type(value).__name__}({named})" if named else type(value).__name__


def _code_digest(function: Any) -> str:
    """A digest of what a function's code does, stable across formatting, comments, local names and Python
    versions: the global and attribute names it uses, what its globals and closure refer to when that is a
    class, function or module (an alias of another loss shows), and the constants it holds (nested
    functions' too)."""
    parts: list[str] = []
    doc = getattr(function, "__doc__", None)  # a constant of the code in some Python versions only
    referred = {**getattr(function, "__globals__", {}),
                **dict(zip(function.__code__.co_freevars,
                           (_cell(c) for c in getattr(function, "__closure__", None) or ()), strict=False))}

    def walk(code: Any) -> None:
        names = sorted({*code.co_names, *code.co_freevars})
        parts.append(repr(names))
        parts.extend(f"{name}={_named(referred[name])}" for name in names if _named(referred.get(name)))
        for const in code.co_consts:
            if hasattr(const, "co_consts"):
                walk(const)
            elif const is not None and const != doc and isinstance(const, (str, bytes, int, float, tuple)):
                parts.append(repr(const))

    walk(function.__code__)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _named(value: Any) -> str | None:
    """The dotted name of a class, function or module, else None."""
    if inspect.ismodule(value):
        return value.__name__
    if inspect.isclass(value) or inspect.isfunction(value):
        return f"{value.__module__}.{value.__qualname__}"
    return None


def fingerprint(value: Any) -> Any:
    """What identifies a study part that shapes every trial's value: a loss, an evaluator.

    A class by its module and qualified name (``AnglELoss`` imported under the name ``CoSENTLoss`` is still
    ``...AnglELoss``); a function (a factory) by its qualified name and a digest of its code, so that a
    changed loss inside a factory shows; a dict part by part; an instance by its class (and ``name``)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {str(key): fingerprint(part) for key, part in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if inspect.isfunction(value):
        return f"{value.__module__ or ''}.{value.__qualname__}#{_code_digest(value)}".lstrip(".")
    if callable(value) and hasattr(value, "func"):  # functools.partial
        return {"partial": fingerprint(value.func), "args": repr(getattr(value, "args", ())),
                "keywords": repr(sorted(getattr(value, "keywords", {}).items()))}
    name = getattr(value, "name", None)
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    return f"{kind}(name={name!r})" if isinstance(name, str) else kind


def _describe_space(space: Any) -> Any:
    if isinstance(space, Mapping):
        return {name: repr(dist) for name, dist in sorted(space.items())}
    return _describe(space)


def definition_record(definition: Study, base_args: Any, datasets: Mapping[str, Any], *,
                      kind: str = "sentence-transformer") -> dict[str, Any]:
    """What identifies a study's trials: the model kind, base arguments, space, model, dataset fingerprints, and
    the loss, evaluator and objective (with its direction) that shape their values."""
    args = {k: v for k, v in _args.args_to_dict(base_args).items() if k not in _PER_RUN_FIELDS}
    return {
        "kind": kind,
        "base_args": args,
        "space": _describe_space(definition.space),
        "model": _describe(definition.model),
        "data": {name: dataset_fingerprint(ds) for name, ds in datasets.items() if ds is not None},
        # what shapes every trial's value besides the above (recorded since st-hpo 0.x: older records lack them)
        "loss": fingerprint(definition.loss),
        "evaluator": fingerprint(definition.evaluator),
        "objective": ", ".join(f"{name.removeprefix('eval_')} ({direction})"
                               for name, direction in zip(definition.objectives, definition.directions, strict=True)),
        # a study with constraints records them (a changed constraint changes which trials are feasible)
        **({"constraints": dict(definition.constraints)} if definition.constraints else {}),
    }


def _changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between two records, in words (at most a few items per part)."""
    changes = []
    if stored.get("kind", "sentence-transformer") != current.get("kind", "sentence-transformer"):
        changes.append(f"model kind ({stored.get('kind', 'sentence-transformer')} -> {current.get('kind')})")
    old_args, new_args = stored.get("base_args", {}), current.get("base_args", {})
    differ = sorted(k for k in (set(old_args) | set(new_args)) - _PER_RUN_FIELDS  # older records have some
                    if old_args.get(k) != new_args.get(k))
    if differ:
        shown = ", ".join(f"{k} {old_args.get(k)!r} -> {new_args.get(k)!r}" for k in differ[:3])
        changes.append(f"base args ({shown}{', ...' if len(differ) > 3 else ''})")
    old_space, new_space = stored.get("space"), current.get("space")
    if old_space != new_space:
        if isinstance(old_space, Mapping) and isinstance(new_space, Mapping):
            names = sorted(k for k in set(old_space) | set(new_space) if old_space.get(k) != new_space.get(k))
            changes.append(f"search space ({', '.join(names)})")
        else:
            changes.append(f"search space ({old_space!r} -> {new_space!r})")
    if stored.get("model") != current.get("model"):
        changes.append(f"model ({stored.get('model')!r} -> {current.get('model')!r})")
    old_data, new_data = stored.get("data", {}), current.get("data", {})
    data = sorted(k for k in set(old_data) | set(new_data) if old_data.get(k) != new_data.get(k))
    if data:
        changes.append(f"data ({', '.join(data)} content differs)")
    if stored.get("constraints") != current.get("constraints"):  # recorded only when a study has some
        changes.append(f"constraints ({_short(stored.get('constraints'))} -> {_short(current.get('constraints'))})")
    for part in _SHAPING_PARTS:
        if part in stored and stored[part] != current.get(part):
            changes.append(f"{part} ({_short(stored[part])} -> {_short(current.get(part))})")
    return changes


#: Parts of the record that older records lack (a study stored before st-hpo recorded them resumes with a warning).
_SHAPING_PARTS = ("loss", "evaluator", "objective")


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, Mapping) else repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def check_unchanged(study: Any, record: dict[str, Any], *, where: str) -> None:
    """Store ``record`` on a new study; refuse a study created under another definition.

    ``where`` names the storage for the message.
    """
    stored = study.user_attrs.get(DEFINITION_ATTR)
    if stored is None:
        study.set_user_attr(DEFINITION_ATTR, json.loads(json.dumps(record, default=str)))
        return
    current = json.loads(json.dumps(record, default=str))
    changes = _changes(stored, current)
    if not changes and any(part not in stored for part in _SHAPING_PARTS):
        missing = [part for part in _SHAPING_PARTS if part not in stored]
        logger.warning("study %r was stored before st-hpo recorded its %s: a change of those since it ran cannot be "
                       "detected; they are recorded now, and checked from here on", study.study_name,
                       ", ".join(missing))
        study.set_user_attr(DEFINITION_ATTR, {**stored, **{part: current[part] for part in missing}})
        return
    if changes:
        raise StudyDefinitionError(
            f"study {study.study_name!r} in {where} ran under another definition: changed "
            f"{'; '.join(changes)}. Its trials could not be compared with new ones; to run the changed "
            f"definition as a new study, give it another name (study_name=NEW, or Study(name=...)) and "
            f"another output_dir= if you give one; to resume the old one, undo the change",
            parameters=("study_name", "output_dir"),
        )


def record_on_parent(tracker: Any, definition: Study, record: Mapping[str, Any],
                     datasets: Mapping[str, Any], *, study_file: str | Path | None) -> None:
    """Tag the parent run with package versions, the study file's git commit and the model, and log
    each dataset as an MLflow dataset input (name, digest, schema, row count). Informative: a failure
    is a warning."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    run_id = tracker.parent_run_id
    if not run_id:
        return
    tags = {f"{VERSION_TAG_PREFIX}{name}": version for name, version in package_versions().items()}
    tags[MODEL_KEY] = record["model"]
    tags[KIND_ATTR] = record["kind"]
    commit = git_commit(study_file or Path.cwd())
    if commit is not None:
        tags["mlflow.source.git.commit"] = commit[0]  # the MLflow UI shows it as the run's source version
        tags[GIT_DIRTY_KEY] = str(commit[1]).lower()
    inputs = []
    for name, ds in datasets.items():
        if ds is None or name not in record["data"]:
            continue
        parts = ds if isinstance(ds, Mapping) else {"": ds}
        schema = {key: {"columns": list(part.column_names)} for key, part in parts.items()}
        profile = {key or "rows": len(part) for key, part in parts.items()}
        entity = Dataset(name=name, digest=record["data"][name], source_type="st-hpo",
                         source=json.dumps({"study": definition.name, "dataset": name}),
                         schema=json.dumps(schema), profile=json.dumps(profile))
        context = "training" if name.startswith("train") else ("evaluation" if name.startswith("eval") else "test")
        inputs.append(DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)]))
    try:
        for key, value in tags.items():
            tracker.client.set_tag(run_id, key, value)
        if inputs:
            tracker.client.log_inputs(run_id, datasets=inputs)
    except Exception as exc:  # noqa: BLE001 - the record is for review; the study goes on
        logger.warning("could not record versions and datasets on the parent run: %s", str(exc)[:200])
