"""Inference engines: Keras (the source of truth) and ONNX Runtime (the fast path).

The driver prepares one broadcastable payload per engine: the Keras weights,
or the ONNX model converted from the Keras model (cached on disk by weights
SHA-256 and input size). A Python worker turns the payload into a `predict`
function once; with the onnx engine it never imports TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fruits.config import ConfigError, package_version
from fruits.images import IMAGE_SIZE

Predict = Callable[[np.ndarray], np.ndarray]


def import_keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
    import keras

    return keras


def build_keras_model(weights: list[np.ndarray] | None = None):
    """MobileNetV2 without its classifier, global-average pooled (1280-d)."""
    keras = import_keras()
    model = keras.applications.MobileNetV2(input_shape=(*IMAGE_SIZE, 3), include_top=False, weights=None, pooling="avg")
    if weights is not None:
        model.set_weights(weights)
    return model


def load_weights(path: Path) -> list[np.ndarray]:
    """Read a Keras MobileNetV2 no-top weights file into a list of arrays."""
    model = build_keras_model()
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise ConfigError(f"{path} is not MobileNetV2 no-top Keras weights: {exc}") from exc
    return model.get_weights()


@dataclass(frozen=True)
class Backbone:
    """What the driver broadcasts: the engine, a cache key, and its payload."""

    engine: str
    key: str
    payload: object  # list of Keras weight arrays, or ONNX model bytes
    versions: dict[str, str]


def onnx_model(weights_path: Path, weights_sha256: str, cache_dir: Path) -> Path:
    """The Keras model exported to ONNX (tf2onnx), converted once per weights file;
    a cached conversion needs neither Keras nor TensorFlow."""
    path = cache_dir / f"mobilenet_v2-{weights_sha256[:16]}-{IMAGE_SIZE[0]}-fp32.onnx"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        model = build_keras_model(load_weights(weights_path))
        model.predict_on_batch(np.zeros((1, *IMAGE_SIZE, 3), np.float32))  # export needs a called model
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
        model.export(str(partial), format="onnx", verbose=False)
        partial.replace(path)  # atomic: a concurrent run never reads half a file
    return path


def prepare(engine: str, weights_path: Path, weights_sha256: str, cache_dir: Path) -> Backbone:
    if engine == "keras":
        return Backbone(
            "keras", f"keras-{weights_sha256}", load_weights(weights_path), {"keras": package_version("keras")}
        )
    if engine == "onnx":
        if not importlib.util.find_spec("onnxruntime"):
            raise ConfigError("--engine onnx needs onnxruntime (pip install onnxruntime), or use --engine keras")
        payload = onnx_model(weights_path, weights_sha256, cache_dir).read_bytes()
        versions = {name: package_version(name) for name in ("onnxruntime", "tf2onnx", "onnx", "keras")}
        return Backbone("onnx", f"onnx-{weights_sha256}", payload, versions)
    raise ConfigError(f"unknown engine {engine!r}")


def predictor(engine: str, payload, threads: int) -> Predict:
    """Build the engine in this process, with ``threads`` intra-op threads."""
    if engine == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        return lambda batch: session.run(None, {input_name: batch})[0]
    import_keras()
    import tensorflow as tf

    try:  # only possible before TensorFlow's first op in this process
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    model = build_keras_model(payload)
    return lambda batch: np.asarray(model.predict_on_batch(batch))
