import io

import numpy as np
import pandas as pd
from PIL import Image

from fruits.images import read_images
from fruits.plots import confusion, image_grid, projection_2d, sample_images, scree, variance_curve
from tests.conftest import SAMPLE


def test_variance_curve_marks_k_and_target():
    figure = variance_curve(np.array([0.6, 0.3, 0.1]), k=2, target=0.9)
    (ax,) = figure.axes
    curve, k_line, target_line = ax.get_lines()
    np.testing.assert_allclose(curve.get_ydata(), [0.6, 0.9, 1.0])
    assert list(k_line.get_xdata()) == [2, 2]
    assert list(target_line.get_ydata()) == [0.9, 0.9]


def test_scree_shows_the_first_components():
    (ax,) = scree(np.linspace(0.1, 0.001, 100), components=40).axes
    assert len(ax.patches) == 40


def test_projection_colours_only_the_biggest_classes():
    labels = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"]
    points = pd.DataFrame({"x": np.arange(13.0), "y": np.arange(13.0), "label": labels})
    (ax, *_) = projection_2d(points, classes=2).axes
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["other classes", "a", "b"]


def test_confusion_shows_the_classes_most_involved_in_errors():
    counts = pd.DataFrame(
        [("a", "a", 9), ("a", "b", 3), ("b", "b", 7), ("c", "c", 10), ("d", "d", 8), ("d", "c", 1)],
        columns=["label", "prediction_label", "count"],
    )
    ax = confusion(counts, classes=3).axes[0]
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["a", "b", "c"]
    np.testing.assert_array_equal(ax.images[0].get_array(), [[9, 3, 0], [0, 7, 0], [0, 0, 10]])
    assert "4 errors" in ax.get_title()


def test_sample_grid_shows_one_image_per_class(spark):
    samples = sample_images(read_images(spark, str(SAMPLE)), classes=12)
    assert list(samples["label"]) == ["Synthetic Apple 1", "Synthetic Banana 1", "Synthetic Grape"]
    assert Image.open(io.BytesIO(samples["content"][0])).size == (100, 100)
    figure = image_grid(samples, columns=2)
    assert [ax.get_title() for ax in figure.axes if ax.images] == list(samples["label"])
