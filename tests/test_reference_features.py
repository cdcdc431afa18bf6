"""Fast parity: the pipeline's features of a few real images equal Keras' own
(tests/fixtures/reference_features.npz, made by make_reference_features.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fruits import engines
from fruits.config import cache_dir, default_engine
from fruits.features import BatchBuffers, featurize_contents, file_sha256
from tests.conftest import DATA, require

REFERENCE = Path(__file__).parent / "fixtures" / "reference_features.npz"
KEPT_DIMENSIONS = slice(0, 1280, 4)  # as the fixture script keeps them


@pytest.fixture(scope="module")
def reference(weights) -> dict:
    with np.load(REFERENCE) as stored:
        reference = {name: stored[name] for name in stored.files}
    if str(reference["weights_sha256"]) != file_sha256(weights):
        pytest.fail(f"{REFERENCE.name} was made with other weights: run tests/fixtures/make_reference_features.py")
    return reference


def test_features_equal_the_keras_reference_on_real_images(reference, weights):
    data = require(DATA, "Fruits-360 data").parent
    contents = [(data / str(name)).read_bytes() for name in reference["images"]]
    assert [hashlib.sha256(content).hexdigest() for content in contents] == list(reference["sha256"])
    engine = default_engine()
    backbone = engines.prepare(engine, weights, file_sha256(weights), Path(cache_dir()) / "models")
    result = featurize_contents(
        engines.predictor(engine, backbone.payload, threads=2), contents, BatchBuffers(8)
    ).to_pandas()
    assert list(result["error"]) == [None] * len(contents)
    features = np.stack(result["features"])[:, KEPT_DIMENSIONS]
    expected = reference["features"]
    assert features.shape == expected.shape == (7, 320)
    cosine = (features * expected).sum(1) / np.linalg.norm(features, axis=1) / np.linalg.norm(expected, axis=1)
    print(f"max abs diff {np.abs(features - expected).max():.2e}, min cosine {cosine.min():.8f}")
    assert cosine.min() >= 0.99999
    np.testing.assert_allclose(features, expected, rtol=0, atol=2e-4)  # measured: 1.6e-5
