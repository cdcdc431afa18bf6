"""Featurization benchmark, side by side on the same real images; prints JSON.

    .venv/bin/python bench/featurize.py [--images 2000] [--weights PATH]

Configurations, each timed read -> features -> Parquet in a fresh local[*]
SparkSession of this one process (fresh Python workers, so their peak RSS is
per configuration):

* peer: the public peers' pattern: Keras `model.predict` in a Scalar Iterator
  pandas UDF, the model rebuilt per iterator from broadcast weights, default
  partitioning and Arrow batches;
* keras, onnx: this project's engines (`fruits.features.featurize`), fp32;
* int8: the onnx engine with `--precision int8`, calibrated on a sample of
  the same images;
* onnx-192, int8-192: the same with `--image-size 192`;
* the ceilings of onnx and int8: ONNX Runtime alone on already-preprocessed
  224 tensors, one single-threaded process per core (the most the engine
  could reach), measured right before and after each one's warm run (the
  machine's speed drifts within minutes); the warm run is compared with the
  mean (warm_ratio_to_ceiling).

Each configuration runs twice: cold (fresh session and Python workers; model
conversion or quantization, cached on disk, is done before and reported as
prepare_s) and warm (the same job again on the reused workers). The warm run's
CPU seconds are split into the driver JVM, the Python workers and idle cores.

Also: whole process, command to exit, on the same images, best of two
alternating runs: `fruits featurize` against the peer pattern in a fresh
Python process of its own; cold start (`fruits featurize` on data_sample/);
the machine's load average. Images come from FRUITS_DATA (default
../shared/data/fruits-360), spread evenly over classes.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FRUITS_DATA", ROOT.parent / "shared" / "data" / "fruits-360"))
WEIGHTS = os.environ.get(
    "FRUITS_WEIGHTS", str(ROOT.parent / "shared" / "models" / "mobilenet_v2_1.0_224_no_top_reconstructed.h5")
)


def pick_images(count: int, target: Path) -> Path:
    """Copy ``count`` real images, spread evenly over the data set, into target;
    past the data set's size, files repeat under new names (``<stem>-copyK``)."""
    files = sorted(DATA.rglob("*.jpg"))
    for index in range(count):
        path = files[index * len(files) // count] if count <= len(files) else files[index % len(files)]
        copy = target / path.relative_to(DATA)
        if count > len(files) and index >= len(files):
            copy = copy.with_name(f"{copy.stem}-copy{index // len(files)}{copy.suffix}")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
    return target


def process_kind(cmdline: bytes) -> str | None:
    """'python_workers' for a PySpark Python worker (or their daemon), 'jvm' for
    a Java process (the driver's), else None."""
    if b"pyspark.daemon" in cmdline or b"pyspark/daemon" in cmdline:
        return "python_workers"
    return "jvm" if Path(cmdline.split(b"\0")[0].decode(errors="replace")).name == "java" else None


def worker_peak_rss_mb() -> float:
    """Largest peak RSS (VmHWM) among this machine's PySpark Python workers."""
    peaks = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if process_kind((status.parent / "cmdline").read_bytes()) == "python_workers":
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
                peaks.append(int(fields["VmHWM"].split()[0]) / 1024)
        except (OSError, KeyError, ValueError):
            continue
    return round(max(peaks, default=0.0), 1)


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this machine's Java processes (the driver JVM)
    and its PySpark Python workers."""
    tick = os.sysconf("SC_CLK_TCK")
    totals = {"jvm": 0.0, "python_workers": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            kind = process_kind((stat.parent / "cmdline").read_bytes())
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if kind:
            totals[kind] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return totals


def peer_features(images, weights):
    """The public peers' pattern, kept faithful on purpose (not this project's code)."""
    from pyspark.sql.functions import pandas_udf

    broadcast = images.sparkSession.sparkContext.broadcast(weights)

    @pandas_udf("array<float>")
    def featurize_udf(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import keras
        from PIL import Image

        model = keras.applications.MobileNetV2(
            weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3)
        )
        model.set_weights(broadcast.value)
        for contents in batches:
            arrays = [np.asarray(Image.open(io.BytesIO(c)).convert("RGB").resize((224, 224))) for c in contents]
            batch = keras.applications.mobilenet_v2.preprocess_input(np.stack(arrays).astype(np.float32))
            yield pd.Series(list(model.predict(batch, batch_size=64, verbose=0)))

    return images.select("path", featurize_udf("content").alias("features"))


def prepare_backbone(name: str, images_dir: Path, weights_path: Path):
    """fp32 or int8 (calibrated on a sample of the benchmark's own images); a
    name ending in -192 resizes images to 192x192 (--image-size 192)."""
    from fruits import engines
    from fruits.config import cache_dir
    from fruits.features import file_sha256
    from fruits.images import sample_contents
    from fruits.pipeline import CALIBRATION_IMAGES

    base, _, side = name.partition("-")
    engine, precision = ("onnx", "int8") if base == "int8" else (base, "fp32")
    calibration = ()
    if precision == "int8":
        from fruits.images import read_images
        from fruits.session import get_spark

        calibration = sample_contents(read_images(get_spark(), str(images_dir)), CALIBRATION_IMAGES)
    sha256 = file_sha256(weights_path)
    models = Path(cache_dir()) / "models"
    side = int(side or 224)
    return engines.prepare(
        engine, weights_path, sha256, models, precision=precision, calibration=calibration, image_size=side
    )


def run_pipeline(name: str, images_dir: Path, output: Path, weights_path: Path, ceiling=None) -> dict:
    """Cold (fresh session and Python workers, the whole job) then warm (the same
    job again on the reused workers, whose model is already built). ``ceiling``
    (img/s of the engine alone) is measured right before and after the warm run."""
    from fruits.config import Config
    from fruits.engines import load_weights
    from fruits.features import featurize, task_count
    from fruits.images import listed_files, read_images
    from fruits.session import get_spark

    config = Config(master="local[*]", arrow_batch_size=10_000 if name == "peer" else Config().arrow_batch_size)
    spark = get_spark(config)
    try:
        started = time.perf_counter()
        peer_weights = load_weights(weights_path) if name == "peer" else None
        backbone = None if name == "peer" else prepare_backbone(name, images_dir, weights_path)
        prepare_s = time.perf_counter() - started
        timings, ceilings = [], []
        for attempt in ("cold", "warm"):
            if attempt == "warm" and ceiling:
                ceilings.append(ceiling())
            cpu_before = cpu_seconds()
            started = time.perf_counter()
            images = read_images(spark, str(images_dir))
            count = len(listed_files(images))
            if name == "peer":
                features = peer_features(images, peer_weights)
            else:
                features = featurize(images, backbone, task_count(spark.sparkContext.defaultParallelism, count))
            features.write.mode("overwrite").parquet(str(output / f"{name}-{attempt}"))
            timings.append(time.perf_counter() - started)
        cold, warm = timings
        used = {kind: seconds - cpu_before[kind] for kind, seconds in cpu_seconds().items()}
        idle = (os.cpu_count() or 1) * warm - sum(used.values())
        adjacent = {}
        if ceiling:
            ceilings.append(ceiling())
            adjacent = {"ceiling_before_after": ceilings, "ceiling_img_per_s": round(sum(ceilings) / 2, 1)}
        return {
            "name": name,
            "images": count,
            "prepare_s": round(prepare_s, 2),
            "cold_s": round(cold, 2),
            "img_per_s": round(count / cold, 1),
            "warm_img_per_s": round(count / warm, 1),
            "peak_worker_rss_mb": worker_peak_rss_mb(),
            "warm_cpu_s": {**{kind: round(seconds, 2) for kind, seconds in used.items()}, "idle": round(idle, 2)},
            **adjacent,
        }
    finally:
        spark.stop()


def _ceiling_worker(args: tuple[bytes, int, int]) -> float:
    from fruits import engines

    model, images, batch_size = args
    predict = engines.predictor("onnx", model, threads=1)
    batch = np.random.default_rng(0).uniform(-1, 1, (batch_size, 224, 224, 3)).astype(np.float32)
    predict(batch)  # warm-up
    started = time.perf_counter()
    for _ in range(math.ceil(images / batch_size)):
        predict(batch)
    return math.ceil(images / batch_size) * batch_size / (time.perf_counter() - started)


def onnx_ceiling(model: bytes, images: int) -> float:
    """Inference alone on preprocessed tensors: one single-threaded process per core (img/s)."""
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores) as pool:
        return round(sum(pool.map(_ceiling_worker, [(model, images // cores, 64)] * cores)), 1)


def fruits_process_s(images_dir: Path, weights_path: Path) -> float:
    """`fruits featurize` from command to exit (session start, listing, model, Parquet)."""
    with tempfile.TemporaryDirectory() as out:
        command = [Path(sys.executable).with_name("fruits"), "featurize", "--input", images_dir]
        command += ["--output", Path(out) / "o", "--weights", weights_path, "--engine", "onnx"]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return round(time.perf_counter() - started, 1)


def peer_process_s(images_dir: Path, weights_path: Path) -> float:
    """The peer pattern from command to exit: this script in a fresh process."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, __file__, "--peer-process", images_dir, out, "--weights", weights_path]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return round(time.perf_counter() - started, 1)


def whole_process(images_dir: Path, weights_path: Path, *, with_peer: bool, repeats: int = 2) -> dict:
    """Best of ``repeats`` runs each, alternating, from command to exit."""
    fruits_runs, peer_runs = [], []
    for _ in range(repeats):
        fruits_runs.append(fruits_process_s(images_dir, weights_path))
        if with_peer:
            peer_runs.append(peer_process_s(images_dir, weights_path))
    whole = {"fruits_s": min(fruits_runs), "fruits_runs_s": fruits_runs}
    if with_peer:
        ratio = round(min(peer_runs) / min(fruits_runs), 2)
        whole |= {"peer_s": min(peer_runs), "peer_runs_s": peer_runs, "ratio": ratio}
    return whole


def stop_active_session() -> None:
    from pyspark.sql import SparkSession

    if (spark := SparkSession.getActiveSession()) is not None:
        spark.stop()


def run_peer_process(images_dir: str, output: str, weights_path: str) -> None:
    from fruits.config import Config
    from fruits.engines import load_weights
    from fruits.images import read_images
    from fruits.session import get_spark

    spark = get_spark(Config(master="local[*]", arrow_batch_size=10_000))
    features = peer_features(read_images(spark, images_dir), load_weights(Path(weights_path)))
    features.write.parquet(str(Path(output) / "peer"))
    spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--weights", default=WEIGHTS)
    parser.add_argument(
        "--configs", default="peer,keras,onnx,int8,onnx-192,int8-192", help="comma-separated pipeline configurations"
    )
    parser.add_argument("--peer-process", nargs=2, metavar=("IMAGES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_process:
        run_peer_process(*args.peer_process, args.weights)
        return
    weights_path = Path(args.weights)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        images_dir = pick_images(args.images, Path(scratch) / "images")
        models = {name: prepare_backbone(name, images_dir, weights_path).payload for name in ("onnx", "int8")}
        stop_active_session()  # int8 calibration started one; each configuration starts its own
        # The machine's speed drifts (other tenants), by up to 20% within minutes:
        # each engine's ceiling is measured right before and after its warm run.
        results = [
            run_pipeline(
                name,
                images_dir,
                Path(scratch) / "out",
                weights_path,
                ceiling=(lambda model=models[name]: onnx_ceiling(model, args.images)) if name in models else None,
            )
            for name in args.configs.split(",")
        ]
        whole = whole_process(images_dir, weights_path, with_peer="peer" in args.configs.split(","))
    by_name = {r["name"]: r for r in results}
    for result in results:
        if "peer" in by_name:
            result["ratio_to_peer"] = round(result["img_per_s"] / by_name["peer"]["img_per_s"], 2)
        if "onnx" in by_name:
            result["warm_ratio_to_onnx"] = round(result["warm_img_per_s"] / by_name["onnx"]["warm_img_per_s"], 2)
        if "ceiling_img_per_s" in result:  # the ceilings are measured at 224x224
            result["warm_ratio_to_ceiling"] = round(result["warm_img_per_s"] / result["ceiling_img_per_s"], 3)
    report = {
        "machine": {"cores": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "results": results,
        "whole_process_s": whole,
        "cold_start_s": fruits_process_s(ROOT / "data_sample", weights_path),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
