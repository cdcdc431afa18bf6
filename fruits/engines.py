"""Inference engines: Keras (the source of truth) and ONNX Runtime (the fast path).

The driver prepares one broadcastable payload per engine: the Keras weights,
or the ONNX model written from the same weights file (cached on disk by the
weights' SHA-256), optionally quantized to int8 (cached by the fp32
model and the calibration sample). A Python worker turns the payload into a
`predict` function once; with the onnx engine it never imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fruits.config import ConfigError, package_version
from fruits.decoding import IMAGE_SIZE, decode, preprocess

Predict = Callable[[np.ndarray], np.ndarray]
# int8: the stem convolution and the first inverted-residual block (the first
# three Conv nodes) stay fp32. Quantizing them costs most of the accuracy
# (cosine to fp32 0.82 -> 0.98 when kept) for little speed (1.55x -> 1.65x).
FP32_LEADING_CONVS = 3
WEIGHTS_SHA256_KEY = "fruits.weights_sha256"  # in the converted model's metadata
QUANTIZED_PRODUCER = "onnx.quantize"  # what ONNX Runtime's quantize_static writes as the producer


def import_keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
    import keras

    return keras


def build_keras_model(weights: list[np.ndarray] | None = None, side: int = IMAGE_SIZE[0]):
    """MobileNetV2 without its classifier, global-average pooled (1280-d); the
    weights do not depend on the input side."""
    keras = import_keras()
    model = keras.applications.MobileNetV2(input_shape=(side, side, 3), include_top=False, weights=None, pooling="avg")
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
    precision: str = "fp32"
    calibration: dict | None = None  # int8 only: how the quantization was calibrated
    image_size: int = IMAGE_SIZE[0]  # the side images are resized to


def _onnx_path(weights_sha256: str, cache_dir: Path) -> Path:
    """v3: written by fruits.mobilenet_onnx (any input size), the weights' SHA-256 in its metadata."""
    return cache_dir / f"mobilenet_v2-{weights_sha256[:16]}-v3-fp32.onnx"


def _write_atomically(path: Path, content: bytes) -> None:
    """A concurrent run reads a whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    partial.write_bytes(content)
    partial.replace(path)


def onnx_model(weights_path: Path | None, weights_sha256: str, cache_dir: Path) -> Path:
    """The backbone as ONNX, written from the Keras weights file by
    `fruits.mobilenet_onnx` (no TensorFlow), once per weights file."""
    path = _onnx_path(weights_sha256, cache_dir)
    if not path.exists():
        if weights_path is None:
            raise ConfigError(f"no ONNX model for weights {weights_sha256[:16]} in {cache_dir}")
        from fruits import mobilenet_onnx

        model = mobilenet_onnx.build(weights_path, {WEIGHTS_SHA256_KEY: weights_sha256})
        _write_atomically(path, model.SerializeToString())
    return path


def weights_sha256_of(onnx_bytes: bytes, where: str) -> str:
    """The Keras weights' SHA-256 recorded in a model converted by `onnx_model`
    (read with ONNX Runtime: the cluster's nodes have no onnx or TensorFlow)."""
    import onnxruntime as ort

    try:
        metadata = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as exc:
        raise ConfigError(f"{where} is not an ONNX model: {str(exc).strip().splitlines()[0]}") from None
    sha256 = metadata.custom_metadata_map.get(WEIGHTS_SHA256_KEY)
    if not sha256:
        raise ConfigError(f"{where} was not converted by fruits (no {WEIGHTS_SHA256_KEY} in its metadata)")
    if metadata.producer_name == QUANTIZED_PRODUCER:  # would be cached, and run, as the fp32 model
        raise ConfigError(f"{where} is quantized (int8): pass the fp32 model, and --precision int8 to quantize")
    return sha256


def seed_onnx_cache(onnx_bytes: bytes, where: str, cache_dir: Path) -> str:
    """Put a model converted elsewhere (`fruits emr run` uploads one) where
    `onnx_model` finds it; returns the weights' SHA-256 it was converted from."""
    sha256 = weights_sha256_of(onnx_bytes, where)
    path = _onnx_path(sha256, cache_dir)
    if not path.exists():
        _write_atomically(path, onnx_bytes)
    return sha256


def calibration_digest(contents: Sequence[bytes]) -> str:
    """Identifies a calibration sample by its images' bytes, in any order."""
    digests = sorted(hashlib.sha256(content).hexdigest() for content in contents)
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def _calibration_inputs(contents: Sequence[bytes], side: int) -> np.ndarray:
    decoded = []
    for content in contents:
        try:
            decoded.append(decode(content, side))
        except Exception:  # a bad image is an error row later, not a calibration input
            continue
    if not decoded:
        raise ConfigError("--precision int8: no decodable image in the calibration sample")
    return preprocess(np.stack(decoded))


def int8_model(fp32_path: Path, contents: Sequence[bytes], digest: str, side: int = IMAGE_SIZE[0]) -> Path:
    """Static int8 quantization of the fp32 ONNX model (QDQ, per-channel weights,
    min-max activation ranges from ``contents`` at ``side`` pixels), cached next
    to it by ``digest`` and side."""
    path = fp32_path.with_name(fp32_path.name.replace("-fp32.onnx", f"-int8-{side}-{digest[:16]}.onnx"))
    if path.exists():
        return path
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    inputs = _calibration_inputs(contents, side)
    graph = onnx.load(str(fp32_path)).graph
    convs = [node.name for node in graph.node if node.op_type == "Conv"]  # in topological order
    input_name = graph.input[0].name

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(inputs[i : i + 32] for i in range(0, len(inputs), 32))

        def get_next(self) -> dict | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        optimized = Path(scratch) / "optimized.onnx"
        quant_pre_process(str(fp32_path), str(optimized))
        partial = Path(scratch) / "int8.onnx"
        quantize_static(
            str(optimized),
            str(partial),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=convs[:FP32_LEADING_CONVS],
        )
        partial.replace(path)  # atomic, as for the fp32 model
    return path


def prepare(
    engine: str,
    weights_path: Path | None,
    weights_sha256: str,
    cache_dir: Path,
    *,
    precision: str = "fp32",
    calibration: Sequence[bytes] = (),
    image_size: int = IMAGE_SIZE[0],
) -> Backbone:
    """The driver's side of an engine; int8 quantizes with ``calibration`` images."""
    if engine == "keras":
        if precision != "fp32":
            raise ConfigError("--precision int8 needs --engine onnx")
        versions = {"keras": package_version("keras")}
        return Backbone("keras", f"keras-{weights_sha256}", load_weights(weights_path), versions, image_size=image_size)
    if engine == "onnx":
        if not importlib.util.find_spec("onnxruntime"):
            raise ConfigError("--engine onnx needs onnxruntime (pip install onnxruntime), or use --engine keras")
        model = onnx_model(weights_path, weights_sha256, cache_dir)
        versions = {name: package_version(name) for name in ("onnxruntime", "onnx")}
        if precision == "fp32":
            return Backbone("onnx", f"onnx-{weights_sha256}", model.read_bytes(), versions, image_size=image_size)
        digest = calibration_digest(calibration)
        payload = int8_model(model, calibration, digest, image_size).read_bytes()
        details = {
            "method": "static, QDQ, per-channel int8 weights, uint8 activations (min-max)",
            "images": len(calibration),
            "sample_sha256": digest,
            "fp32_leading_convs": FP32_LEADING_CONVS,
        }
        key = f"onnx-int8-{image_size}-{weights_sha256}-{digest}"
        return Backbone("onnx", key, payload, versions, "int8", details, image_size)
    raise ConfigError(f"unknown engine {engine!r}")


def predictor(engine: str, payload, threads: int, side: int = IMAGE_SIZE[0]) -> Predict:
    """Build the engine in this process, with ``threads`` intra-op threads (the
    ONNX model takes any side; the Keras one is built for ``side``)."""
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
    model = build_keras_model(payload, side)
    return lambda batch: np.asarray(model.predict_on_batch(batch))
