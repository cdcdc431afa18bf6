"""MobileNetV2 features (1280-d, global average pool) in a Spark Arrow map (mapInArrow).

The driver loads the Keras weights once and broadcasts the engine's payload
(fruits.engines). Each Python worker builds its predictor once and keeps it
in this module (an importable module, so the cache survives across tasks on a
reused worker), then decodes and embeds images in batches.
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from fruits import engines
from fruits.config import FEATURE_DIM, ConfigError
from fruits.decoding import IMAGE_SIZE, decode, describe_error, preprocess
from fruits.engines import Predict
from fruits.session import FLOAT_VECTOR
from fruits.worker_imports import skip_rereading_unchanged_zips

MODEL_NAME = "MobileNetV2 (alpha 1.0, 224x224, ImageNet, include_top=False, pooling=avg)"
KERAS_WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + KERAS_WEIGHTS_FILE
IMAGES_PER_TASK = 500
KEPT_COLUMNS = ("path", "label", "split", "size", "modified")
RESULT_FIELDS = (StructField("features", FLOAT_VECTOR), StructField("error", StringType()))

# Per-Python-worker caches: backbone key -> predict function; batch size -> buffers.
_worker_predictors: dict[str, Predict] = {}
_worker_buffers: dict[int, BatchBuffers] = {}


def resolve_weights(weights: str) -> Path:
    """'imagenet' -> Keras' cached download (fetched once); else a local .h5 file."""
    if weights == "imagenet":
        cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / KERAS_WEIGHTS_FILE
        if cached.is_file():  # found without importing TensorFlow
            return cached
        keras = engines.import_keras()
        try:
            return Path(keras.utils.get_file(KERAS_WEIGHTS_FILE, KERAS_WEIGHTS_URL, cache_subdir="models"))
        except Exception as exc:  # network errors come in many types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"cannot download the ImageNet weights ({first_line}); pass --weights PATH to a local Keras .h5 file"
            ) from exc
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file not found: {weights}")
    return path.resolve()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class BatchBuffers:
    """One batch of pixels and model inputs, reused for every batch of a worker.

    A fresh 64-image float32 batch is 38.5 MB: above glibc's 32 MB mmap
    ceiling, so allocating it per batch maps and page-faults it every time.
    """

    def __init__(self, batch_size: int, side: int = IMAGE_SIZE[0]) -> None:
        self.pixels = np.empty((batch_size, side, side, 3), dtype=np.uint8)
        self.inputs = np.empty((batch_size, side, side, 3), dtype=np.float32)


def featurize_contents(predict: Predict, contents: Sequence[bytes], buffers: BatchBuffers) -> pa.RecordBatch:
    """Image bytes -> Arrow (features, error); bad images get an error, not a crash.
    Images are decoded and embedded one batch (len(buffers.pixels)) at a time.

    Arrow columns built from one array, not pandas: PySpark's pandas converter
    turns every returned vector into a Python list of 1,280 floats first
    (0.33 ms an image, measured)."""
    batch_size, side = buffers.pixels.shape[:2]
    vectors = np.zeros((len(contents), FEATURE_DIM), dtype=np.float32)
    errors: list[str | None] = [None] * len(contents)
    for start in range(0, len(contents), batch_size):
        decoded: list[int] = []
        for i in range(start, min(start + batch_size, len(contents))):
            try:
                buffers.pixels[len(decoded)] = decode(contents[i], side)
                decoded.append(i)
            except Exception as exc:  # any decoder failure becomes an error row
                errors[i] = describe_error(contents[i], exc)
        if decoded:
            count = len(decoded)
            vectors[decoded] = predict(preprocess(buffers.pixels[:count], out=buffers.inputs[:count]))
    offsets = pa.array(np.arange(len(contents) + 1, dtype=np.int32) * FEATURE_DIM)
    failed = pa.array([error is not None for error in errors], pa.bool_())  # typed even when empty
    features = pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel()), mask=failed)
    return pa.RecordBatch.from_arrays([features, pa.array(errors, pa.string())], ["features", "error"])


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(items: Iterator) -> Iterator:
    """``items``, with the next one already being read by a thread.

    The JVM writes the next Arrow batch only as the worker reads it, so the
    worker used to wait ~20% of its time for input (py-spy). Inference releases
    the GIL: reading the next batch during it hides that wait. A worker exits
    on any error, so a reader thread never outlives a failed task.
    """
    handoff: queue.Queue = queue.Queue(maxsize=1)
    finished = object()

    def pump() -> None:
        try:
            for item in items:
                handoff.put(item)
            handoff.put(finished)
        except BaseException as exc:  # re-raised in the consuming thread
            handoff.put(_Failed(exc))

    reader = threading.Thread(target=pump, name="fruits-read-ahead", daemon=True)
    reader.start()
    while (item := handoff.get()) is not finished:
        if isinstance(item, _Failed):
            raise item.error
        yield item
    reader.join()


def worker_predictor(backbone_key: str, engine: str, broadcast, side: int) -> Predict:
    """The predictor for ``backbone_key`` in this Python worker, built on first use only,
    with as many threads as the task has cores (one per task when tasks == cores)."""
    predict = _worker_predictors.get(backbone_key)
    if predict is None:
        from pyspark import TaskContext

        skip_rereading_unchanged_zips()

        context = TaskContext.get()
        predict = engines.predictor(engine, broadcast.value, threads=context.cpus() if context else 1, side=side)
        _worker_predictors.clear()
        _worker_predictors[backbone_key] = predict
    return predict


def worker_buffers(batch_size: int, side: int) -> BatchBuffers:
    if (batch_size, side) not in _worker_buffers:
        _worker_buffers.clear()
        _worker_buffers[batch_size, side] = BatchBuffers(batch_size, side)
    return _worker_buffers[batch_size, side]


def feature_summary(features: DataFrame) -> pd.DataFrame:
    """Per split: images, featurized, failed and the vector sizes seen (expect [1280])."""
    featurized_size = F.when(F.col("features").isNotNull(), F.size("features"))
    return (
        features.groupBy("split")
        .agg(
            F.count("*").alias("images"),
            F.count("features").alias("featurized"),
            F.count("error").alias("failed"),
            F.array_sort(F.collect_set(featurized_size)).alias("dims"),
        )
        .orderBy("split")
        .toPandas()
    )


def task_count(parallelism: int, images: int) -> int:
    """At least 4 tasks per core, and no more than ~IMAGES_PER_TASK images per task,
    so every core stays busy, progress shows, and batches stay full."""
    return max(4 * parallelism, math.ceil(images / IMAGES_PER_TASK))


def featurize(images: DataFrame, backbone: engines.Backbone, tasks: int, batch_size: int = 64) -> DataFrame:
    """(path, label, split, size, modified, content) -> (..., features, error).

    The backbone's payload is broadcast once per call. Tiny files make one small
    partition each; they are merged into at most ``tasks`` partitions.
    """
    spark = images.sparkSession
    broadcast = spark.sparkContext.broadcast(backbone.payload)
    engine, side = backbone.engine, backbone.image_size
    arrow_rows = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"))
    if arrow_rows > 0:  # a batch never spans two Arrow batches: no buffers for images that cannot come
        batch_size = min(batch_size, arrow_rows)
    key = f"{backbone.key}-{side}"  # a Keras predictor is built for one side
    if images.rdd.getNumPartitions() > tasks:
        images = images.coalesce(tasks)

    def mobilenet_features(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        predict = worker_predictor(key, engine, broadcast, side)
        buffers = worker_buffers(batch_size, side)
        for batch in read_ahead(batches):
            result = featurize_contents(predict, batch.column("content").to_pylist(), buffers)
            yield pa.RecordBatch.from_arrays(
                [*(batch.column(name) for name in KEPT_COLUMNS), *result.columns], [*KEPT_COLUMNS, *result.schema.names]
            )

    kept = images.select(*KEPT_COLUMNS).schema.fields
    return images.select(*KEPT_COLUMNS, "content").mapInArrow(mobilenet_features, StructType([*kept, *RESULT_FIELDS]))
