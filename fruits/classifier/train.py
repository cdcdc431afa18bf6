"""`fruits train`: a multinomial logistic regression (Spark ML) on a run's PCA
features, trained on the Training split and scored on Test (or, without a Test
split, on a fifth of the images chosen by a hash of their path)."""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass

import numpy as np
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits import output
from fruits.config import ConfigError, to_uri

CLASSIFIER = "classifier"
MODEL = "model"  # the Spark ML LogisticRegressionModel
METRICS = "metrics.json"
CONFUSION = "confusion.png"
HELD_OUT_PERCENT = 20  # of the images, by path hash, when the input has no Test split


@dataclass(frozen=True)
class Classifier:
    model: LogisticRegressionModel
    labels: list[str]  # class index -> label (alphabetical)

    def predict(self, projected: DataFrame) -> DataFrame:
        """(path, label, pca, ...) -> (path, label, predicted, probability array<double>)."""
        names = F.array(*[F.lit(name) for name in self.labels])
        vectors = projected.select("path", "label", array_to_vector("pca").alias("x"))
        return self.model.transform(vectors).select(
            "path",
            "label",
            names[F.col("prediction").cast("int")].alias("predicted"),
            vector_to_array("probability").alias("probability"),
        )


def split_rows(projected: DataFrame) -> tuple[DataFrame, DataFrame, str]:
    """Training and test rows, and how the test rows were chosen."""
    labelled = projected.where(F.col("label").isNotNull())
    if not labelled.where(F.col("split") == "Test").isEmpty():
        return labelled.where(F.col("split") == "Training"), labelled.where(F.col("split") == "Test"), "split Test"
    held_out = F.pmod(F.xxhash64("path"), F.lit(100)) < HELD_OUT_PERCENT
    return labelled.where(~held_out), labelled.where(held_out), f"{HELD_OUT_PERCENT}% of the images by path hash"


def metrics(truth: list[str], predicted: list[str], labels: list[str]) -> dict:
    """Accuracy, macro F1 and per-class precision and recall (0 where undefined)."""
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for true, guess in zip(truth, predicted, strict=True):
        counts[index[true], index[guess]] += 1
    hits = np.diag(counts).astype(float)
    precision = np.divide(hits, counts.sum(axis=0), out=np.zeros_like(hits), where=counts.sum(axis=0) > 0)
    recall = np.divide(hits, counts.sum(axis=1), out=np.zeros_like(hits), where=counts.sum(axis=1) > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    present = counts.sum(axis=1) > 0  # macro F1 over the classes the test set has
    return {
        "accuracy": float(hits.sum() / counts.sum()) if counts.sum() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "support": int(counts[i].sum())}
            for i, label in enumerate(labels)
        },
    }


def confusion_table(report: dict):
    """metrics.json's confusion counts as the table `fruits.plots.confusion` draws."""
    import pandas as pd

    return pd.DataFrame(report["confusion"], columns=["label", "prediction_label", "count"])


def train(spark: SparkSession, root: str, target: str | None = None, reg: float = 0.0) -> dict:
    """Fit on ``root``/pca, write the model, metrics.json and confusion.png under
    ``target`` (default ``root``/classifier) and record them in the manifest."""
    from fruits.plots import confusion  # matplotlib, only once there is something to draw

    root = to_uri(root)
    projected = output.read_parquet(spark, root, "pca")  # refuses a run without a manifest
    train_rows, test_rows, test_set = split_rows(projected)
    labels = sorted(row["label"] for row in train_rows.select("label").distinct().collect())
    if not labels:
        raise ConfigError(f"{root}/pca has no labelled training images (expected <split>/<class>/<file> paths)")
    if len(labels) == 1:
        raise ConfigError(f"{root}/pca has a single class ({labels[0]}): nothing to tell apart")
    index = F.element_at(
        F.create_map(*[F.lit(item) for i, name in enumerate(labels) for item in (name, i)]), F.col("label")
    )
    fitting = train_rows.select(array_to_vector("pca").alias("x"), index.cast("double").alias("y"))
    estimator = LogisticRegression(featuresCol="x", labelCol="y", family="multinomial", regParam=reg, maxIter=300)
    classifier = Classifier(estimator.fit(fitting), labels)

    known = test_rows.where(F.col("label").isin(labels))  # a class never trained on cannot be predicted
    pairs = classifier.predict(known).select("label", "predicted").collect()
    scores = metrics([row["label"] for row in pairs], [row["predicted"] for row in pairs], labels)
    target = to_uri(target) if target else f"{root}/{CLASSIFIER}"
    manifest = output.read_manifest(spark, root)
    if manifest.pop("classifier", None):  # never a manifest naming a classifier half rewritten
        output.write_manifest(spark, root, manifest)
    output.delete(spark, target)
    classifier.model.write().save(output.literal_path(f"{target}/{MODEL}"))
    report = {
        "labels": labels,
        "train_rows": train_rows.count(),
        "test_rows": len(pairs),
        "test_set": test_set,
        "test_rows_of_unknown_classes": test_rows.count() - len(pairs),
        "reg": reg,
        "pca_k": len(projected.first()["pca"]),
        **scores,
    }  # and "confusion": [label, predicted, count] for every pair seen
    counts = Counter((row["label"], row["predicted"]) for row in pairs)
    report["confusion"] = [[true, guess, n] for (true, guess), n in sorted(counts.items())]
    output.write_text(spark, f"{target}/{METRICS}", json.dumps(report, indent=2) + "\n")
    buffer = io.BytesIO()
    confusion(confusion_table(report)).savefig(buffer, format="png", dpi=110)
    output.write_bytes(spark, f"{target}/{CONFUSION}", buffer.getvalue())

    manifest["classifier"] = {
        "output": target,
        "accuracy": round(scores["accuracy"], 6),
        "macro_f1": round(scores["macro_f1"], 6),
        "classes": len(labels),
        "test_set": test_set,
        "reg": reg,
    }
    output.write_manifest(spark, root, manifest)
    return report


def load(spark: SparkSession, target: str) -> Classifier:
    target = to_uri(target)
    labels = json.loads(output.read_text(spark, f"{target}/{METRICS}"))["labels"]
    return Classifier(LogisticRegressionModel.load(output.literal_path(f"{target}/{MODEL}")), labels)
