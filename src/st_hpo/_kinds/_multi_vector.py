"""MultiVectorEncoder: late-interaction retrievers (ColBERT-style), one vector per token."""

from st_hpo._kinds._base import ModelKind

KIND = ModelKind(name="multi-vector-encoder", model_class_name="MultiVectorEncoder",
                 package="sentence_transformers.multi_vector_encoder")
