"""Spark ML PCA on the feature vectors, with k chosen from explained variance."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import PCA, StandardScaler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits.config import to_uri
from fruits.output import literal_path, read_text

# Cumulative sums of float64 ratios can end a hair under 1.0.
_TOLERANCE = 1e-9


def choose_k(explained_variance: np.ndarray, target: float) -> int:
    """Smallest k whose cumulative explained variance reaches ``target``."""
    cumulative = np.cumsum(explained_variance)
    reached = np.flatnonzero(cumulative >= target - _TOLERANCE)
    return int(reached[0]) + 1 if reached.size else len(cumulative)


@dataclass(frozen=True)
class PcaFit:
    model: PipelineModel
    k: int
    explained_variance: np.ndarray  # per component, over all components fitted

    @property
    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.explained_variance)


def _pipeline(k: int, standardize: bool) -> Pipeline:
    stages = []
    column = "vector"
    if standardize:
        stages.append(StandardScaler(inputCol=column, outputCol="scaled", withMean=True, withStd=True))
        column = "scaled"
    stages.append(PCA(k=k, inputCol=column, outputCol="pca_vector"))
    return Pipeline(stages=stages)


def fit_pca(features: DataFrame, k: int | None = None, variance: float = 0.95, standardize: bool = False) -> PcaFit:
    """Fit on the rows that have features.

    A first fit over every component gives the explained-variance curve;
    a second keeps only k of them (``k`` given, or chosen from ``variance``).
    """
    vectors = features.where(F.col("features").isNotNull()).select(array_to_vector("features").alias("vector")).cache()
    try:
        dim = len(vectors.first()["vector"])
        full = _pipeline(dim, standardize).fit(vectors)
        explained = full.stages[-1].explainedVariance.toArray()
        chosen = min(k, dim) if k is not None else choose_k(explained, variance)
        model = full if chosen == dim else _pipeline(chosen, standardize).fit(vectors)
    finally:
        vectors.unpersist()
    return PcaFit(model=model, k=chosen, explained_variance=explained)


def load_model(uri: str) -> PipelineModel:
    """Load a saved ``pca_model`` folder (glob characters in ``uri`` are literal)."""
    return PipelineModel.load(literal_path(uri))


def project(model: PipelineModel, features: DataFrame) -> DataFrame:
    """(path, label, split, features, ...) -> (path, label, split, pca array<float>)."""
    vectors = features.where(F.col("features").isNotNull()).select(
        "path", "label", "split", array_to_vector("features").alias("vector")
    )
    return model.transform(vectors).select(
        "path", "label", "split", vector_to_array("pca_vector", dtype="float32").alias("pca")
    )


def read_variance(spark, root: str) -> np.ndarray:
    """Per-component explained variance from a run's explained_variance.csv."""
    text = read_text(spark, f"{to_uri(root)}/explained_variance.csv")
    return np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, usecols=1, ndmin=1)


def variance_csv(explained_variance: np.ndarray) -> str:
    lines = ["component,explained_variance,cumulative"]
    for i, (ratio, total) in enumerate(zip(explained_variance, np.cumsum(explained_variance), strict=True), 1):
        lines.append(f"{i},{ratio:.10g},{total:.10g}")
    return "\n".join(lines) + "\n"
