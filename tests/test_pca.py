import json

import numpy as np
import pytest

from fruits.pca import choose_k, fit_pca, load_model, variance_csv
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
    assert fit.model.stages[-1].getK() == 3
    assert fit_pca(features, k=5).k == 5


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
        stages = [type(stage).__name__ for stage in load_model(str(out / "pca_model")).stages]
        assert stages == (["StandardScalerModel", "PCAModel"] if standardize else ["PCAModel"])
    assert curves[False][0] > 0.99 > curves[True][0]
