"""End to end on data_sample/ and on real Fruits-360 images, through the CLI."""

import csv
import json
import platform
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import fruits
from fruits import cli, engines
from fruits.config import Config, package_version
from fruits.features import (
    FEATURE_DIM,
    MODEL_NAME,
    BatchBuffers,
    featurize_contents,
    file_sha256,
    read_ahead,
    task_count,
)
from fruits.output import literal_path
from fruits.pca import load_model, project
from fruits.probe import linear_probe
from fruits.session import PLAIN_FLOAT_COLUMNS
from tests.conftest import SAMPLE
from tests.test_cli import run_cli

SAMPLE_FILES = sorted(SAMPLE.rglob("*.jpg"))


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def read(spark, path: Path):
    return spark.read.parquet(literal_path(str(path)))


def features_of(spark, out: Path) -> dict[str, tuple]:
    rows = read(spark, out / "features").collect()
    return {row["path"].removeprefix("file:"): row for row in rows}


@pytest.fixture(scope="module")
def sample_run(spark, weights, tmp_path_factory) -> Path:
    # Brackets in the output name: Spark readers must not glob them.
    out = tmp_path_factory.mktemp("runs") / "run-local[2]"
    code = main_run("run", "--input", SAMPLE, "--output", out, "--weights", weights, "--csv")
    assert code == 0
    return out


def main_run(*argv) -> int:
    from fruits.cli import main

    return main([str(a) for a in argv])


def test_sample_run_manifest_accounts_for_every_file(spark, sample_run, weights):
    manifest = manifest_of(sample_run)
    assert manifest["input_files"] == len(SAMPLE_FILES) == 36
    assert (manifest["featurized"], manifest["failed"], manifest["added"]) == (36, 0, 36)
    assert manifest["feature_dim"] == FEATURE_DIM
    assert (manifest["model"], manifest["weights"]) == (MODEL_NAME, str(weights))
    assert manifest["weights_sha256"] == file_sha256(weights)
    assert (manifest["engine"], manifest["precision"], manifest["calibration"]) == ("onnx", "fp32", None)
    assert manifest["engine_versions"]["onnxruntime"] == package_version("onnxruntime")
    assert manifest["engine_versions"]["onnx"] == package_version("onnx")
    assert (manifest["input"], manifest["output"]) == (f"file://{SAMPLE}", f"file://{sample_run}")
    assert (manifest["pca_variance_target"], manifest["pca_standardized"]) == (0.95, False)
    curve = np.loadtxt(sample_run / "explained_variance.csv", delimiter=",", skiprows=1, usecols=2)
    assert manifest["explained_variance"] == round(curve[manifest["pca_k"] - 1], 6) >= 0.95
    assert manifest["spark_version"] == spark.version
    assert manifest["python_version"] == platform.python_version()
    assert manifest["fruits_version"] == fruits.__version__
    assert manifest["cores"] == spark.sparkContext.defaultParallelism == 2
    assert set(manifest["seconds"]) == {"featurize", "pca", "total"}
    assert manifest["seconds"]["total"] >= manifest["seconds"]["featurize"] + manifest["seconds"]["pca"] - 0.02
    assert manifest["images_per_second"] == pytest.approx(36 / manifest["seconds"]["featurize"], rel=0.01)
    defaults = cli.DEFAULTS  # computed when the CLI module is imported
    expected = Config(
        input=str(SAMPLE), output=str(sample_run), weights=str(weights), csv=True, event_log_dir=defaults.event_log_dir
    )
    assert manifest["parameters"] == expected.as_dict()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", manifest["run_id"])


def test_sample_features_have_one_row_per_file_with_labels(spark, sample_run):
    rows = features_of(spark, sample_run)
    assert sorted(rows) == [str(p) for p in SAMPLE_FILES]
    assert all(len(row["features"]) == FEATURE_DIM and row["error"] is None for row in rows.values())
    for path, row in rows.items():
        assert (row["label"], row["split"]) == (Path(path).parent.name, Path(path).parent.parent.name)


def test_the_plain_float_columns_are_the_vectors_as_written(sample_run):
    for name in PLAIN_FLOAT_COLUMNS:
        (part, *_) = sorted((sample_run / name).glob("part-*.parquet"))
        schema = pq.ParquetFile(part).schema
        assert f"{name}.array" in [schema.column(i).path for i in range(len(schema))]


def test_sample_pca_outputs_agree_with_each_other(spark, sample_run):
    k = manifest_of(sample_run)["pca_k"]
    pca = read(spark, sample_run / "pca").orderBy("path").collect()
    assert len(pca) == 36
    assert {len(row["pca"]) for row in pca} == {k}

    with (sample_run / "explained_variance.csv").open() as handle:
        curve = list(csv.DictReader(handle))
    assert len(curve) == FEATURE_DIM
    assert float(curve[k - 1]["cumulative"]) >= 0.95 > float(curve[k - 2]["cumulative"])

    model = load_model(spark, str(sample_run / "pca_model"))
    features = read(spark, sample_run / "features")
    again = project(model, features).orderBy("path").collect()
    np.testing.assert_allclose([r["pca"] for r in again], [r["pca"] for r in pca], rtol=1e-6)

    # What an app applies with numpy alone (README, What a run writes): pca = ((x - mean) * scale) @ components.
    with np.load(sample_run / "pca_model" / "pca.npz") as arrays:
        assert sorted(arrays) == ["components", "explained_variance", "mean", "scale"]
        assert arrays["components"].shape == (FEATURE_DIM, k)
        vectors = np.stack([row["features"] for row in features.orderBy("path").collect()])
        by_numpy = (vectors - arrays["mean"]) * arrays["scale"] @ arrays["components"]
    np.testing.assert_allclose(by_numpy, [r["pca"] for r in pca], rtol=1e-4, atol=1e-4)

    (csv_file,) = (sample_run / "pca_csv").glob("part-*.csv")
    with csv_file.open() as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["path", "label", "split"] + [f"pc{i}" for i in range(1, k + 1)]
    assert len(table) == 37


def test_featurize_then_pca_separately_and_deterministically(spark, sample_run, weights, tmp_path, capsys):
    out = tmp_path / "again"
    code, stdout, _ = run_cli(capsys, "featurize", "--input", SAMPLE, "--output", out, "--weights", weights)
    assert code == 0
    assert "images read  36" in stdout
    first, second = features_of(spark, sample_run), features_of(spark, out)
    assert first.keys() == second.keys()
    for path, row in first.items():
        np.testing.assert_allclose(second[path]["features"], row["features"], rtol=1e-5, atol=1e-6)

    code, stdout, _ = run_cli(capsys, "pca", "--input", out, "--pca-k", "5")
    assert code == 0
    assert "PCA k        5" in stdout
    pca = manifest_of(out)
    assert (pca["pca_k"], pca["pca_variance_target"], pca["pca_standardized"]) == (5, None, False)  # k was given
    assert {len(r["pca"]) for r in read(spark, out / "pca").collect()} == {5}


def test_a_corrupt_file_among_good_ones_becomes_exactly_one_error_row(spark, weights, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(SAMPLE, images)
    good = (images / "Training" / "Synthetic Grape" / "0_100.jpg").read_bytes()
    (images / "Training" / "Synthetic Grape" / "broken.jpg").write_bytes(good[: len(good) // 3])
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, "run", "--input", images, "--output", out, "--weights", weights, "--engine", "keras")
    assert code == 0
    manifest = manifest_of(out)
    assert (manifest["input_files"], manifest["featurized"], manifest["failed"]) == (37, 36, 1)
    assert manifest["engine"] == "keras"
    failed = [row for row in features_of(spark, tmp_path / "out").values() if row["error"] is not None]
    assert [Path(row["path"]).name for row in failed] == ["broken.jpg"]
    assert failed[0]["features"] is None
    assert "truncated" in failed[0]["error"].lower()
    assert read(spark, tmp_path / "out" / "pca").count() == 36


def test_an_input_folder_named_like_a_pattern_is_read_literally(spark, weights, tmp_path, capsys):
    images = tmp_path / "photos [2] {a,b} *"
    shutil.copytree(SAMPLE, images)
    code, _, err = run_cli(capsys, "featurize", "--input", images, "--output", tmp_path / "out", "--weights", weights)
    assert code == 0, err
    assert (manifest_of(tmp_path / "out")["input_files"], manifest_of(tmp_path / "out")["featurized"]) == (36, 36)


def test_a_batch_size_above_the_arrow_batch_allocates_only_an_arrow_batch(spark, weights, tmp_path, capsys):
    """Buffers for 10^9 images would be 600 TB a worker, beyond any machine's
    address space; an Arrow batch holds 256."""
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "featurize", "--input", SAMPLE, "--output", out, "--weights", weights, "--batch-size", "1000000000"
    )
    assert code == 0, err
    assert manifest_of(out)["featurized"] == 36


@pytest.mark.parametrize("engine", ["onnx", "keras"])
def test_undecodable_bytes_get_specific_errors_next_to_good_features(weights, tmp_path, engine):
    backbone = engines.prepare(engine, weights, file_sha256(weights), tmp_path)
    predict = engines.predictor(engine, backbone.payload, threads=1)
    good = SAMPLE_FILES[0].read_bytes()
    result = featurize_contents(predict, [good, b"", b"plain text", good], BatchBuffers(3)).to_pandas()
    assert list(result["error"]) == [None, "empty file", "not a recognized image format", None]
    assert result["features"][0].shape == (FEATURE_DIM,)
    assert result["features"][1] is None
    np.testing.assert_allclose(result["features"][0], result["features"][3], atol=1e-5)
    empty = featurize_contents(predict, [], BatchBuffers(3))
    assert (empty.num_rows, empty.schema.names, str(empty.schema.field("features").type)) == (
        0,
        ["features", "error"],
        "list<item: float>",
    )


@pytest.mark.parametrize("side", [192])
def test_smaller_inputs_give_keras_own_features_at_that_size(weights, tmp_path, side):
    """--image-size: the ONNX backbone at 192 pixels equals Keras' MobileNetV2
    built for that size with the same weights (not the 224 features)."""
    contents = [path.read_bytes() for path in SAMPLE_FILES[::6]]
    features = {}
    for engine in ("keras", "onnx"):
        backbone = engines.prepare(engine, weights, file_sha256(weights), tmp_path, image_size=side)
        predict = engines.predictor(engine, backbone.payload, threads=2, side=side)
        features[engine] = np.stack(
            featurize_contents(predict, contents, BatchBuffers(8, side)).to_pandas()["features"]
        )
    assert features["onnx"].shape == (len(contents), FEATURE_DIM)
    np.testing.assert_allclose(features["onnx"], features["keras"], atol=2e-4)
    backbone = engines.prepare("onnx", weights, file_sha256(weights), tmp_path)
    predict = engines.predictor("onnx", backbone.payload, 2)
    at_224 = np.stack(featurize_contents(predict, contents, BatchBuffers(8)).to_pandas()["features"])
    assert np.abs(at_224 - features["onnx"]).max() > 0.1


@pytest.mark.slow
def test_onnx_features_equal_keras_features_on_real_images(weights, real_subset, record_property):
    contents = [path.read_bytes() for path in sorted(real_subset.rglob("*.jpg"))[::20]]
    features = {}
    for engine in ("keras", "onnx"):
        backbone = engines.prepare(engine, weights, file_sha256(weights), real_subset.parent / "models")
        result = featurize_contents(engines.predictor(engine, backbone.payload, threads=2), contents, BatchBuffers(32))
        features[engine] = np.stack(result.to_pandas()["features"])
    keras_features, onnx_features = features["keras"], features["onnx"]
    cosine = (keras_features * onnx_features).sum(1) / (
        np.linalg.norm(keras_features, axis=1) * np.linalg.norm(onnx_features, axis=1)
    )
    max_abs_diff = float(np.abs(keras_features - onnx_features).max())
    record_property("onnx_vs_keras_max_abs_diff", max_abs_diff)
    print(
        f"onnx vs keras on {len(contents)} real images: min cosine {cosine.min():.8f}, max abs diff {max_abs_diff:.2e}"
    )
    assert len(contents) == 80
    assert cosine.min() >= 0.99999
    assert max_abs_diff < 1e-3


@pytest.fixture(scope="module")
def real_run(spark, weights, guard_subset, tmp_path_factory) -> Path:
    """The default (fp32) run of 47 real classes: the accuracy, parity and int8 tests all read it."""
    out = tmp_path_factory.mktemp("real") / "out"
    assert main_run("run", "--input", guard_subset, "--output", out, "--weights", weights) == 0
    return out


@pytest.mark.slow
def test_real_images_all_featurized(real_run, guard_subset):
    manifest = manifest_of(real_run)
    files = list(guard_subset.rglob("*.jpg"))
    assert manifest["input_files"] == len(files) == 3760
    assert (manifest["featurized"], manifest["failed"]) == (3760, 0)
    assert (manifest["precision"], manifest["calibration"]) == ("fp32", None)


@pytest.mark.slow
def test_udf_features_equal_a_direct_keras_run(spark, real_run, weights):
    import keras

    rows = sorted(features_of(spark, real_run).items())[::94]
    model = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), include_top=False, weights=str(weights), pooling="avg"
    )
    pixels = np.stack(
        [
            keras.utils.img_to_array(keras.utils.load_img(path, target_size=(224, 224), interpolation="bilinear"))
            for path, _ in rows
        ]
    )
    expected = model.predict(keras.applications.mobilenet_v2.preprocess_input(pixels), verbose=0)
    actual = np.array([row["features"] for _, row in rows])
    cosine = (actual * expected).sum(1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
    assert len(rows) == 40
    assert cosine.min() >= 0.9999


@pytest.mark.slow
def test_linear_probe_on_pca_features_beats_95_percent(spark, real_run):
    result = linear_probe(read(spark, real_run / "pca"))
    assert (result.train_rows, result.test_rows) == (2820, 940)
    assert result.accuracy >= 0.95


@pytest.mark.slow
def test_int8_keeps_linear_probe_accuracy_within_half_a_point_of_fp32(spark, weights, guard_subset, real_run, tmp_path):
    """47 classes, 940 test images: one image is 0.1 point (on 400, one borderline image is 0.25)."""
    int8_run = tmp_path / "int8"
    args = ("--input", guard_subset, "--output", int8_run, "--weights", weights, "--precision", "int8")
    assert main_run("run", *args) == 0
    fp32, int8 = (linear_probe(read(spark, run / "pca")).accuracy for run in (real_run, int8_run))
    print(f"linear probe on 47 classes: fp32 {fp32:.4f}, int8 {int8:.4f}")
    manifest = manifest_of(int8_run)
    assert (manifest["precision"], manifest["calibration"]["images"], manifest["featurized"]) == ("int8", 256, 3760)
    assert fp32 >= 0.95
    assert int8 >= fp32 - 0.005


def test_int8_calibration_sample_is_identified_by_content_not_order():
    images = [b"a", b"b", b"c"]
    assert engines.calibration_digest(images) == engines.calibration_digest(images[::-1])
    assert engines.calibration_digest(images) != engines.calibration_digest(images[:2])


@pytest.mark.parametrize(("cores", "images", "tasks"), [(2, 36, 8), (2, 11280, 23), (64, 11280, 256)])
def test_task_count_keeps_cores_busy_and_tasks_bounded(cores, images, tasks):
    assert task_count(cores, images) == tasks


def test_read_ahead_yields_every_item_in_order_one_ahead():
    consumed = []

    def source():
        for i in range(5):
            consumed.append(i)
            yield i

    seen = []
    for item in read_ahead(source()):
        seen.append(item)
        assert len(consumed) <= item + 3  # at most one queued and one being read
    assert seen == [0, 1, 2, 3, 4]


def test_read_ahead_reads_the_next_item_while_the_consumer_works():
    second_read = threading.Event()

    def source():
        yield 0
        second_read.set()
        yield 1

    items = read_ahead(source())
    assert next(items) == 0
    assert second_read.wait(5)  # read while the consumer still holds item 0
    assert list(items) == [1]


def test_read_ahead_raises_the_source_error_in_the_consumer():
    def source():
        yield 1
        raise OSError("socket closed")

    items = read_ahead(source())
    assert next(items) == 1
    with pytest.raises(OSError, match="socket closed"):
        next(items)
