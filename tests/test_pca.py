import numpy as np
import pytest

from fruits.pca import choose_k, fit_pca, variance_csv


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
