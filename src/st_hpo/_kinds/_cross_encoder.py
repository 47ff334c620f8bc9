"""CrossEncoder: rerankers that score a (query, document) pair with one forward pass."""

from __future__ import annotations

from typing import Any

from st_hpo._kinds._base import ModelKind


class CrossEncoderKind(ModelKind):
    def load(self, name_or_path: str, *, device: str = "cpu") -> Any:
        """A reranker checkpoint keeps its head; from a bi-encoder's or a bare BERT's weights the new head
        gets one output (a relevance score), where transformers' default would be two classes."""
        from transformers import AutoConfig

        try:
            architectures = AutoConfig.from_pretrained(name_or_path).architectures or []
        except Exception:  # noqa: BLE001 - not a transformers folder: let the model class decide
            architectures = []
        has_head = any("ForSequenceClassification" in name for name in architectures)
        with self.seeded():
            return self.model_class()(name_or_path, device=device, **({} if has_head else {"num_labels": 1}))

    def cost_inputs(self, text_columns: list[list[str]], limit: int) -> list[Any]:
        """A reranker scores pairs: the first two text columns, row by row (a lone column: each text with itself)."""
        first = text_columns[0] if text_columns else []
        second = text_columns[1] if len(text_columns) > 1 else first
        return [list(pair) for pair in zip(first, second, strict=False)][:limit]

    def encode_for_cost(self, model: Any, inputs: list[Any], batch_size: int) -> Any:
        return model.predict(inputs, batch_size=batch_size, show_progress_bar=False)

    def embedding_dim(self, model: Any) -> int | None:
        """A reranker returns a score, no embedding."""
        return None


KIND = CrossEncoderKind(name="cross-encoder", model_class_name="CrossEncoder",
                        package="sentence_transformers.cross_encoder")
