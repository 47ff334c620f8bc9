"""SparseEncoder: sparse retrievers (SPLADE, CSR), whose evaluators report sparsity next to quality."""

from __future__ import annotations

from typing import Any

from st_hpo._kinds._base import ModelKind


class SparseEncoderKind(ModelKind):
    def sparsity_costs(self, metrics: dict[str, Any], output: Any) -> dict[str, float]:
        """Active dimensions and FLOPS as the evaluator reported them (an information-retrieval evaluator's
        ``corpus_active_dims`` and ``avg_flops``; a similarity evaluator's ``active_dims``); what it did not
        report is computed from ``output``, the embeddings of the eval sentences: the mean number of non-zero
        dimensions per embedding, and FLOPS as the expected number of multiplications of a dot product
        between two of them, ``sum_j p_j**2`` with ``p_j`` the share of embeddings where dimension j is active
        (Paria et al., 2020; the evaluators' ``avg_flops`` with the same sentences as queries and documents)."""
        found = {}
        for name, endings in (("active_dims", ("_corpus_active_dims", "_active_dims")), ("flops", ("_avg_flops",))):
            for ending in endings:
                value = next((v for k, v in metrics.items() if k.endswith(ending) and isinstance(v, (int, float))),
                             None)
                if value is not None:
                    found[name] = float(value)
                    break
        if len(found) < 2 and output is not None:
            found = {**_sparsity_of(output), **found}
        return found


def _sparsity_of(output: Any) -> dict[str, float]:
    """Active dimensions and FLOPS of a batch of embeddings (a 2-D tensor, sparse or dense, or a list of 1-D)."""
    import torch

    embeddings = output if isinstance(output, torch.Tensor) else torch.stack([torch.as_tensor(e) for e in output])
    embeddings = embeddings.coalesce() if embeddings.is_sparse else embeddings.to_sparse().coalesce()
    rows, dims = embeddings.shape
    if rows == 0:
        return {}
    active = embeddings.indices()[1][embeddings.values() != 0]
    share = torch.bincount(active, minlength=dims).double() / rows
    return {"active_dims": active.numel() / rows, "flops": float((share * share).sum())}


KIND = SparseEncoderKind(name="sparse-encoder", model_class_name="SparseEncoder",
                         package="sentence_transformers.sparse_encoder",
                         side_metrics=("active_dims", "sparsity_ratio", "avg_flops"))
