"""--mode incremental: only new or changed images, every image exactly once, even after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from fruits import pipeline
from tests.conftest import SAMPLE, modification_times
from tests.test_pipeline import main_run, manifest_of, read


def paths_and_sizes(spark, out: Path) -> list[tuple[str, int]]:
    return sorted((row["path"], row["size"]) for row in read(spark, out / "features").select("path", "size").collect())


def test_a_second_incremental_run_does_no_work(spark, weights, tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    shutil.copytree(SAMPLE, images)
    (images / "Test" / "Synthetic Grape" / "empty.jpg").write_bytes(b"")  # Spark's scan skips 0-byte files
    args = ("run", "--input", images, "--output", out, "--weights", weights, "--mode", "incremental")
    assert main_run(*args, "--commit-every", "10") == 0
    first = manifest_of(out)
    assert (first["input_files"], first["added"], first["featurized"], first["failed"]) == (37, 37, 36, 1)
    features_before = sorted(p.name for p in (out / "features").iterdir())
    pca_before = modification_times(out / "pca", out / "pca_model")

    assert main_run(*args) == 0
    second = manifest_of(out)
    assert (second["added"], second["featurized"], second["failed"], second["pca_k"]) == (0, 36, 1, first["pca_k"])
    assert modification_times(out / "pca", out / "pca_model") == pca_before  # the PCA is kept as it is
    assert sorted(p.name for p in (out / "features").iterdir()) == features_before
    assert not (out / "_staging").exists()

    assert main_run(*args, "--pca-k", "3") == 0  # nothing new, but other PCA options: refit
    third = manifest_of(out)
    assert (third["added"], third["pca_k"]) == (0, 3)
    assert np.load(out / "pca_model" / "pca.npz")["components"].shape == (1280, 3)  # refit and saved


def test_deleted_images_alone_refit_the_pca(spark, weights, tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    shutil.copytree(SAMPLE, images)
    args = ("run", "--input", images, "--output", out, "--weights", weights, "--mode", "incremental")
    assert main_run(*args) == 0
    next(images.rglob("*.jpg")).unlink()
    assert main_run(*args) == 0
    manifest = manifest_of(out)
    assert (manifest["added"], manifest["dropped"], manifest["featurized"]) == (0, 1, 35)
    assert read(spark, out / "pca").count() == 35  # not the 36 rows of the earlier PCA


def test_too_few_images_left_remove_the_earlier_pca_with_the_features_kept(spark, weights, tmp_path, capsys):
    images, out = tmp_path / "images", tmp_path / "out"
    shutil.copytree(SAMPLE, images)
    args = ("run", "--input", images, "--output", out, "--weights", weights, "--mode", "incremental")
    assert main_run(*args) == 0
    for path in sorted(images.rglob("*.jpg"))[1:]:
        path.unlink()
    assert main_run(*args) == 2
    assert "PCA needs at least 2 images with features, 1 in" in capsys.readouterr().err
    manifest = manifest_of(out)
    assert (manifest["dropped"], manifest["featurized"], "pca_k" in manifest) == (35, 1, False)
    assert not any((out / name).exists() for name in ("pca", "pca_model", "explained_variance.csv"))


def test_a_run_that_failed_after_its_first_commit_still_refuses_another_model(
    spark, weights, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    args = ("featurize", "--input", SAMPLE, "--output", out, "--weights", weights, "--mode", "incremental")
    featurize = pipeline.featurize
    calls = []

    def second_chunk_fails(*arguments, **options):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return featurize(*arguments, **options)

    monkeypatch.setattr(pipeline, "featurize", second_chunk_fails)
    assert main_run(*args, "--commit-every", "20") == 1
    assert read(spark, out / "features").count() == 20
    monkeypatch.undo()
    assert main_run(*args, "--image-size", "192") == 2
    assert "made with other weights, precision or image size" in capsys.readouterr().err
    assert main_run(*args) == 0
    assert manifest_of(out)["added"] == 16

    (out / "_staging" / "killed-run-1").mkdir(parents=True)
    assert main_run(*args[:-1], "overwrite") == 0
    assert not (out / "_staging").exists()  # overwrite leaves no chunk of an earlier run aside


def test_features_of_other_weights_are_not_added_to(spark, weights, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("run", "--input", SAMPLE, "--output", out, "--mode", "incremental")
    assert main_run(*args, "--weights", weights) == 0
    manifest = (out / "manifest.json").read_text()
    other = tmp_path / "other.h5"
    shutil.copy(weights, other)
    with h5py.File(other, "a") as handle:  # same architecture, other bytes
        handle.attrs["note"] = "fine-tuned elsewhere"
    assert main_run(*args, "--weights", other) == 2
    assert "made with other weights, precision or image size" in capsys.readouterr().err
    assert main_run(*args, "--weights", weights, "--image-size", "192") == 2
    assert "made with other weights, precision or image size" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == manifest  # refused before anything changed
    assert json.loads(manifest)["image_size"] == 224

    assert main_run("featurize", *args[1:], "--weights", weights) == 0
    assert not (out / "pca").exists()  # a PCA of earlier features does not outlive them
    assert "pca_k" not in manifest_of(out)


def test_new_and_changed_images_are_added_once_and_replace_their_old_rows(spark, weights, tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    shutil.copytree(SAMPLE, images)
    args = ("run", "--input", images, "--output", out, "--weights", weights, "--mode", "incremental")
    assert main_run(*args) == 0
    before = dict(paths_and_sizes(spark, out))
    jpgs = sorted(images.rglob("*.jpg"))
    changed, template, deleted, emptied, touched = jpgs[:5]
    changed.write_bytes(template.read_bytes())  # other content, other size
    touched_at = touched.stat().st_mtime + 3600
    os.utime(touched, (touched_at, touched_at))  # same size, other time: rewritten in place
    new = changed.with_name("new-image.jpg")
    shutil.copy(template, new)
    deleted.unlink()
    emptied.write_bytes(b"")
    (images / "Test" / "Synthetic Grape" / "empty.jpg").write_bytes(b"")

    assert main_run(*args) == 0
    manifest = manifest_of(out)
    after = paths_and_sizes(spark, out)
    assert (manifest["input_files"], manifest["added"], manifest["featurized"], manifest["failed"]) == (37, 5, 35, 2)
    assert len(after) == len({path for path, _ in after}) == 37
    modified = {
        row["path"]: row["modified"] for row in read(spark, out / "features").select("path", "modified").collect()
    }
    assert modified["file:" + str(touched)].timestamp() == pytest.approx(touched_at, abs=1)
    sizes = {path.removeprefix("file:"): size for path, size in after}
    assert sizes[str(changed)] == template.stat().st_size != before["file:" + str(changed)]
    assert (sizes[str(emptied)], str(deleted) in sizes) == (0, False)

    assert main_run(*args) == 0  # and the 0-byte files are not added twice
    assert (manifest_of(out)["added"], len(paths_and_sizes(spark, out))) == (0, 37)


def test_features_in_parquets_standard_list_layout_take_new_rows(spark, weights, tmp_path):
    """features/ written before vectors were one repeated float column (a group
    per element): an incremental run adds to it, and readers see one table."""
    out = tmp_path / "out"
    args = ("featurize", "--input", SAMPLE, "--output", out, "--weights", weights, "--mode", "incremental")
    assert main_run(*args) == 0
    expected = {row["path"]: row["features"] for row in read(spark, out / "features").collect()}
    standard = read(spark, out / "features").withColumn("features", F.col("features").cast("array<float>"))
    spark.conf.set("spark.sql.parquet.writeLegacyFormat", "false")
    try:  # as earlier releases wrote it, less 6 rows for the rerun to add
        standard.orderBy("path").limit(30).coalesce(1).write.parquet(str(tmp_path / "standard"))
    finally:
        spark.conf.set("spark.sql.parquet.writeLegacyFormat", "true")
    for part in (out / "features").glob("part-*"):
        part.unlink()
    for part in (tmp_path / "standard").glob("part-*"):
        shutil.move(part, out / "features" / part.name)

    assert main_run(*args) == 0
    assert (manifest_of(out)["added"], manifest_of(out)["featurized"]) == (6, 36)
    layouts = {
        column.path
        for part in (out / "features").glob("part-*.parquet")
        for column in pq.ParquetFile(part).schema
        if column.path.startswith("features.")
    }
    assert layouts == {"features.list.element", "features.array"}
    spark_rows = {row["path"]: row["features"] for row in read(spark, out / "features").collect()}
    pandas_rows = pd.read_parquet(out / "features").set_index("path")["features"]
    assert spark_rows.keys() == set(pandas_rows.index) == expected.keys()
    for path, vector in expected.items():
        np.testing.assert_allclose(spark_rows[path], vector, rtol=1e-6)
        np.testing.assert_allclose(pandas_rows[path], vector, rtol=1e-6)


@pytest.mark.slow
def test_a_run_killed_mid_featurization_resumes_with_every_image_once(spark, weights, real_subset, tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    for path in sorted(real_subset.rglob("*.jpg"))[::4]:  # 400 real images
        (images / path.relative_to(real_subset)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, images / path.relative_to(real_subset))
    command = [
        str(Path(sys.executable).with_name("fruits")),
        "featurize",
        "--input", str(images), "--output", str(out), "--weights", str(weights),
        "--mode", "incremental", "--commit-every", "50",
    ]  # fmt: skip
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    committed = set()
    deadline = time.monotonic() + 300
    while len(committed) < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        if (out / "features").is_dir():
            committed = {path.name.split("-", 2)[2] for path in (out / "features").glob("part-*.parquet")}
    assert run.poll() is None, "the run ended before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)  # the driver, its JVM and the Python workers
    run.wait()
    assert not (out / "manifest.json").exists()
    killed_rows = read(spark, out / "features").count()
    assert 100 <= killed_rows < 400

    assert main_run(*command[1:]) == 0
    manifest = manifest_of(out)
    rows = read(spark, out / "features").select("path").collect()
    assert len(rows) == len({row["path"] for row in rows}) == 400
    assert (manifest["added"], manifest["featurized"], manifest["failed"]) == (400 - killed_rows, 400, 0)
