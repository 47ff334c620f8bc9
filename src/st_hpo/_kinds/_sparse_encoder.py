"""SparseEncoder: sparse retrievers (SPLADE, CSR), whose evaluators report sparsity next to quality."""

from st_hpo._kinds._base import ModelKind

KIND = ModelKind(name="sparse-encoder", model_class_name="SparseEncoder",
                 package="sentence_transformers.sparse_encoder",
                 side_metrics=("active_dims", "sparsity_ratio", "avg_flops"))
