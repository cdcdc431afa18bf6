import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from fruits.cli import main
from tests.conftest import SAMPLE


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(code: int, err: str, fragment: str) -> None:
    assert code == 2
    assert err.count("\n") == 1, err
    assert fragment in err


def test_console_script_help_lists_the_commands():
    fruits = Path(sys.executable).with_name("fruits")
    result = subprocess.run([fruits, "--help"], capture_output=True, text=True, check=True)
    listed = [
        line.split()[0] for line in result.stdout.splitlines() if line[:5].startswith("    ") and line[4:5].isalnum()
    ]
    assert listed == [
        "run",
        "featurize",
        "pca",
        "train",
        "export",
        "predict",
        "s3",
        "emr",
    ]


def command_lines() -> list[tuple[str, ...]]:
    """Every command and action of `fruits`, from the parser itself."""
    from fruits.cli import build_parser

    def choices(parser) -> dict:
        found = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        return found[0].choices if found else {}

    lines = []
    for name, command in choices(build_parser()).items():
        actions = choices(command)
        lines += [(name, action) for action in actions] if actions else [(name,)]
    return lines


def test_every_command_and_action_has_help_and_aws_ones_take_region_and_endpoint(capsys):
    lines = command_lines()
    assert len(lines) == 6 + 3 + 8  # run featurize pca train export predict; s3 x3; emr x8
    for line in lines:
        code, out, _ = run_cli(capsys, *line, "--help")
        assert (code, out.startswith(f"usage: fruits {' '.join(line)} ")) == (0, True), line
        calls_aws = line[0] in ("s3", "emr") and line != ("emr", "cost")
        assert ("--endpoint-url" in out, "--region" in out) == (calls_aws, calls_aws or line == ("emr", "cost")), line


def test_debug_adds_the_traceback_before_the_one_line_error(spark, capsys, tmp_path, weights):
    missing = tmp_path / "nope"
    args = ("featurize", "--input", missing, "--output", tmp_path / "out", "--weights", weights, "--debug")
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert err.startswith("Traceback (most recent call last):\n")
    assert err.endswith(f"fruits featurize: error: input not found: {missing}\n")


@pytest.mark.parametrize("command", ["run", "featurize", "pca"])
def test_every_command_has_help(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert "--input" in out
    assert "--mode" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--pca-variance", "1.5"], "must be in (0, 1]"),
        (["--pca-variance", "lots"], "not a number"),
        (["--pca-k", "0"], "must be >= 1"),
        (["--mode", "append"], "invalid choice"),
        (["--engine", "tensorrt"], "invalid choice"),
        (["--precision", "fp16"], "invalid choice"),
        (["--engine", "keras", "--precision", "int8"], "--precision int8 needs --engine onnx"),
        (["--mode", "incremental", "--precision", "int8"], "--mode incremental cannot add to it"),
        (["--pca-k", "3", "--pca-variance", "0.9"], "not allowed with"),
        (["--pca-k", "1281"], "--pca-k must be from 1 to 1280 (the features' dimension), got 1281"),
        (["--mode", "incremental", "--limit-per-class", "2"], "would drop the rows of the images left out"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(capsys, tmp_path, args, fragment):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "--input", SAMPLE, "--output", out, *args)
    assert_usage_error(code, err, fragment)
    assert not out.exists()


def test_a_user_error_is_one_line_from_the_console_script_too(tmp_path, weights):
    """A fresh JVM starts here: its start-up notices must not bury the error."""
    out = tmp_path / "out"
    command = [Path(sys.executable).with_name("fruits"), "featurize", "--input", tmp_path / "nope", "--output", out]
    result = subprocess.run([*command, "--weights", weights], check=False, capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (2, f"fruits featurize: error: input not found: {tmp_path / 'nope'}\n")
    assert not out.exists()


def test_no_java_exits_2_before_starting_spark(tmp_path):
    out = tmp_path / "out"
    command = [Path(sys.executable).with_name("fruits"), "run", "--input", SAMPLE, "--output", out]
    environment = {key: value for key, value in os.environ.items() if key != "JAVA_HOME"} | {"PATH": str(tmp_path)}
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=environment)
    assert result.returncode == 2
    assert result.stderr == "fruits run: error: Java not found: Spark needs Java 17 (install it, or set JAVA_HOME)\n"
    assert not out.exists()


def test_unknown_uri_scheme_exits_2(spark, capsys, tmp_path, weights):
    out = tmp_path / "out"
    source = "nosuch://bucket/images"
    code, _, err = run_cli(capsys, "featurize", "--input", source, "--output", out, "--weights", weights)
    assert_usage_error(code, err, 'No FileSystem for scheme "nosuch"')
    assert not out.exists()


def test_missing_input_exits_2_and_writes_nothing(spark, capsys, tmp_path, weights):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "--input", tmp_path / "nope", "--output", out, "--weights", weights)
    assert_usage_error(code, err, "input not found")
    assert not out.exists()


def test_folder_without_images_exits_2_and_writes_nothing(spark, capsys, tmp_path, weights):
    (tmp_path / "in" / "Training" / "Kiwi").mkdir(parents=True)
    (tmp_path / "in" / "Training" / "Kiwi" / "readme.txt").write_text("no images here")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "featurize", "--input", tmp_path / "in", "--output", out, "--weights", weights)
    assert_usage_error(code, err, "no .jpg/.jpeg/.png images found")
    assert not out.exists()


def test_existing_output_is_refused_in_error_mode(spark, capsys, tmp_path, weights):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "run", "--input", SAMPLE, "--output", out, "--weights", weights)
    assert_usage_error(code, err, "output already exists")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_output_inside_input_is_refused(spark, capsys, tmp_path, weights):
    code, _, err = run_cli(capsys, "run", "--input", tmp_path, "--output", tmp_path / "out", "--weights", weights)
    assert_usage_error(code, err, "must not be inside input")
    assert not (tmp_path / "out").exists()


def test_missing_weights_file_exits_2(spark, capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "--input", SAMPLE, "--output", out, "--weights", tmp_path / "w.h5")
    assert_usage_error(code, err, "weights file not found")
    assert not out.exists()


def test_weights_of_another_architecture_exit_2(spark, capsys, tmp_path):
    weights = tmp_path / "other.h5"
    with h5py.File(weights, "w") as handle:
        handle.attrs["layer_names"] = [b"dense"]
        handle.create_group("dense").attrs["weight_names"] = []
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "--input", SAMPLE, "--output", out, "--weights", weights)
    assert_usage_error(code, err, "is not MobileNetV2 no-top Keras weights")
    assert not out.exists()


def test_pca_without_features_exits_2(spark, capsys, tmp_path):
    code, _, err = run_cli(capsys, "pca", "--input", tmp_path)
    assert_usage_error(code, err, "run `fruits featurize` first")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["run", "featurize"])
def test_a_failure_during_the_work_exits_1_with_one_line(spark, capsys, tmp_path, weights, command):
    """Spark cannot create the output (its parent is a file): not a usage error, exit 1."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    code, stdout, err = run_cli(capsys, command, "--input", SAMPLE, "--output", out, "--weights", weights)
    assert (code, stdout, err.count("\n")) == (1, "", 1), err
    assert err.startswith(f"fruits {command}: failed: Py4JJavaError: ")
    assert err.endswith("(rerun with --debug for details)\n")
    assert blocker.read_text() == "not a folder"


def test_too_few_featurized_images_stop_before_the_pca_with_the_features_kept(spark, capsys, tmp_path, weights):
    """One decodable image: `fruits run` keeps its (whole) features with their
    manifest and exits 2 before the PCA; `fruits pca` then changes nothing."""
    images, out = tmp_path / "images", tmp_path / "out"
    (images / "Training" / "Kiwi").mkdir(parents=True)
    shutil.copy(next(SAMPLE.rglob("*.jpg")), images / "Training" / "Kiwi" / "good.jpg")
    (images / "Training" / "Kiwi" / "bad.jpg").write_bytes(b"not a jpeg")
    code, _, err = run_cli(capsys, "run", "--input", images, "--output", out, "--weights", weights)
    assert_usage_error(code, err, f"PCA needs at least 2 images with features, 1 in file://{out}/features")
    assert err.endswith("; the features are written\n")
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["featurized"], manifest["failed"], "pca_k" in manifest) == (1, 1, False)
    assert sorted(path.name for path in out.iterdir() if not path.name.endswith(".crc")) == [
        "features",
        "manifest.json",
    ]

    code, _, err = run_cli(capsys, "pca", "--input", out, "--mode", "overwrite")
    assert_usage_error(code, err, "PCA needs at least 2 images with features, 1 in")
    assert json.loads((out / "manifest.json").read_text()) == manifest


def write_toy_features(spark, out: Path) -> None:
    """Six 2-d vectors in features/, as Spark writes them (with _SUCCESS), no manifest."""
    features = [(f"file:/x/Training/K/{i}.jpg", [float(i), float(i % 3)]) for i in range(6)]
    spark.createDataFrame(features, "path string, features array<float>").write.parquet(str(out / "features"))


@pytest.mark.parametrize("leftover", ["features/_temporary/0", "_staging/run-1"])
def test_pca_refuses_features_a_killed_run_left(spark, capsys, tmp_path, leftover):
    """Spark's _temporary (a killed one-job run) or chunks aside (a killed incremental run)."""
    out = tmp_path / "out"
    write_toy_features(spark, out)
    (out / leftover).mkdir(parents=True)
    code, _, err = run_cli(capsys, "pca", "--input", out, "--pca-k", "1")
    assert_usage_error(code, err, f"{out} has no manifest and holds a killed run's leftovers")
    assert not (out / "pca").exists()
    assert not (out / "manifest.json").exists()


def test_a_failure_in_the_pca_exits_1_and_leaves_no_manifest(spark, capsys, monkeypatch, tmp_path):
    out = tmp_path / "out"
    write_toy_features(spark, out)

    def broken_fit(*_, **__):
        raise RuntimeError("eigendecomposition did not converge")

    monkeypatch.setattr("fruits.pipeline.fit_pca", broken_fit)
    code, stdout, err = run_cli(capsys, "pca", "--input", out, "--pca-k", "1")
    assert (code, stdout) == (1, "")
    assert err == (
        "fruits pca: failed: RuntimeError: eigendecomposition did not converge (rerun with --debug for details)\n"
    )
    assert not (out / "manifest.json").exists()
    assert not (out / "pca").exists()
