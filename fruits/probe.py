"""Linear probe: how well a logistic regression separates classes in PCA space.

The quick, honest check that the features carry the fruit identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import StringIndexer
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float
    train_rows: int
    test_rows: int
    predictions: DataFrame  # label, prediction_label (strings), for confusion matrices

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "train_rows": self.train_rows, "test_rows": self.test_rows}


def linear_probe(
    projected: DataFrame,
    column: str = "pca",
    train_split: str = "Training",
    test_split: str = "Test",
    max_iter: int = 200,
) -> ProbeResult:
    """Train on ``train_split`` rows, score accuracy on ``test_split`` rows."""
    rows = projected.where(F.col("label").isNotNull()).select("split", "label", array_to_vector(column).alias("x"))
    train = rows.where(F.col("split") == train_split)
    test = rows.where(F.col("split") == test_split)
    indexer = StringIndexer(inputCol="label", outputCol="y", handleInvalid="keep").fit(train)
    model = LogisticRegression(featuresCol="x", labelCol="y", maxIter=max_iter).fit(indexer.transform(train))
    labels = F.array(*[F.lit(name) for name in indexer.labels])
    predictions = (
        model.transform(indexer.transform(test))
        .select("label", labels[F.col("prediction").cast("int")].alias("prediction_label"))
        .cache()
    )
    scored = predictions.agg(
        F.count("*").alias("n"), F.sum((F.col("label") == F.col("prediction_label")).cast("int")).alias("hits")
    ).first()
    accuracy = scored["hits"] / scored["n"] if scored["n"] else float("nan")
    return ProbeResult(accuracy=accuracy, train_rows=train.count(), test_rows=scored["n"], predictions=predictions)
