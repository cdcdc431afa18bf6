"""What the nodes run: the fruits wheel, the nodes' lock file and the step entry
script to s3://B/code/ and the bootstrap action to s3://B/bootstrap/ (`fruits emr
up`); the model, converted to ONNX here, to s3://B/code/models/ (`fruits emr run`),
so that the nodes need neither TensorFlow nor the Keras weights."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fruits.aws import error_code
from fruits.config import ConfigError, cache_dir
from fruits.emr.spec import ROOT

BOOTSTRAP_SCRIPT = ROOT / "bootstrap" / "install-python-deps.sh"
NODES_LOCK = ROOT / "bootstrap" / "requirements-emr.lock"  # the nodes' Python stack, hash-pinned
ENTRY_SCRIPT = Path(__file__).resolve().parents[1] / "emr_step.py"
ENTRY_KEY = "code/emr_step.py"
BOOTSTRAP_KEY = "bootstrap/install-python-deps.sh"


def build_wheel(out_dir: Path) -> Path:
    """The project's wheel, built from a copy of the sources (no build/ left in the checkout)."""
    if not (ROOT / "pyproject.toml").is_file():
        raise ConfigError(f"no pyproject.toml in {ROOT}: run `fruits emr up` from a checkout, or pass --wheel")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fruits-wheel-") as tmp:
        source = Path(tmp) / "fruits"
        shutil.copytree(ROOT / "fruits", source / "fruits", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, source / name)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
        result = subprocess.run(
            [*command, "-w", str(out_dir), str(source)], capture_output=True, text=True, check=False
        )
    wheels = sorted(out_dir.glob("fruits-*.whl"), key=lambda path: path.stat().st_mtime)
    if result.returncode or not wheels:
        detail = (result.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise ConfigError(f"building the fruits wheel failed: {detail}")
    return wheels[-1]


def upload_code(s3, bucket: str, wheel: Path) -> list[str]:
    """s3://B/code/: one fruits-*.whl, the nodes' lock file, the step entry script;
    s3://B/bootstrap/: the bootstrap action."""
    for path in (NODES_LOCK, ENTRY_SCRIPT, BOOTSTRAP_SCRIPT):
        if not path.is_file():
            raise ConfigError(f"{path} not found: run `fruits emr up` from a checkout of the project")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="code/fruits-").get("Contents", [])
    for item in listed:
        if item["Key"].endswith(".whl") and item["Key"] != f"code/{wheel.name}":
            s3.delete_object(Bucket=bucket, Key=item["Key"])  # the bootstrap installs the one wheel there
    uploads = (
        (wheel, f"code/{wheel.name}"),
        (NODES_LOCK, f"code/{NODES_LOCK.name}"),
        (ENTRY_SCRIPT, ENTRY_KEY),
        (BOOTSTRAP_SCRIPT, BOOTSTRAP_KEY),
    )
    for path, key in uploads:
        s3.upload_file(str(path), bucket, key)
    return [f"s3://{bucket}/{key}" for _, key in uploads]


def upload_model(s3, bucket: str, weights: str) -> str:
    """The Keras weights converted to ONNX here (cached, as for local runs) and
    uploaded once to s3://B/code/models/<weights sha256>.onnx; returns its URI."""
    from fruits import engines
    from fruits.features import file_sha256, resolve_weights

    weights_path = resolve_weights(weights)
    sha256 = file_sha256(weights_path)
    path = engines.onnx_model(weights_path, sha256, Path(cache_dir()) / "models")
    key = f"code/models/{sha256}.onnx"
    try:
        uploaded = s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == path.stat().st_size
    except Exception as exc:
        if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
            raise
        uploaded = False
    if not uploaded:
        s3.upload_file(str(path), bucket, key)
        print(f"uploaded the model (weights {sha256[:16]}, converted to ONNX) to s3://{bucket}/{key}", file=sys.stderr)
    return f"s3://{bucket}/{key}"
