"""`fruits export`: one self-contained ONNX model for the app, composed with
the onnx library from the parts a run already has, with no retraining:

    image uint8 (N, S, S, 3), RGB, S = the run's --image-size
    -> / 127.5 - 1                        (fruits.decoding.preprocess)
    -> MobileNetV2 backbone               (the run's fp32 or int8 ONNX model)
    -> ((x - mean) * scale) @ components  (the run's PCA, pca_model/pca.npz)
    -> x @ coefficients.T + intercepts -> softmax   (`fruits train`'s model)
    -> probabilities float32 (N, classes)

The app resizes the photo to S x S (bilinear, after EXIF rotation) itself, as
`fruits.decoding.decode` does; labels and provenance are in the metadata.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pyspark.sql import SparkSession

import fruits
from fruits import engines, output
from fruits.classifier import metadata as keys
from fruits.classifier.train import CLASSIFIER, METRICS, load
from fruits.config import ConfigError, cache_dir, to_uri
from fruits.features import file_sha256, resolve_weights
from fruits.images import read_images, sample_contents
from fruits.pca import load_model


def _backbone(spark: SparkSession, manifest: dict, precision: str, weights: str | None) -> bytes:
    """The run's backbone: from the conversion cache, else written from the weights
    (``weights`` or the run's own file); int8 calibrated on the run's input, as the run was."""
    sha256 = manifest["weights_sha256"]
    weights_path = None
    candidate = weights or manifest.get("weights")
    if candidate and (candidate == "imagenet" or Path(candidate).expanduser().is_file()):
        weights_path = resolve_weights(candidate)
        if file_sha256(weights_path) != sha256:
            raise ConfigError(f"{candidate} are not the weights the features were made with ({sha256[:16]}...)")
    calibration = sample_contents(read_images(spark, manifest["input"]), 256) if precision == "int8" else ()
    backbone = engines.prepare(
        "onnx",
        weights_path,
        sha256,
        Path(cache_dir()) / "models",
        precision=precision,
        calibration=calibration,
        image_size=manifest.get("image_size", 224),
    )
    return backbone.payload


def compose(backbone: bytes, pca, coefficients: np.ndarray, intercepts: np.ndarray, *, side: int, metadata: dict):
    """The app's model: uint8 image in, class probabilities out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    net = onnx.load_from_string(backbone)
    graph = net.graph
    images, features = graph.input[0].name, graph.output[0].name

    def constant(name: str, value: np.ndarray):
        return numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name)

    head = [
        constant("app/127.5", np.array(127.5)),
        constant("app/one", np.array(1.0)),
        constant("app/pca_mean", pca.mean),
        constant("app/pca_scale", pca.scale),
        constant("app/pca_components", pca.components),
        constant("app/classifier_weights", coefficients.T),
        constant("app/classifier_bias", intercepts),
    ]
    before = [
        helper.make_node("Cast", ["image"], ["app/pixels"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["app/pixels", "app/127.5"], ["app/halved"]),
        helper.make_node("Sub", ["app/halved", "app/one"], [images]),
    ]
    after = [
        helper.make_node("Sub", [features, "app/pca_mean"], ["app/centred"]),
        helper.make_node("Mul", ["app/centred", "app/pca_scale"], ["app/scaled"]),
        helper.make_node("MatMul", ["app/scaled", "app/pca_components"], ["pca"]),
        helper.make_node("MatMul", ["pca", "app/classifier_weights"], ["app/weighted"]),
        helper.make_node("Add", ["app/weighted", "app/classifier_bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    app = helper.make_graph(
        before + list(graph.node) + after,
        "fruits_classifier",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", side, side, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(intercepts)])],
        list(graph.initializer) + head,
    )
    model = helper.make_model(app, opset_imports=list(net.opset_import), producer_name="fruits")
    model.ir_version = net.ir_version
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model


def latency_ms(model: bytes, side: int, repeat: int = 20) -> float:
    """Mean time to classify one image with ONNX Runtime on one core (after a warm-up)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).integers(0, 256, (1, side, side, 3), dtype=np.uint8)
    session.run(None, {"image": image})
    started = time.perf_counter()
    for _ in range(repeat):
        session.run(None, {"image": image})
    return (time.perf_counter() - started) / repeat * 1000


def export(
    spark: SparkSession, root: str, target: str, *, precision: str | None = None, weights: str | None = None
) -> dict:
    """Write the app's model for run ``root`` to ``target``; returns what was written."""
    root = to_uri(root)
    manifest = output.read_manifest(spark, root)
    if not manifest:
        raise ConfigError(f"{root} has no manifest.json: not a finished `fruits run`")
    trained = manifest.get("classifier", {}).get("output") or f"{root}/{CLASSIFIER}"
    if not output.exists(spark, f"{trained}/{METRICS}"):
        raise ConfigError(f"no classifier in {root}: run `fruits train --input {root}` first")
    classifier = load(spark, trained)
    report = json.loads(output.read_text(spark, f"{trained}/{METRICS}"))
    pca = load_model(spark, f"{root}/pca_model")
    precision = precision or manifest.get("precision", "fp32")
    side = manifest.get("image_size", 224)
    metadata = {
        keys.LABELS: json.dumps(classifier.labels),
        keys.IMAGE_SIZE: str(side),
        keys.INPUT: f"image: uint8 (batch, {side}, {side}, 3), RGB, resized bilinear after EXIF rotation",
        keys.PRECISION: precision,
        keys.WEIGHTS_SHA256: manifest["weights_sha256"],
        keys.PCA_K: str(pca.k),
        keys.TEST_ACCURACY: f"{report['accuracy']:.6f}",
        keys.FRUITS_VERSION: fruits.__version__,
    }
    model = compose(
        _backbone(spark, manifest, precision, weights),
        pca,
        classifier.model.coefficientMatrix.toArray(),
        classifier.model.interceptVector.toArray(),
        side=side,
        metadata=metadata,
    ).SerializeToString()
    output.write_bytes(spark, to_uri(target), model)
    return {
        "output": to_uri(target),
        "bytes": len(model),
        "precision": precision,
        "classes": len(classifier.labels),
        "pca_k": pca.k,
        "image_size": side,
        "test_accuracy": report["accuracy"],
        "latency_ms_one_core": round(latency_ms(model, side), 2),
    }
