"""fruits train / export / predict on real Fruits-360 images: the exported app
model agrees with the Spark pipeline image by image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from fruits.classifier import metadata as keys
from fruits.classifier.predict import AppModel, predict
from fruits.classifier.train import load
from fruits.features import file_sha256
from fruits.output import read_parquet
from tests.conftest import ROOT, copy_classes, without_tensorflow
from tests.test_cli import run_cli
from tests.test_pipeline import main_run

CLASSES_STEP, CLASSES = 17, 8  # 8 real classes: 480 training and 160 test images


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return copy_classes(tmp_path_factory.mktemp("classifier-data"), CLASSES_STEP, CLASSES)


@pytest.fixture(scope="module")
def trained(spark, weights, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("classifier") / "out"
    assert main_run("run", "--input", data, "--output", out, "--weights", weights) == 0
    assert main_run("train", "--input", out) == 0
    return out


@pytest.fixture(scope="module")
def app_model(trained, weights, tmp_path_factory) -> Path:
    model = tmp_path_factory.mktemp("app") / "fruits.onnx"
    assert main_run("export", "--input", trained, "--output", model, "--weights", weights) == 0
    return model


def test_train_writes_metrics_confusion_and_the_manifest(trained):
    metrics = json.loads((trained / "classifier" / "metrics.json").read_text())
    assert len(metrics["labels"]) == CLASSES
    assert metrics["labels"] == sorted(metrics["labels"])
    assert (metrics["train_rows"], metrics["test_rows"], metrics["test_set"]) == (480, 160, "split Test")
    assert metrics["accuracy"] >= 0.95
    assert 0.9 <= metrics["macro_f1"] <= 1.0
    assert set(metrics["per_class"]) == set(metrics["labels"])
    assert all(entry["support"] == 20 for entry in metrics["per_class"].values())
    # The confusion counts are the test rows, and each class's recall is its diagonal share.
    assert sum(count for _, _, count in metrics["confusion"]) == 160
    hits = {true: count for true, guess, count in metrics["confusion"] if true == guess}
    assert metrics["accuracy"] == pytest.approx(sum(hits.values()) / 160)
    for label, entry in metrics["per_class"].items():
        assert entry["recall"] == pytest.approx(hits.get(label, 0) / 20)
    assert (trained / "classifier" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recorded = json.loads((trained / "manifest.json").read_text())["classifier"]
    assert recorded["accuracy"] == round(metrics["accuracy"], 6)
    assert recorded["classes"] == CLASSES


def test_the_exported_model_gives_spark_labels_and_probabilities(spark, trained, app_model, weights):
    """Every real test image: same label as Spark (features -> PCA -> classifier),
    probabilities within 1e-4."""
    classifier = load(spark, str(trained / "classifier"))
    test_rows = read_parquet(spark, str(trained), "pca").where("split = 'Test'")
    expected = {row["path"].removeprefix("file:"): row for row in classifier.predict(test_rows).collect()}
    assert len(expected) == 160

    app = AppModel(app_model)
    assert app.labels == classifier.labels
    predictions = {path: app.classify(Path(path), top=1) for path in expected}
    assert all(p.error is None for p in predictions.values())
    assert {path: p.top[0][0] for path, p in predictions.items()} == {p: r["predicted"] for p, r in expected.items()}
    from fruits.decoding import decode

    pixels = np.stack([decode(Path(path).read_bytes()) for path in expected])
    probabilities = app.probabilities(pixels)
    spark_probabilities = np.array([row["probability"] for row in expected.values()])
    assert np.abs(probabilities - spark_probabilities).max() < 1e-4

    stored = {p.key: p.value for p in onnx.load(str(app_model)).metadata_props}
    manifest = json.loads((trained / "manifest.json").read_text())
    assert json.loads(stored[keys.LABELS]) == classifier.labels
    assert stored[keys.WEIGHTS_SHA256] == file_sha256(weights)
    assert int(stored[keys.PCA_K]) == manifest["pca_k"]
    assert (stored[keys.IMAGE_SIZE], stored[keys.PRECISION]) == ("224", "fp32")
    assert float(stored[keys.TEST_ACCURACY]) == pytest.approx(manifest["classifier"]["accuracy"], abs=1e-6)


def test_predict_prints_the_top_labels_per_image_without_spark_or_tensorflow(data, app_model, tmp_path):
    """As the app would run it: pyspark and TensorFlow cannot even be imported."""
    lean = without_tensorflow(tmp_path / "lean")
    (lean / "pyspark").mkdir()
    (lean / "pyspark" / "__init__.py").write_text("raise ImportError('no pyspark in the app')\n")
    folder = sorted((data / "Test").iterdir())[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(lean), str(ROOT)])}
    command = [sys.executable, "-m", "fruits.cli", "predict", str(app_model), str(folder), str(broken), "--top", "2"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=120)
    assert result.returncode == 1, result.stderr  # one unreadable image
    assert result.stderr == f"{broken}\terror: not a recognized image format\n"
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(lines) == 20
    assert all(len(fields) == 5 for fields in lines)
    assert all(fields[1] == folder.name for fields in lines)
    assert all(float(fields[2]) >= float(fields[4]) for fields in lines)

    result = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env, check=False, timeout=120)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[-1] == {"path": str(broken), "error": "not a recognized image format"}
    assert [len(record["top"]) for record in records[:-1]] == [2] * 20


def test_a_photo_gone_since_it_was_listed_is_its_own_error(app_model, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(next((ROOT / "data_sample").rglob("*.jpg")), photos / name)
    predictions = predict(str(app_model), [str(photos)], top=1)
    first = next(predictions)  # the folder is listed by now
    (photos / "b.jpg").unlink()
    rest = list(predictions)
    assert [(Path(p.path).name, p.error) for p in (first, *rest)] == [
        ("a.jpg", None),
        ("b.jpg", "cannot read: No such file or directory"),
        ("c.jpg", None),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "{model}", "{missing}"], "not found: {missing}"),
        (["predict", "{missing}", "{image}"], "model not found: {missing}"),
        (["predict", "{image}", "{image}"], "is not an ONNX model"),
        (["predict", "{model}", "{image}", "--top", "0"], "must be >= 1"),
        (["export", "--input", "{missing}", "--output", "{out}"], "no manifest.json"),
        (["train", "--input", "{missing}", "--reg", "-1"], "must be >= 0"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(app_model, tmp_path, capsys, args, message):
    image = next((ROOT / "data_sample").rglob("*.jpg"))
    names = {"model": app_model, "missing": tmp_path / "missing", "image": image, "out": tmp_path / "out.onnx"}
    code, out, err = run_cli(capsys, *[arg.format(**names) for arg in args])
    assert code == 2
    assert err.count("\n") == 1, err
    assert message.format(**names) in err
    assert out == ""
    assert not (tmp_path / "out.onnx").exists()


def fake_run(spark, root: Path, rows: list[tuple[str, str | None, str | None, list[float]]]) -> Path:
    spark.createDataFrame(rows, "path string, label string, split string, pca array<float>").write.parquet(
        str(root / "pca")
    )
    (root / "manifest.json").write_text("{}\n")
    return root


def test_train_refuses_features_without_labels_or_with_one_class(spark, capsys, tmp_path):
    one_class = fake_run(
        spark, tmp_path / "one", [(f"/x/Training/K/{i}.jpg", "K", "Training", [float(i), 1.0]) for i in range(9)]
    )
    code, _, err = run_cli(capsys, "train", "--input", one_class)
    assert code == 2
    assert "a single class (K)" in err
    assert err.count("\n") == 1
    unlabelled = fake_run(spark, tmp_path / "none", [(f"/x/{i}.jpg", None, None, [float(i), 1.0]) for i in range(9)])
    code, _, err = run_cli(capsys, "train", "--input", unlabelled)
    assert code == 2
    assert "no labelled training images" in err
    assert not (one_class / "classifier").exists()
    assert not (unlabelled / "classifier").exists()


def test_without_a_test_split_a_fifth_is_held_out_by_path_hash(spark, capsys, tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        (f"/x/Training/{label}/{i}.jpg", label, "Training", [float(v) for v in rng.normal(centre, 0.1, 3)])
        for label, centre in (("A", 0.0), ("B", 5.0))
        for i in range(200)
    ]
    root = fake_run(spark, tmp_path / "run", rows)
    code, out, err = run_cli(capsys, "train", "--input", root)
    assert code == 0, err
    metrics = json.loads((root / "classifier" / "metrics.json").read_text())
    assert metrics["test_set"] == "20% of the images by path hash"
    assert 50 <= metrics["test_rows"] <= 110
    assert metrics["train_rows"] + metrics["test_rows"] == 400
    assert metrics["accuracy"] == 1.0
    assert "test accuracy 1.0000" in out
    code, _, err = run_cli(capsys, "train", "--input", root, "--output", root / "again")
    assert code == 0, err
    again = json.loads((root / "again" / "metrics.json").read_text())
    assert (again["test_rows"], again["confusion"]) == (metrics["test_rows"], metrics["confusion"])  # the same images
