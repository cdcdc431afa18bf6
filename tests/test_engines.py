"""--onnx-model: only the fp32 model fruits converts is taken (fruits.engines)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from fruits import engines
from fruits.config import ConfigError, cache_dir
from fruits.features import file_sha256


@pytest.fixture(scope="module")
def converted(weights) -> bytes:
    return engines.onnx_model(weights, file_sha256(weights), Path(cache_dir()) / "models").read_bytes()


def with_changes(model_bytes: bytes, producer: str | None = None, drop_metadata: bool = False) -> bytes:
    model = onnx.load_from_string(model_bytes)
    if producer is not None:
        model.producer_name = producer
    if drop_metadata:
        del model.metadata_props[:]
    return model.SerializeToString()


def test_the_converted_model_gives_its_weights_sha256(converted, weights):
    assert engines.weights_sha256_of(converted, "model.onnx") == file_sha256(weights)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"producer": engines.QUANTIZED_PRODUCER}, "model.onnx is quantized (int8): pass the fp32 model"),
        ({"drop_metadata": True}, "model.onnx was not converted by fruits (no fruits.weights_sha256"),
    ],
)
def test_other_models_are_refused(converted, change, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        engines.weights_sha256_of(with_changes(converted, **change), "model.onnx")
    with pytest.raises(ConfigError, match="is not an ONNX model"):
        engines.weights_sha256_of(b"not a model", "model.onnx")
