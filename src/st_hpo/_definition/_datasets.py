"""A study's datasets: one ``datasets.Dataset``, or several (a ``DatasetDict`` or a dict of datasets) for
multi-dataset training, each named by its key. Helpers here treat both forms alike, a single dataset being
one (None, dataset) pair."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from st_hpo.exceptions import StudyDefinitionError

__all__ = ["SPLIT_NAMES", "dataset_parts", "describe_columns", "for_one_trainer", "head", "materialize",
           "part_label", "row_count", "subset_shares"]


#: Names ``load_dataset`` gives its splits: a DatasetDict keyed only by these is one dataset's splits.
SPLIT_NAMES = frozenset({"train", "validation", "valid", "val", "dev", "test", "eval", "evaluation"})


def dataset_parts(dataset: Any) -> list[tuple[str | None, Any]]:
    """The (name, dataset) pairs of a study dataset: one pair named None for a single ``Dataset``, one per
    dataset of a mapping (``DatasetDict`` or dict of datasets); none for None."""
    if dataset is None:
        return []
    if isinstance(dataset, Mapping):
        return list(dataset.items())
    return [(None, dataset)]


def row_count(dataset: Any) -> int:
    """Rows of a study dataset: of all its datasets together for a mapping."""
    return sum(len(part) for _, part in dataset_parts(dataset))


def part_label(what: str, name: str | None) -> str:
    """How messages name one dataset of a study field: ``train_dataset`` or ``train_dataset['sts']``."""
    return what if name is None else f"{what}[{name!r}]"


def describe_columns(dataset: Any) -> str:
    """The columns of a study dataset, for messages: a list, or a list per dataset of a mapping."""
    parts = dataset_parts(dataset)
    if len(parts) == 1 and parts[0][0] is None:
        return str(list(parts[0][1].column_names))
    return "; ".join(f"{name!r}: {list(part.column_names)}" for name, part in parts)


def head(dataset: Any, rows: int) -> Any:
    """The first ``rows`` rows of a study dataset, of each of its datasets for a mapping (same form)."""
    if isinstance(dataset, Mapping):
        return type(dataset)({name: part.select(range(min(rows, len(part)))) for name, part in dataset.items()})
    return dataset.select(range(min(rows, len(dataset))))


def subset_shares(sizes: Mapping[str, int], rows: int) -> dict[str, int]:
    """How many of ``rows`` subset rows each dataset of a mapping gets: in proportion to its size (largest
    remainders first, so they add up to ``rows``), at least one each, never more than it has."""
    total = sum(sizes.values())
    exact = {name: rows * size / total for name, size in sizes.items()}
    shares = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda n: shares[n] - exact[n])[: rows - sum(shares.values())]:
        shares[name] += 1
    return {name: min(max(share, 1), sizes[name]) for name, share in shares.items()}


def materialize(value: Any, what: str, *, allow_mapping: bool = True) -> Any:
    """The study field ``what`` as a ``Dataset`` (or, where ``allow_mapping``, a mapping of them: a
    ``DatasetDict`` as it is, a dict with its callables called), or None."""
    if value is None:
        return None
    if callable(value) and not hasattr(value, "column_names"):
        try:
            value = value()
        except Exception as exc:
            raise StudyDefinitionError(f"{what}() raised {type(exc).__name__}: {exc}") from exc
    if allow_mapping and _is_dataset_mapping(value):
        return _materialize_mapping(value, what)
    return _one_dataset(value, what)


def _is_dataset_mapping(value: Any) -> bool:
    """A DatasetDict, or a dict whose values are datasets or callables (a dict of column lists is not)."""
    import datasets

    if isinstance(value, datasets.DatasetDict):
        return True
    return isinstance(value, Mapping) and bool(value) and any(
        isinstance(v, datasets.Dataset) or (callable(v) and not isinstance(v, type)) for v in value.values())


def _materialize_mapping(value: Mapping[str, Any], what: str) -> Any:
    import datasets

    names = list(value)
    if isinstance(value, datasets.DatasetDict) and set(names) <= SPLIT_NAMES:
        raise StudyDefinitionError(
            f"{what} is a DatasetDict with the splits {names}; pick one, e.g. load_dataset(..., "
            f"split={next(iter(value), 'train')!r}) (several training sets are named after their data, e.g. "
            "DatasetDict(sts=..., pairs=...))"
        )
    for name in names:
        if not isinstance(name, str) or not name or "." in name:
            raise StudyDefinitionError(
                f"{what} has the key {name!r}; name each dataset with a non-empty string without dots (the "
                "names key the losses and the 'loss.<dataset>.<param>' space names), e.g. 'sts'"
            )
    parts = {name: materialize(part, part_label(what, name), allow_mapping=False) for name, part in value.items()}
    return value if isinstance(value, datasets.DatasetDict) else parts


def _one_dataset(value: Any, what: str) -> Any:
    import datasets

    if isinstance(value, datasets.IterableDataset):
        raise StudyDefinitionError(
            f"{what} is an IterableDataset; st-hpo needs a datasets.Dataset (it counts and subsets the rows): "
            "load it without streaming=True"
        )
    if not isinstance(value, datasets.Dataset):
        hint = {"DataFrame": "Dataset.from_pandas(df)", "list": "Dataset.from_list(rows)",
                "dict": "Dataset.from_dict(columns)"}.get(type(value).__name__, "Dataset.from_dict(columns)")
        raise StudyDefinitionError(
            f"{what} must be a datasets.Dataset (or a callable returning one), not {type(value).__name__}; "
            f"build one with e.g. {hint}"
        )
    return value


def for_one_trainer(value: Any) -> Any:
    """``value`` (a Dataset, a mapping of them, or None) as one trainer may change it: each Dataset a shallow
    copy, the Arrow data shared, in a new mapping of the same kind.

    A trainer with several datasets sets a transform on each of them in place (the dataset-name column),
    wrapping any transform there already: on the study's shared objects, every trial would wrap the last.
    """
    import copy

    import datasets

    if value is None:
        return None
    if isinstance(value, Mapping):
        parts = {name: copy.copy(part) for name, part in value.items()}
        return datasets.DatasetDict(parts) if isinstance(value, datasets.DatasetDict) else parts
    return copy.copy(value)
