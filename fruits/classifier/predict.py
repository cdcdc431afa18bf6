"""`fruits predict`: classify photos with the app's ONNX model, as the app
would: ONNX Runtime and the pipeline's own decoder, no Spark, no TensorFlow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fruits.classifier import metadata as keys
from fruits.config import ConfigError
from fruits.decoding import decode, describe_error

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (label, probability), most likely first
    error: str | None = None

    def line(self) -> str:
        return "\t".join([self.path, *(f"{label}\t{probability:.4f}" for label, probability in self.top)])

    def as_json(self) -> str:
        if self.error:
            return json.dumps({"path": self.path, "error": self.error})
        top = [{"label": label, "probability": round(probability, 6)} for label, probability in self.top]
        return json.dumps({"path": self.path, "top": top})


class AppModel:
    """The exported model with its labels and input side, from its metadata."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        if not path.is_file():
            raise ConfigError(f"model not found: {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one photo at a time, as on a phone
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ConfigError(f"{path} is not an ONNX model: {str(exc).strip().splitlines()[0]}") from None
        found = self.session.get_modelmeta().custom_metadata_map
        if keys.LABELS not in found:
            raise ConfigError(f"{path} is not a model written by `fruits export` (no {keys.LABELS} in its metadata)")
        self.labels: list[str] = json.loads(found[keys.LABELS])
        self.side = int(found[keys.IMAGE_SIZE])

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, side, side, 3) uint8 -> (N, classes)."""
        return self.session.run(None, {"image": pixels})[0]

    def classify(self, path: Path, top: int) -> Prediction:
        try:
            content = path.read_bytes()
        except OSError as exc:  # unreadable (permissions, gone since listed): this photo's error only
            return Prediction(str(path), [], f"cannot read: {exc.strerror or type(exc).__name__}")
        try:
            pixels = decode(content, self.side)
        except Exception as exc:  # as in the pipeline: a bad image is an error, not a crash
            return Prediction(str(path), [], describe_error(content, exc))
        probabilities = self.probabilities(pixels[None])[0]
        best = np.argsort(-probabilities, kind="stable")[:top]
        return Prediction(str(path), [(self.labels[i], float(probabilities[i])) for i in best])


def image_files(paths: list[str]) -> list[Path]:
    """The given files, and the images under the given folders (sorted); a path
    that does not exist is refused before anything is classified."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"not found: {name}")
    return files


def predict(model_path: str, paths: list[str], top: int = 3) -> Iterator[Prediction]:
    if top < 1:
        raise ConfigError(f"--top must be positive, got {top}")
    files = image_files(paths)
    model = AppModel(Path(model_path))
    for path in files:
        yield model.classify(path, top)
