"""Imports that moved between sentence-transformers releases (3.x-5.x and 6.x)."""

from __future__ import annotations

from typing import Any

__all__ = ["batch_sampler_enums", "evaluator_base"]


def evaluator_base() -> Any:
    """The evaluator base class the trainer accepts."""
    try:
        from sentence_transformers.base.evaluation import BaseEvaluator
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.evaluation import SentenceEvaluator as BaseEvaluator
    return BaseEvaluator


def batch_sampler_enums() -> tuple[Any, Any]:
    """(BatchSamplers, MultiDatasetBatchSamplers)."""
    try:
        from sentence_transformers.sentence_transformer.training_args import (
            BatchSamplers,
            MultiDatasetBatchSamplers,
        )
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.training_args import BatchSamplers, MultiDatasetBatchSamplers
    return BatchSamplers, MultiDatasetBatchSamplers
