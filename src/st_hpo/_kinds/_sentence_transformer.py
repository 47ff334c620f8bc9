"""SentenceTransformer: bi-encoders (embedding models), the default kind."""

from st_hpo._kinds._base import ModelKind

KIND = ModelKind(name="sentence-transformer", model_class_name="SentenceTransformer",
                 package="sentence_transformers.sentence_transformer", mlflow_flavor=True)
