import json

import numpy as np
import pytest

from fruits.config import ConfigError
from fruits.pca import choose_k, fit_pca, load_model, project, variance_csv
from tests.test_cli import run_cli


@pytest.mark.parametrize(
    ("curve", "target", "k"),
    [
        ([0.5, 0.3, 0.15, 0.05], 0.95, 3),
        ([0.5, 0.3, 0.15, 0.05], 0.80, 2),
        ([0.5, 0.3, 0.15, 0.05], 0.81, 3),
        ([0.5, 0.3, 0.15, 0.05], 1.0, 4),
        ([0.9, 0.1], 0.5, 1),
        ([0.1] * 10, 1.0, 10),  # sums to 0.9999999999999999
        ([0.0] * 1280, 0.95, 1),  # identical images: no variance to keep
    ],
)
def test_choose_k_is_smallest_k_reaching_target(curve, target, k):
    assert choose_k(np.array(curve), target) == k


def test_variance_csv_lists_every_component_with_cumulative():
    lines = variance_csv(np.array([0.75, 0.25])).splitlines()
    assert lines == ["component,explained_variance,cumulative", "1,0.75,0.75", "2,0.25,1"]


def test_fit_pca_finds_the_rank_of_low_rank_data(spark):
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 12))
    points = rng.normal(size=(200, 3)) * [10.0, 5.0, 2.0] @ basis + rng.normal(scale=1e-3, size=(200, 12))
    rows = [(f"p{i}", [float(v) for v in row]) for i, row in enumerate(points)] + [("bad", None)]
    features = spark.createDataFrame(rows, "path string, features array<float>")
    fit = fit_pca(features, variance=0.999)
    assert fit.k == 3
    assert fit.explained_variance.shape == (12,)
    assert fit.cumulative[-1] == pytest.approx(1.0)
    assert fit.model.k == 3
    assert fit_pca(features, k=5).k == 5


def test_fit_pca_matches_spark_ml_and_centres_the_projection(spark):
    """Same curve and components (up to sign) as Spark ML's PCA within 1e-6;
    the projection differs from Spark ML's only by the projected mean."""
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import array_to_vector, vector_to_array

    rng = np.random.default_rng(3)
    points = (rng.normal(size=(300, 8)) * np.arange(8, 0, -1.0) @ rng.normal(size=(8, 8)) + 5.0).astype(np.float32)
    rows = [(f"p{i}", "K", "Training", [float(v) for v in row]) for i, row in enumerate(points)]
    features = spark.createDataFrame(rows, "path string, label string, split string, features array<float>")
    ours = fit_pca(features.repartition(3), k=4)
    vectors = features.select("path", array_to_vector("features").alias("vector"))
    spark_ml = PCA(k=4, inputCol="vector", outputCol="pca").fit(vectors)
    np.testing.assert_allclose(ours.explained_variance[:4], spark_ml.explainedVariance.toArray(), atol=1e-6)
    theirs = spark_ml.pc.toArray()
    np.testing.assert_allclose(ours.model.components * np.sign(ours.model.components[0] * theirs[0]), theirs, atol=1e-6)

    projected = {r["path"]: r["pca"] for r in project(ours.model, features).collect()}
    mine = np.array([projected[f"p{i}"] for i in range(len(points))])
    np.testing.assert_allclose(mine.mean(axis=0), 0.0, atol=1e-3)
    uncentred = spark_ml.transform(vectors).select("path", vector_to_array("pca").alias("pca")).collect()
    shift = points.astype(np.float64).mean(axis=0) @ theirs
    signs = np.sign(ours.model.components[0] * theirs[0])
    expected = {r["path"]: (np.array(r["pca"]) - shift) * signs for r in uncentred}
    np.testing.assert_allclose(mine, [expected[f"p{i}"] for i in range(len(points))], rtol=1e-4, atol=1e-4)


def test_fit_pca_refuses_a_single_image(spark):
    features = spark.createDataFrame([("p", [1.0, 2.0])], "path string, features array<float>")
    with pytest.raises(ConfigError, match="at least 2 images"):
        fit_pca(features)


def explained_variance_ratios(points: np.ndarray, standardize: bool) -> np.ndarray:
    """numpy's reference: eigenvalues of the (correlation or covariance) matrix, as shares."""
    centred = points - points.mean(axis=0)
    if standardize:
        centred /= points.std(axis=0, ddof=1)
    eigenvalues = np.linalg.eigvalsh(np.cov(centred, rowvar=False))[::-1]
    return eigenvalues / eigenvalues.sum()


def test_standardize_fits_the_correlation_not_the_covariance(spark, capsys, tmp_path):
    """One feature with 100x the scale of the others: unstandardized it is the
    first component on its own; standardized, every feature counts alike."""
    rng = np.random.default_rng(7)
    points = rng.normal(size=(120, 6)) @ rng.normal(size=(6, 6))
    points[:, 0] *= 100.0
    points = points.astype(np.float32).astype(np.float64)  # what the features column holds
    rows = [(f"file:/x/Training/K/{i}.jpg", "K", "Training", [float(v) for v in row]) for i, row in enumerate(points)]
    schema = "path string, label string, split string, features array<float>"
    curves = {}
    for standardize in (False, True):
        out = tmp_path / f"standardize-{standardize}"
        spark.createDataFrame(rows, schema).write.parquet(str(out / "features"))
        flag = ["--standardize"] if standardize else []
        code, _, err = run_cli(capsys, "pca", "--input", out, "--pca-variance", "0.9", *flag)
        assert code == 0, err
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["pca_standardized"] is standardize
        curves[standardize] = np.loadtxt(out / "explained_variance.csv", delimiter=",", skiprows=1, usecols=1)
        np.testing.assert_allclose(curves[standardize], explained_variance_ratios(points, standardize), atol=1e-6)
        model = load_model(spark, str(out / "pca_model"))
        assert model.standardized is standardize
        np.testing.assert_allclose(model.explained_variance, curves[standardize], atol=1e-9)
    assert curves[False][0] > 0.99 > curves[True][0]
