"""What a worker process prepares once and every trial reuses: datasets, the evaluator, base weights.

Every trial still gets its own model (a fresh copy of the base weights, made in memory rather than read
from disk again) and its own loss module; nothing a trial trains is shared with another.
"""

from __future__ import annotations

import copy
import gc
import inspect
import logging
from collections.abc import Mapping
from typing import Any

from st_hpo._definition._args import pick_device
from st_hpo._definition._compat import evaluator_base
from st_hpo._definition._datasets import describe_columns, materialize, row_count, subset_shares
from st_hpo._definition._study import Study, is_model_factory, is_module
from st_hpo._kinds import declared_kind, kind_named, resolve_kind
from st_hpo._kinds._base import ModelKind
from st_hpo.exceptions import StudyDefinitionError

__all__ = ["StudyResources", "auto_subset_rows", "pick_device"]

logger = logging.getLogger(__name__)


#: ``intermediate_eval_rows="auto"``: eval sets of at least this many rows get a subset for the evaluations
#: during training, of :data:`AUTO_SUBSET_FRACTION` of their rows but at most :data:`AUTO_SUBSET_MAX`
#: rows. Measured in ``benchmarks/eval_subset.py`` (results/eval_subset.md): see :func:`auto_subset_rows`.
AUTO_SUBSET_MIN_EVAL = 1000
AUTO_SUBSET_FRACTION = 0.5
AUTO_SUBSET_MAX = 500


def auto_subset_rows(eval_rows: int) -> int | None:
    """The subset size of ``intermediate_eval_rows="auto"`` for an eval set of ``eval_rows`` rows; None: all.

    Measured with ``benchmarks/eval_subset.py`` (MiniLM, STSb dev, 1,500 pairs; 9 models from the base model
    to fine-tunes 0.18 worse; 200 random subsets per size): at 500 rows, Kendall's tau between the subset's
    and the whole set's ranking was 0.82 on average, and practically all misorderings were between models less than
    0.01 apart (the measured tau equals that of all 26 pairs 0.01 or more apart kept in order); at 100-200
    rows pairs further apart flipped too. Half of a smaller set is less than 500 rows: below 1,000 rows,
    all of them. The final evaluation of every finished trial is on all rows.
    """
    if eval_rows < AUTO_SUBSET_MIN_EVAL:
        return None
    return min(AUTO_SUBSET_MAX, int(eval_rows * AUTO_SUBSET_FRACTION))


class StudyResources:
    """The study's heavy inputs, loaded at most once per process."""

    def __init__(self, study: Study) -> None:
        self.study = study
        self._train: Any = None
        self._eval: Any = None
        self._evaluator: Any = None
        self._subset: Any = None
        self._subset_evaluator: Any = None
        self._base_model: Any = None
        self._kind: Any = None
        self._trials_started = 0
        self._test: Any = None
        self._test_evaluator: Any = None

    @property
    def train_dataset(self) -> Any:
        if self._train is None:
            self._train = materialize(self.study.train_dataset, "train_dataset")
        return self._train

    @property
    def eval_dataset(self) -> Any:
        if self._eval is None and self.study.eval_dataset is not None:
            self._eval = materialize(self.study.eval_dataset, "eval_dataset")
        return self._eval

    @property
    def evaluator(self) -> Any:
        if self._evaluator is None:
            self._evaluator = self.build_evaluator(self.eval_dataset)
        return self._evaluator

    @property
    def train_rows(self) -> int:
        """Rows of the training set (of all its datasets together)."""
        return row_count(self.train_dataset)

    @property
    def eval_rows(self) -> int:
        """Rows of the eval set (of all its datasets together); 0 without one."""
        return row_count(self.eval_dataset)

    @property
    def subset_rows(self) -> int | None:
        """Rows of the eval subset that intermediate evaluations use, or None when they use all rows.

        ``intermediate_eval_rows="auto"`` (the default) is :func:`auto_subset_rows` of the eval set's size,
        where st-hpo can build an evaluator on a subset (the study's evaluator is a factory, or there is
        none and the objective is the eval loss); an evaluator instance holds its own data: all rows.
        """
        rows = self.study.intermediate_eval_rows
        if rows is None or self.eval_dataset is None:
            return None
        if rows == "auto":
            if isinstance(self.study.evaluator, evaluator_base()):
                return None
            rows = auto_subset_rows(self.eval_rows)
        if rows is None or rows >= self.eval_rows:
            return None
        return rows

    @property
    def eval_subset(self) -> Any:
        """A fixed, seeded random subset of the eval set (the same in every worker), or the whole set.

        Of an eval set of several datasets, a subset of each: ``intermediate_eval_rows`` shared among them in
        proportion to their sizes (at least one row each), in the same form (a ``DatasetDict`` or dict)."""
        if self.subset_rows is None:
            return self.eval_dataset
        if self._subset is None:
            import random

            def pick(part: Any, rows: int) -> Any:
                return part.select(sorted(random.Random(0).sample(range(len(part)), rows)))

            eval_ds = self.eval_dataset
            if isinstance(eval_ds, Mapping):
                shares = subset_shares({name: len(part) for name, part in eval_ds.items()}, self.subset_rows)
                self._subset = type(eval_ds)({name: pick(part, shares[name]) for name, part in eval_ds.items()})
            else:
                self._subset = pick(eval_ds, self.subset_rows)
        return self._subset

    @property
    def intermediate_evaluator(self) -> Any:
        """The evaluator of evaluations during training: on :attr:`eval_subset` when the study asks."""
        if self.subset_rows is None:
            return self.evaluator
        if self._subset_evaluator is None:
            self._subset_evaluator = self.build_evaluator(self.eval_subset)
        return self._subset_evaluator

    def build_evaluator(self, eval_dataset: Any) -> Any:
        """The study's evaluator, built from ``eval_dataset`` when the study gives a factory; None when the
        study has none (its objective is the eval loss)."""
        SentenceEvaluator = evaluator_base()  # noqa: N806
        evaluator = self.study.evaluator
        if evaluator is None or isinstance(evaluator, SentenceEvaluator):
            return evaluator
        if callable(evaluator):
            if eval_dataset is None:
                raise StudyDefinitionError(
                    "evaluator is a factory (eval_dataset) -> evaluator but the study has no eval_dataset; add one"
                )
            try:
                evaluator = evaluator(eval_dataset)
            except Exception as exc:
                raise StudyDefinitionError(
                    f"the evaluator factory raised {type(exc).__name__} on eval_dataset (columns "
                    f"{describe_columns(eval_dataset)}): {exc}; it is called as evaluator(eval_dataset)"
                ) from exc
        if not isinstance(evaluator, SentenceEvaluator):
            raise StudyDefinitionError(
                f"evaluator must be a SentenceEvaluator or a callable returning one, not {type(evaluator).__name__}"
                "; e.g. evaluator=lambda ds: EmbeddingSimilarityEvaluator(ds['sentence1'], ds['sentence2'], "
                "ds['score'], name='sts-dev')"
            )
        return evaluator

    @property
    def kind(self) -> Any:
        """The study's model kind (:class:`st_hpo._kinds.ModelKind`): what validation resolved, else what the
        study's parts declare, else SentenceTransformer."""
        if self._kind is None:
            self._kind = declared_kind(self.study) or kind_named("sentence-transformer")
        return self._kind

    @kind.setter
    def kind(self, kind: ModelKind) -> None:
        self._kind = kind

    def base_model(self) -> Any:
        """The base model, once per process on the CPU (only when ``study.model`` is not a factory): loaded
        with the kind's model class from a name or path, or a copy of the study's model instance (which is
        never changed)."""
        if self._base_model is None and not isinstance(self.study.model, str):
            self._base_model = copy.deepcopy(self.study.model).to("cpu")
        if self._base_model is None:
            try:
                self._base_model = self.kind.load(self.study.model, device="cpu")
            except Exception as exc:
                raise StudyDefinitionError(
                    f"could not load model {self.study.model!r} as a {self.kind.model_class_name}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        return self._base_model

    def freeze_for_trial(self) -> bool:
        """Hide the objects that exist before a trial from the garbage collector; True if it froze them.

        Libraries, base weights, datasets, tracker and storage are some 10^6 objects, and a full
        collection scans them all (0.3-1 s on a CPU of this kind): transformers and accelerate run one in
        every ``train()``, st-hpo one after every trial. Frozen, those collections scan only what the
        trial allocated, which is where its garbage is. The caller unfreezes (``gc.unfreeze()``) after the
        trial's final collection, leaving older garbage to Python's own collections. The first trial of a
        study collects fully first, so validation's model copies are gone before any trial trains. Does
        nothing when objects are already frozen (by the application, or a trial still running).
        """
        if gc.get_freeze_count():
            return False
        if self._trials_started == 0:
            gc.collect()
        self._trials_started += 1
        gc.freeze()
        return True

    def new_model(self, params: dict[str, Any], model_params: dict[str, Any]) -> Any:
        """A fresh model for one trial."""
        if is_model_factory(self.study.model):
            with ModelKind.seeded():  # weights the factory makes new (a head) start alike in every trial
                model = self.study.model(params)
            kind = resolve_kind(self.study, model)  # one of the four kinds, and the study's if it declares one
            if self._kind is not None and kind is not self._kind:
                raise StudyDefinitionError(
                    f"the model factory returned a {kind.model_class_name} for params {params}, but validation "
                    f"found it returns a {self._kind.model_class_name}; a study trains one model kind"
                )
            return model
        model = self.kind.copy_for_trial(self.base_model())
        for name, value in model_params.items():
            if not hasattr(model, name):
                raise StudyDefinitionError(
                    f"the space samples 'model.{name}' but {type(model).__name__} has no attribute {name!r}; "
                    "use a model factory (params) -> model to consume it"
                )
            setattr(model, name, value)
        return model

    def new_loss(self, model: Any, params: dict[str, Any], loss_params: dict[str, Any]) -> Any:
        """A fresh loss module for one trial; for a study whose loss is a dict (or a factory returning one),
        a dict of fresh loss modules keyed by dataset name. A loss class in a dict gets the sampled
        ``loss.<dataset>.<param>`` values of its dataset."""
        loss = params.get("loss", self.study.loss)  # a loss the space sampled (a Choice)
        if isinstance(loss, Mapping):
            return {name: _build_loss(part, model, params, _params_of(loss_params, name), f"loss[{name!r}]")
                    for name, part in loss.items()}
        built = _build_loss(loss, model, params, loss_params, "loss")
        if isinstance(built, Mapping):
            for name, part in built.items():
                _check_built(part, f"loss factory's dict entry {name!r}")
            return dict(built)
        return built

    @property
    def test_dataset(self) -> Any:
        """The held-out test set (``Study.test_dataset``), or None."""
        if self._test is None and self.study.test_dataset is not None:
            self._test = materialize(self.study.test_dataset, "test_dataset", allow_mapping=False)
        return self._test

    @property
    def test_evaluator(self) -> Any:
        """The evaluator of the held-out test set."""
        if self._test_evaluator is None:
            self._test_evaluator = self.build_test_evaluator(self.test_dataset)
        return self._test_evaluator

    def build_test_evaluator(self, test_dataset: Any) -> Any:
        """``Study.test_evaluator`` (built on ``test_dataset`` when it is a factory), else the study's
        evaluator factory applied to ``test_dataset``."""
        chosen = self.study.test_evaluator
        if chosen is None and self.study.evaluator is None:
            raise StudyDefinitionError(
                f"test_dataset needs a test_evaluator: the study has no evaluator to point at the test set (its "
                f"objective {self.study.objective!r} is the trainer's loss on eval_dataset); give "
                "test_evaluator=... (an evaluator, or a callable (test_dataset) -> evaluator) and "
                "test_objective=<the metric it reports>"
            )
        if chosen is None:
            if isinstance(self.study.evaluator, evaluator_base()) or not callable(self.study.evaluator):
                raise StudyDefinitionError(
                    "test_dataset needs a test_evaluator (an evaluator, or a callable (test_dataset) -> evaluator): "
                    "the study's evaluator holds its own data, so it cannot be pointed at the test set"
                )
            chosen = self.study.evaluator
        if isinstance(chosen, evaluator_base()):
            return chosen
        if test_dataset is None:
            raise StudyDefinitionError("test_evaluator is a factory (test_dataset) -> evaluator but the study "
                                       "has no test_dataset; add one")
        which = "test_evaluator" if self.study.test_evaluator is not None else "the evaluator factory"
        try:
            evaluator = chosen(test_dataset)
        except Exception as exc:
            raise StudyDefinitionError(
                f"{which} raised {type(exc).__name__} on test_dataset (columns {describe_columns(test_dataset)}): "
                f"{exc}; it is called as {'test_evaluator' if which == 'test_evaluator' else 'evaluator'}"
                "(test_dataset), so the test set needs the columns it reads"
            ) from exc
        if not isinstance(evaluator, evaluator_base()):
            raise StudyDefinitionError(
                f"test_evaluator must be an evaluator or return one, not {type(evaluator).__name__}"
            )
        return evaluator


def _params_of(loss_params: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The ``loss.<dataset>.<param>`` values of one dataset's loss, as ``{param: value}``."""
    return {key[len(dataset) + 1 :]: value for key, value in loss_params.items() if key.startswith(f"{dataset}.")}


def _build_loss(loss: Any, model: Any, params: dict[str, Any], loss_params: dict[str, Any], what: str) -> Any:
    """A loss class built as ``loss(model, **loss_params)``, or a factory called as ``loss(model, params)``
    (which may return a dict of losses only where ``what`` is the study's whole loss)."""
    if inspect.isclass(loss):
        return loss(model, **loss_params)
    built = loss(model, params)
    if isinstance(built, Mapping) and what == "loss":
        return built
    _check_built(built, f"{what} factory" if what != "loss" else "loss factory")
    return built


def _check_built(built: Any, what: str) -> None:
    if not is_module(built):
        shown = built.__name__ if isinstance(built, type) else type(built).__name__
        raise StudyDefinitionError(
            f"the {what} returned {shown}, not a loss module; it must return one built on the model "
            "it is given, e.g. lambda model, params: CoSENTLoss(model)"
        )
