"""Figures for the notebooks. Spark does the aggregation; only small pandas
frames reach these functions. Each returns a matplotlib Figure (no pyplot
state), which Jupyter displays and `Figure.savefig` writes."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from fruits.decoding import FORMATS


def sample_images(images: DataFrame, classes: int = 12) -> pd.DataFrame:
    """The first image (by path) of the first ``classes`` labels: label, content.
    Paths are chosen first, so only those few files are read."""
    first = F.row_number().over(Window.partitionBy("label").orderBy("path"))
    chosen = [
        row["path"]
        for row in images.where(F.col("label").isNotNull())
        .select("label", "path", first.alias("rank"))
        .where(F.col("rank") == 1)
        .orderBy("label")
        .limit(classes)
        .collect()
    ]
    return images.where(F.col("path").isin(chosen)).orderBy("label").select("label", "content").toPandas()


def image_grid(samples: pd.DataFrame, columns: int = 6) -> Figure:
    rows = max(1, -(-len(samples) // columns))
    figure = Figure(figsize=(2 * columns, 2.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (_, sample) in zip(axes, samples.iterrows(), strict=False):
        ax.imshow(Image.open(io.BytesIO(sample["content"]), formats=FORMATS).convert("RGB"))
        ax.set_title(sample["label"], fontsize=9)
    for ax in axes:
        ax.axis("off")
    return figure


def variance_curve(explained_variance: np.ndarray, k: int, target: float | None) -> Figure:
    """Cumulative explained variance with the chosen k (and target) marked."""
    cumulative = np.cumsum(explained_variance)
    figure = Figure(figsize=(7, 4), layout="constrained")
    ax = figure.subplots()
    ax.plot(np.arange(1, len(cumulative) + 1), cumulative, label="cumulative explained variance")
    ax.axvline(k, color="tab:red", linestyle="--", label=f"k = {k}")
    if target is not None:
        ax.axhline(target, color="tab:gray", linestyle=":", label=f"target = {target:g}")
    ax.set(xlabel="components", ylabel="explained variance", ylim=(0, 1.01), xscale="log")
    ax.legend(loc="lower right")
    return figure


def scree(explained_variance: np.ndarray, components: int = 40) -> Figure:
    shown = explained_variance[:components]
    figure = Figure(figsize=(7, 3.5), layout="constrained")
    ax = figure.subplots()
    ax.bar(np.arange(1, len(shown) + 1), shown)
    ax.set(xlabel="component", ylabel="explained variance ratio", title=f"Scree plot (first {len(shown)})")
    return figure


def projection_points(projected: DataFrame, max_points: int = 5000, seed: int = 0) -> pd.DataFrame:
    """First two PCA coordinates and the label, at most ~max_points rows."""
    total = projected.count()
    if total > max_points:
        projected = projected.sample(fraction=max_points / total, seed=seed)
    return projected.select(F.col("pca")[0].alias("x"), F.col("pca")[1].alias("y"), "label").toPandas()


def projection_2d(points: pd.DataFrame, classes: int = 10) -> Figure:
    """Scatter of the first two components, the ``classes`` biggest classes coloured."""
    top = points["label"].value_counts().index[:classes]
    figure = Figure(figsize=(8, 6), layout="constrained")
    ax = figure.subplots()
    others = points[~points["label"].isin(top)]
    if len(others):
        ax.scatter(others["x"], others["y"], s=4, color="lightgray", label="other classes")
    for i, label in enumerate(sorted(top)):
        chosen = points[points["label"] == label]
        ax.scatter(chosen["x"], chosen["y"], s=8, color=f"C{i % 10}", marker="o" if i < 10 else "x", label=label)
    ax.set(xlabel="PC 1", ylabel="PC 2", title="Images in the first two principal components")
    ax.legend(fontsize=8, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    return figure


def confusion_counts(predictions: DataFrame) -> pd.DataFrame:
    """(label, prediction_label) -> counts, aggregated in Spark."""
    return predictions.groupBy("label", "prediction_label").count().toPandas()


def confusion(counts: pd.DataFrame, classes: int = 12) -> Figure:
    """Confusion matrix of the ``classes`` classes most involved in errors."""
    matrix = counts.pivot_table(index="label", columns="prediction_label", values="count", fill_value=0, aggfunc="sum")
    labels = sorted(set(matrix.index) | set(matrix.columns))
    matrix = matrix.reindex(index=labels, columns=labels, fill_value=0)
    errors = matrix.to_numpy() - np.diag(np.diag(matrix.to_numpy()))
    involvement = pd.Series(errors.sum(axis=0) + errors.sum(axis=1), index=labels)
    chosen = involvement.sort_values(ascending=False, kind="stable").index[:classes]
    shown = matrix.loc[chosen, chosen]
    figure = Figure(figsize=(1 + 0.55 * len(chosen), 0.8 + 0.5 * len(chosen)), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(shown.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(chosen)), chosen, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(chosen)), chosen, fontsize=8)
    for (row, col), value in np.ndenumerate(shown.to_numpy()):
        if value:
            ax.text(col, row, int(value), ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=f"Most confused classes ({int(errors.sum())} errors in all)")
    figure.colorbar(image, ax=ax, shrink=0.8)
    return figure
