"""--mode incremental: only new or changed images, every image exactly once, even after a kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLE
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

    assert main_run(*args) == 0
    second = manifest_of(out)
    assert (second["added"], second["featurized"], second["failed"], second["pca_k"]) == (0, 36, 1, first["pca_k"])
    assert second["seconds"]["pca"] == 0.0
    assert sorted(p.name for p in (out / "features").iterdir()) == features_before
    assert not (out / "_staging").exists()


def test_new_and_changed_images_are_added_once_and_replace_their_old_rows(spark, weights, tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    shutil.copytree(SAMPLE, images)
    args = ("run", "--input", images, "--output", out, "--weights", weights, "--mode", "incremental")
    assert main_run(*args) == 0
    before = dict(paths_and_sizes(spark, out))
    jpgs = sorted(images.rglob("*.jpg"))
    changed, template = jpgs[0], jpgs[1]
    changed.write_bytes(template.read_bytes())  # other content, other size
    new = changed.with_name("new-image.jpg")
    shutil.copy(template, new)

    assert main_run(*args) == 0
    manifest = manifest_of(out)
    after = paths_and_sizes(spark, out)
    assert (manifest["added"], manifest["featurized"], len(after)) == (2, 37, 37)
    assert len({path for path, _ in after}) == 37
    sizes = dict(after)
    changed_key = next(path for path in sizes if path.endswith(changed.relative_to(images).as_posix()))
    assert sizes[changed_key] == template.stat().st_size != before[changed_key]


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
