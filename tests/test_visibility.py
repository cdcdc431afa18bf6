"""Readers never see half-written results as complete: every run withdraws the
manifest before it changes a result folder and writes it last, so whenever a
manifest is there the folders hold exactly what it describes."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fruits.config import ConfigError
from fruits.output import read_parquet
from tests.conftest import SAMPLE
from tests.test_pipeline import main_run


def parquet_rows(folder: Path) -> int:
    """Rows in a folder's data files as a reader lists them now (-1 if it cannot)."""
    try:
        return sum(pq.read_metadata(f).num_rows for f in folder.glob("*.parquet") if not f.name.startswith(("_", ".")))
    except (OSError, ValueError):  # a file renamed or half-written under the reader
        return -1


def look(out: Path) -> tuple[tuple, bool] | None:
    """One reader's look: (which result: run id and PCA k, do the folders match
    the manifest?), or None when there is no manifest or it changed meanwhile.
    A manifest that is there but does not parse is a torn write: a mismatch."""
    try:
        before = (out / "manifest.json").read_text()
        manifest = json.loads(before)
        features = parquet_rows(out / "features")
        pca = parquet_rows(out / "pca") if "pca_k" in manifest else None
        if (out / "manifest.json").read_text() != before:
            return None
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return ("torn manifest", None), False
    matches = features == manifest["input_files"] and pca in (None, manifest["featurized"])
    return (manifest["run_id"], manifest.get("pca_k")), matches


class Reader(threading.Thread):
    """Looks at an output folder in a loop while runs write to it."""

    def __init__(self, out: Path):
        super().__init__(daemon=True)
        self.out, self.looks, self.stopped = out, [], threading.Event()

    def run(self):
        while not self.stopped.wait(0.005):  # leave the GIL to the runs
            self.looks.append(look(self.out))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.join()
        self.looks.append(look(self.out))  # the last run's result


def test_readers_only_ever_see_whole_results(spark, weights, tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    shutil.copytree(SAMPLE, images)
    base = ("--output", out, "--weights", weights)
    with Reader(out) as reader:
        assert main_run("run", "--input", images, *base) == 0
        (images / "Test" / "Synthetic Grape" / "empty.jpg").write_bytes(b"")  # its error row is written apart
        assert main_run("run", "--input", images, *base, "--mode", "overwrite") == 0
        assert main_run("pca", "--input", out, "--pca-k", "3", "--mode", "overwrite") == 0
        shutil.copytree(images / "Training" / "Synthetic Grape", images / "Training" / "Synthetic Grape 2")
        incremental = ("--mode", "incremental", "--commit-every", "4", "--pca-k", "3")
        assert main_run("run", "--input", images, *base, *incremental) == 0
    looks = [entry for entry in reader.looks if entry is not None]
    assert [entry for entry in looks if not entry[1]] == []
    assert len({result for result, _ in looks}) == 4  # every run's result was seen whole
    first_result = next(i for i, entry in enumerate(reader.looks) if entry is not None)
    assert None in reader.looks[first_result:]  # the reader also looked while later runs were writing
    final = json.loads((out / "manifest.json").read_text())
    assert (final["input_files"], final["featurized"], final["failed"], final["pca_k"]) == (45, 44, 1, 3)


def test_a_refused_run_keeps_the_manifest_and_reading_without_one_is_refused(spark, weights, tmp_path, capsys):
    out = tmp_path / "out"
    assert main_run("featurize", "--input", SAMPLE, "--output", out, "--weights", weights) == 0
    assert main_run("pca", "--input", out, "--pca-k", "3") == 0
    manifest = (out / "manifest.json").read_text()
    assert main_run("pca", "--input", out, "--pca-k", "4") == 2  # pca/ exists and --mode is error
    assert "output already exists" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == manifest
    assert read_parquet(spark, str(out), "pca").count() == 36
    (out / "manifest.json").unlink()
    with pytest.raises(ConfigError, match=r"no manifest\.json: a run is still writing there"):
        read_parquet(spark, str(out), "features")
