"""PCA of the feature vectors: the covariance accumulated per partition with
numpy, one symmetric eigendecomposition on the driver, k chosen from the
explained variance, all rows projected in one job.

The algorithm is Spark ML's (distributed covariance, local decomposition), but
numpy's LAPACK solves the 1280x1280 problem in a fraction of a second where
the JVM's pure-Java fallback takes tens of seconds, and a single pass replaces
Spark ML's two fits (the curve, then k). Unlike Spark ML's ``PCAModel`` the
projection is centred: ``pca = ((x - mean) * scale) @ components``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from fruits.config import ConfigError, to_uri
from fruits.output import read_bytes, read_text, write_bytes
from fruits.session import FLOAT_VECTOR
from fruits.worker_imports import skip_rereading_unchanged_zips

MODEL_FILE = "pca.npz"
# Cumulative sums of float64 ratios can end a hair under 1.0.
_TOLERANCE = 1e-9


def choose_k(explained_variance: np.ndarray, target: float) -> int:
    """Smallest k whose cumulative explained variance reaches ``target`` (1 when
    there is no variance at all, as for identical images)."""
    cumulative = np.cumsum(explained_variance)
    reached = np.flatnonzero(cumulative >= target - _TOLERANCE)
    return int(reached[0]) + 1 if reached.size else 1


@dataclass(frozen=True)
class PcaModel:
    """Everything the projection needs, as plain arrays (so an app can apply it too)."""

    mean: np.ndarray  # (dim,)
    scale: np.ndarray  # (dim,): 1/std when standardized (0 for a constant feature), else ones
    components: np.ndarray  # (dim, k), columns by decreasing variance
    explained_variance: np.ndarray  # (dim,): share of each component, over all of them

    @property
    def k(self) -> int:
        return self.components.shape[1]

    @property
    def standardized(self) -> bool:
        return not np.all(self.scale == 1.0)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return ((np.asarray(vectors, np.float64) - self.mean) * self.scale) @ self.components

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **{name: getattr(self, name) for name in self.__dataclass_fields__})
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PcaModel:
        with np.load(io.BytesIO(data)) as arrays:
            return cls(**{name: arrays[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class PcaFit:
    model: PcaModel
    k: int
    explained_variance: np.ndarray  # per component, over all components

    @property
    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.explained_variance)


@dataclass(frozen=True)
class Moments:
    """Count, mean and centred scatter matrix of some rows; merged pairwise with
    Chan et al.'s update, which stays accurate where sum(x x^T) - n mean mean^T
    would cancel."""

    count: int
    mean: np.ndarray
    scatter: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray) -> Moments:
        mean = rows.mean(axis=0)
        centred = rows - mean
        return cls(len(rows), mean, centred.T @ centred)

    def merge(self, other: Moments) -> Moments:
        if not other.count:
            return self
        if not self.count:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        scatter = self.scatter + other.scatter + np.outer(delta, delta) * (self.count * other.count / count)
        return Moments(count, mean, scatter)


def _matrix(batch: pa.RecordBatch, column: str) -> np.ndarray:
    """A list<float> column of equal-length, non-null lists as a float64 matrix."""
    lists = batch.column(column)
    values = lists.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float64).reshape(len(lists), -1) if len(lists) else np.empty((0, 0))


def _partition_moments(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """One row per partition: its count, mean and, to keep the transfer small,
    its centred rows when there are fewer rows than dimensions (the driver
    forms their scatter), else its scatter matrix (batches folded in as they come)."""
    total = Moments(0, np.zeros(0), np.zeros((0, 0)))
    pending: list[np.ndarray] = []
    for batch in batches:
        if batch.num_rows:
            pending.append(_matrix(batch, "features"))
        if pending and (total.count or sum(map(len, pending)) >= pending[0].shape[1]):
            total, pending = total.merge(Moments.of(np.concatenate(pending))), []
    if total.count:
        if pending:
            total = total.merge(Moments.of(np.concatenate(pending)))
        count, mean, payload = total.count, total.mean, total.scatter
    elif pending:
        rows = np.concatenate(pending)
        count, mean = len(rows), rows.mean(axis=0)
        payload = rows - mean
    else:
        return
    blob = io.BytesIO()
    np.save(blob, payload)
    yield pa.RecordBatch.from_pydict(
        {"count": [count], "mean": [mean.tobytes()], "payload": [blob.getvalue()]},
        pa.schema([("count", pa.int64()), ("mean", pa.binary()), ("payload", pa.binary())]),
    )


def _moments_of(row) -> Moments:
    payload = np.load(io.BytesIO(row["payload"]))
    scatter = payload if payload.shape[0] == payload.shape[1] else payload.T @ payload
    return Moments(row["count"], np.frombuffer(row["mean"], np.float64), scatter)


# The driver merges one (count, mean, scatter) per partition: at most this many
# (dim^2 doubles each, 13 MB for 1280 dimensions) however large the cluster.
MAX_MOMENT_PARTITIONS = 16


def feature_moments(features: DataFrame) -> Moments:
    """One job: moments per partition, merged on the driver."""
    rows = features.where(F.col("features").isNotNull()).select("features")
    parts = min(features.sparkSession.sparkContext.defaultParallelism, MAX_MOMENT_PARTITIONS)
    schema = "count long, mean binary, payload binary"
    total = Moments(0, np.zeros(0), np.zeros((0, 0)))
    for row in rows.coalesce(parts).mapInArrow(_partition_moments, schema).collect():
        total = total.merge(_moments_of(row))
    if not total.count:
        raise ConfigError("no image has features (all failed): nothing to fit")
    return total


def fit_pca(features: DataFrame, k: int | None = None, variance: float = 0.95, standardize: bool = False) -> PcaFit:
    """Fit on the rows that have features: k given, or the smallest reaching ``variance``."""
    moments = feature_moments(features)
    if moments.count < 2:
        raise ConfigError("PCA needs at least 2 images with features, got 1")
    covariance = moments.scatter / (moments.count - 1)
    std = np.sqrt(np.diag(covariance))
    # As Spark ML's StandardScaler: a constant feature scales to 0.
    scale = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0) if standardize else np.ones_like(std)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance * np.outer(scale, scale))
    eigenvalues, eigenvectors = np.clip(eigenvalues[::-1], 0.0, None), eigenvectors[:, ::-1]
    # A deterministic sign: each component's largest entry is positive.
    signs = np.sign(eigenvectors[np.abs(eigenvectors).argmax(axis=0), np.arange(eigenvectors.shape[1])])
    eigenvectors *= np.where(signs == 0, 1.0, signs)
    explained = eigenvalues / eigenvalues.sum() if eigenvalues.sum() > 0 else np.zeros_like(eigenvalues)
    chosen = min(k, len(explained)) if k is not None else choose_k(explained, variance)
    model = PcaModel(
        mean=moments.mean, scale=scale, components=eigenvectors[:, :chosen].copy(), explained_variance=explained
    )
    return PcaFit(model=model, k=chosen, explained_variance=explained)


def project(model: PcaModel, features: DataFrame) -> DataFrame:
    """(path, label, split, features, ...) -> (path, label, split, pca array<float>)."""
    rows = features.where(F.col("features").isNotNull()).select("path", "label", "split", "features")

    def project_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        skip_rereading_unchanged_zips()
        for batch in batches:
            if not batch.num_rows:
                continue
            projected = model.transform(_matrix(batch, "features")).astype(np.float32)
            offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int32) * model.k)
            pca = pa.ListArray.from_arrays(offsets, pa.array(projected.ravel(), pa.float32()))
            yield pa.RecordBatch.from_arrays(
                [batch.column("path"), batch.column("label"), batch.column("split"), pca],
                ["path", "label", "split", "pca"],
            )

    schema = StructType([*rows.select("path", "label", "split").schema.fields, StructField("pca", FLOAT_VECTOR)])
    return rows.mapInArrow(project_batches, schema)


def save_model(spark: SparkSession, model: PcaModel, root: str) -> None:
    write_bytes(spark, f"{root}/{MODEL_FILE}", model.to_bytes())


def load_model(spark: SparkSession, root: str) -> PcaModel:
    """The model of a ``pca_model`` folder (an .npz of mean, scale, components and
    explained_variance), on any Hadoop file system."""
    return PcaModel.from_bytes(read_bytes(spark, f"{to_uri(root)}/{MODEL_FILE}"))


def read_variance(spark, root: str) -> np.ndarray:
    """Per-component explained variance from a run's explained_variance.csv."""
    text = read_text(spark, f"{to_uri(root)}/explained_variance.csv")
    return np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, usecols=1, ndmin=1)


def variance_csv(explained_variance: np.ndarray) -> str:
    lines = ["component,explained_variance,cumulative"]
    for i, (ratio, total) in enumerate(zip(explained_variance, np.cumsum(explained_variance), strict=True), 1):
        lines.append(f"{i},{ratio:.10g},{total:.10g}")
    return "\n".join(lines) + "\n"
