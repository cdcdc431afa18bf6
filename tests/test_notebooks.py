"""The notebooks run top to bottom with papermill, on data_sample and on real images."""

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
from PIL import Image

from fruits import engines
from fruits.config import cache_dir
from fruits.emr.cluster import remembered
from fruits.features import file_sha256
from tests.conftest import DATA, ROOT, SAMPLE, without_tensorflow

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LOCAL_PARAMETERS = {
    "input_uri",
    "output_uri",
    "weights",
    "limit_per_class",
    "pca_variance",
    "spark_master",
    "event_log_dir",
    "onnx_model",
}
EMR_PARAMETERS = {
    "bucket", "region", "endpoint_url", "local_images", "dataset", "run_id", "ssh_cidr", "key_name",
    "core_type", "core_count", "dry_run", "simulate_step", "weights",
}  # fmt: skip
CLASSIFIER_PARAMETERS = {"output_uri", "weights", "spark_master", "event_log_dir", "photos"}


def execute(name: str, workdir: Path, **parameters) -> nbformat.NotebookNode:
    executed = workdir / f"executed-{name}"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / name),
        str(executed),
        parameters={key: str(value) if isinstance(value, Path) else value for key, value in parameters.items()},
        cwd=str(ROOT / "notebooks"),
        kernel_name="python3",
        progress_bar=False,
    )
    return nbformat.read(executed, as_version=4)


FIGURES = ("sample_images", "variance_curve", "scree", "projection", "confusion")
LIVY_KERNEL = Path(__file__).with_name("livy_kernel.py")


def png_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (width, height) of every PNG in ``folder``."""
    return {path.stem: Image.open(path).size for path in folder.glob("*.png")}


def run_on_pyspark_kernel(name: str, workdir: Path, **parameters) -> list[dict]:
    """Cells of notebook ``name`` run as EMR Studio's PySpark kernel would (tests/livy_kernel.py),
    from an empty working directory, with no TensorFlow or Keras importable (the
    nodes' stack): where each ran and what it returned."""
    result = workdir.parent / f"{name}.livy.json"
    values = [f"{key}={json.dumps(value)}" for key, value in parameters.items()]
    lean = workdir.parent / "lean"
    if not lean.exists():
        without_tensorflow(lean)
    environment = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(lean), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, str(LIVY_KERNEL), str(ROOT / "notebooks" / f"{name}.ipynb"), str(result), *values]
    run = subprocess.run(command, check=False, cwd=workdir, env=environment, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(result.read_text())


def images_in(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


def test_there_are_four_notebooks_in_order():
    assert [path.name for path in NOTEBOOKS] == [
        "01_local_setup.ipynb",
        "02_featurization.ipynb",
        "03_pca.ipynb",
        "04_emr_run.ipynb",
        "05_classifier.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_committed_notebooks_have_no_outputs_and_one_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    assigned = {line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line}
    expected = {"04": EMR_PARAMETERS, "05": CLASSIFIER_PARAMETERS}.get(path.name[:2], LOCAL_PARAMETERS)
    assert assigned == expected


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook-events")


def test_notebooks_run_in_order_on_data_sample(weights, tmp_path, events):
    params = {"input_uri": SAMPLE, "output_uri": tmp_path / "out", "weights": weights, "event_log_dir": events}
    earlier_logs = set(events.iterdir())  # other tests of this module log there too
    setup = execute("01_local_setup.ipynb", tmp_path, **params)
    assert images_in(setup) == 1
    assert "3 classes, 36 images" in json.dumps([cell.get("outputs", []) for cell in setup.cells])

    execute("02_featurization.ipynb", tmp_path, **params)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["input_files"], manifest["featurized"], manifest["feature_dim"]) == (36, 36, 1280)

    pca = execute("03_pca.ipynb", tmp_path, **params)
    assert images_in(pca) == 4  # variance curve, scree, 2-D projection, confusion matrix
    figures = png_sizes(tmp_path / "out" / "figures")
    assert figures.keys() == set(FIGURES)  # a headless run leaves them behind
    assert all(width >= 200 and height >= 150 for width, height in figures.values()), figures
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["pca_k"] >= 2
    assert json.loads((tmp_path / "out" / "probe.json").read_text())["test_rows"] == 12
    new_logs = set(events.iterdir()) - earlier_logs
    assert [log.name.startswith("local-") for log in new_logs] == [True] * 3, "each notebook's session logs its events"

    app = execute("05_classifier.ipynb", tmp_path, output_uri=tmp_path / "out", weights=weights, photos=8)
    assert images_in(app) == 2  # confusion matrix, predicted photos
    assert {"classifier_confusion", "predictions"} <= png_sizes(tmp_path / "out" / "figures").keys()
    assert json.loads((tmp_path / "out" / "classifier" / "metrics.json").read_text())["test_rows"] == 12
    assert (tmp_path / "out" / "fruits.onnx").stat().st_size > 8_000_000


def test_a_failing_cell_fails_with_its_error_visible(weights, tmp_path, events):
    params = {"input_uri": tmp_path / "missing", "output_uri": tmp_path / "out", "weights": weights}
    with pytest.raises(papermill.PapermillExecutionError, match="input not found"):
        execute("02_featurization.ipynb", tmp_path, event_log_dir=events, **params)
    assert not (tmp_path / "out").exists()


def test_emr_notebook_runs_against_moto(moto_endpoint, weights, tmp_path):
    notebook = execute(
        "04_emr_run.ipynb",
        tmp_path,
        bucket="fruits-notebook-04",
        endpoint_url=moto_endpoint,
        simulate_step=True,
        weights=weights,
    )
    text = json.dumps([cell.get("outputs", []) for cell in notebook.cells])
    assert "36 images: 36 featurized, 0 failed" in text
    assert "TERMINATED" in text
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="fruits-notebook-04")["Contents"]}
    assert "processed/notebook-04/manifest.json" in keys
    assert sum(key.startswith("raw/sample/") and key.endswith(".jpg") for key in keys) == 36
    cluster_id = remembered()["cluster_id"]
    cluster = boto3.client("emr", endpoint_url=moto_endpoint).describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["Status"]["State"] == "TERMINATED"


def check_livy_run(cells: list[dict], pictures: int) -> None:
    failed = [(cell["code"][:80], cell.get("ename"), cell.get("evalue")) for cell in cells if cell["status"] != "ok"]
    assert failed == []
    assert [cell["code"] for cell in cells if cell["ran"] != "livy"] == []  # no logic behind a magic
    images = [Image.open(io.BytesIO(base64.b64decode(cell["image/png"]))) for cell in cells if "image/png" in cell]
    assert len(images) == pictures
    assert all(image.width >= 200 and image.height >= 150 for image in images), [image.size for image in images]


@pytest.mark.parametrize("subset", ["sample", pytest.param("real", marks=pytest.mark.slow)])
def test_notebooks_run_on_the_pyspark_kernel_over_livy(weights, tmp_path, events, subset, request):
    """01-03 as EMR Studio runs them: sparkmagic routing, a Livy session with `spark`
    defined, a closed stdout per statement, %matplot, parameters injected after
    the parameters cell, and a working directory that is neither the repo nor notebooks/."""
    if subset == "sample" and DATA.exists() and "not slow" not in request.config.getoption("markexpr"):
        pytest.skip("the run on real images takes the same path")  # the sample's is for the quick loop
    images = SAMPLE if subset == "sample" else request.getfixturevalue("real_subset")
    container = tmp_path / "container_01"
    container.mkdir()
    out = tmp_path / "out"
    model = engines.onnx_model(weights, file_sha256(weights), Path(cache_dir()) / "models")  # as emr notebook uploads
    params = {"input_uri": f"file://{images}", "output_uri": f"file://{out}", "onnx_model": f"file://{model}"}
    params["event_log_dir"] = str(events)
    check_livy_run(run_on_pyspark_kernel("01_local_setup", container, **params), pictures=1)
    check_livy_run(run_on_pyspark_kernel("02_featurization", container, **params), pictures=0)
    check_livy_run(run_on_pyspark_kernel("03_pca", container, **params), pictures=4)
    manifest = json.loads((out / "manifest.json").read_text())
    expected = 36 if subset == "sample" else 1600
    assert (manifest["input_files"], manifest["featurized"]) == (expected, expected)
    if subset == "real":  # 20 real classes: the probe must tell them apart
        probe = json.loads((out / "probe.json").read_text())
        assert (probe["train_rows"], probe["test_rows"]) == (1200, 400)
        assert probe["accuracy"] >= 0.95
    assert png_sizes(out / "figures").keys() == set(FIGURES)
    assert list(container.iterdir()) == []  # nothing written relative to the container's folder
