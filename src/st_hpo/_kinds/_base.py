"""The contract of a model kind: what differs between SentenceTransformer, CrossEncoder, SparseEncoder and
MultiVectorEncoder training, asked in one place instead of tested for in every module.

Each kind is one small module that builds a :class:`ModelKind`; :func:`st_hpo._kinds.kind_named` and
:func:`st_hpo._kinds.declared_kind` choose one. sentence-transformers' classes are imported only when a
kind is asked for them, so ``import st_hpo`` stays light.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["ModelKind", "is_model_factory", "is_module"]

#: Where sentence-transformers keeps what every kind shares (a loss or evaluator from here fits any kind).
SHARED_PACKAGES = ("sentence_transformers.base", "sentence_transformers.util", "torch.", "transformers.")


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """One trainable kind of sentence-transformers model.

    Attributes:
        name: the kind's name in st-hpo (``"cross-encoder"``): the tag ``st_hpo.model_kind``, ``Study(kind=)``.
        model_class_name: the model class, e.g. ``"CrossEncoder"``.
        package: the sentence-transformers package of the kind, whose ``__init__`` exports the model,
            arguments and trainer classes, and under which its losses and evaluators live.
        side_metrics: endings of evaluator metrics that are not the objective but matter to users of the
            kind (a sparse retriever's active dimensions), shown in ``status`` and the reports.
        mlflow_flavor: True when MLflow has a flavor for the kind (``mlflow.sentence_transformers``);
            otherwise its kept model is logged as a plain folder that loads back with the model class.
    """

    name: str
    model_class_name: str
    package: str
    side_metrics: tuple[str, ...] = ()
    mlflow_flavor: bool = False

    # --- classes --------------------------------------------------------------------------------------

    def _export(self, suffix: str) -> type:
        return getattr(importlib.import_module(self.package), f"{self.model_class_name}{suffix}")

    def model_class(self) -> type:
        return self._export("")

    def args_class(self) -> type:
        """The kind's training-arguments class, e.g. ``CrossEncoderTrainingArguments``."""
        return self._export("TrainingArguments")

    def trainer_class(self) -> type:
        return self._export("Trainer")

    @property
    def args_class_name(self) -> str:
        return f"{self.model_class_name}TrainingArguments"

    # --- what belongs to the kind -----------------------------------------------------------------------

    def owns_model(self, model: Any) -> bool:
        return isinstance(model, self.model_class())

    def owns_args(self, args: Any) -> bool:
        return isinstance(args, self.args_class())

    def package_of(self, obj: Any) -> str | None:
        """The other kind's package that ``obj``'s class comes from, or None when it fits this kind.

        The most derived sentence-transformers class in the class's MRO decides (a user's subclass of
        ``CoSENTLoss`` is a sentence-transformer loss; ``SparseMultipleNegativesRankingLoss``, which
        subclasses a sentence-transformer loss, is a sparse-encoder one). Shared classes fit every kind.
        """
        cls = obj if isinstance(obj, type) else type(obj)
        for c in cls.__mro__:
            module = c.__module__
            if not module.startswith("sentence_transformers."):
                continue
            if module.startswith(self.package) or module.startswith(SHARED_PACKAGES):
                return None
            return ".".join(module.split(".")[:2])
        return None

    # --- models ---------------------------------------------------------------------------------------

    def load(self, name_or_path: str, *, device: str = "cpu") -> Any:
        """The base model from a hub id or a folder (once per process; see :meth:`seeded`)."""
        with self.seeded():
            return self.model_class()(name_or_path, device=device)

    @staticmethod
    @contextlib.contextmanager
    def seeded() -> Iterator[None]:
        """Load with a fixed seed, so that weights new to a checkpoint (a reranker's head on a bi-encoder's
        weights, a sparse model's projection) are the same in every process: workers start from one base."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            yield

    def load_saved(self, path: str, *, device: str = "cpu") -> Any:
        """A model this kind saved (a kept best model), from its folder."""
        return self.model_class()(str(path), device=device, local_files_only=True)

    def copy_for_trial(self, base: Any) -> Any:
        """A trial's own model: a copy of the base weights in memory, never the base itself."""
        return copy.deepcopy(base)

    def save(self, model: Any, path: str) -> None:
        model.save(str(path))

    def load_hint(self, path: str) -> str:
        """How a user loads a kept model of this kind, as code."""
        return f"{self.model_class_name}({str(path)!r})"

    def log_to_mlflow(self, tracking_uri: str, run_id: str, model_dir: str, register_as: str | None, *,
                      model: Any = None) -> tuple[str, str | None]:
        """Log a saved model on run ``run_id`` (and register it as ``register_as``); (model URI, version).

        ``model``: the model in memory, when the caller has it (else it is loaded from ``model_dir``).
        With MLflow's ``sentence_transformers`` flavor for a SentenceTransformer (``mlflow.pyfunc`` and
        ``mlflow.sentence_transformers.load_model`` load it); for the other kinds, the saved folder as the
        ``model`` artifact, which the kind's model class loads back.
        """
        from st_hpo._kinds._models import log_model_folder, log_sentence_transformer

        if self.mlflow_flavor:
            return log_sentence_transformer(tracking_uri, run_id, model or self.load_saved(model_dir), register_as)
        return log_model_folder(tracking_uri, run_id, str(model_dir), register_as)

    def registry_hint(self, uri: str) -> str:
        """How a user loads a registered model of this kind, as code."""
        if self.mlflow_flavor:
            return f"mlflow.sentence_transformers.load_model({uri!r})"
        return f"{self.model_class_name}(mlflow.artifacts.download_artifacts({uri!r}))"

    # --- costs (see st_hpo._execution._costs) ----------------------------------------------------------

    def cost_inputs(self, text_columns: list[list[str]], limit: int) -> list[Any]:
        """Up to ``limit`` inputs the model is timed on (``cost.encode_ms``), from the text columns of an eval
        set (equal lengths): its sentences, row by row (a pair's first sentence, then its second, ...)."""
        return [text for row in zip(*text_columns, strict=False) for text in row][:limit]

    def encode_for_cost(self, model: Any, inputs: list[Any], batch_size: int) -> Any:
        """Run the model on ``inputs`` as a user of the kind does (``encode``); returns its output."""
        return model.encode(inputs, batch_size=batch_size, show_progress_bar=False)

    def embedding_dim(self, model: Any) -> int | None:
        """The size of one embedding the model returns (after its ``truncate_dim``); None when it has none."""
        dim = getattr(model, "get_embedding_dimension", lambda: None)()
        return None if dim is None else int(dim)

    def sparsity_costs(self, metrics: dict[str, Any], output: Any) -> dict[str, float]:
        """``{"active_dims": ..., "flops": ...}`` for a sparse kind (from the evaluator's ``metrics`` or the
        ``output`` of :meth:`encode_for_cost`); nothing for a dense one."""
        return {}

    def side_metrics_of(self, metrics: dict[str, Any]) -> dict[str, float]:
        """The metrics among ``metrics`` that :attr:`side_metrics` names."""
        return {k: float(v) for k, v in metrics.items()
                if isinstance(v, (int, float)) and k.endswith(self.side_metrics)} if self.side_metrics else {}


def is_module(value: Any) -> bool:
    """True when ``value`` is a ``torch.nn.Module`` instance (without importing torch: one exists only if
    torch is imported already)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


def is_model_factory(model: Any) -> bool:
    """True when ``Study.model`` is a ``(params) -> model`` factory, not a name, path or model instance."""
    return callable(model) and not is_module(model)
