"""One Spark session for the whole run, real data through FRUITS_DATA / FRUITS_WEIGHTS.

Without the shared data, tests that need it skip on a laptop and fail in CI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import fruits
from fruits.config import Config
from fruits.session import get_spark

ROOT = Path(__file__).resolve().parents[1]
# Spark's Python workers and the console script import `fruits` by name: let them
# find the copy these tests import (`make mutation` tests a mutated copy in mutants/).
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(Path(fruits.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
)
SAMPLE = ROOT / "data_sample"
DATA = Path(os.environ.get("FRUITS_DATA", ROOT.parent / "shared" / "data" / "fruits-360"))
WEIGHTS = Path(
    os.environ.get("FRUITS_WEIGHTS", ROOT.parent / "shared" / "models" / "mobilenet_v2_1.0_224_no_top_reconstructed.h5")
)
# 20 Fruits-360 classes: every 7th, so near-identical varieties don't dominate.
REAL_CLASSES_STEP = 7
REAL_CLASSES = 20
# The int8 accuracy guard: every 3rd class (47 classes, 940 test images, so one
# image is 0.1 point; on 400 test images one borderline image is 0.25).
GUARD_CLASSES_STEP = 3


def require(path: Path, what: str) -> Path:
    if not path.exists():
        message = f"{what} not found at {path} (set {'FRUITS_DATA' if 'data' in what else 'FRUITS_WEIGHTS'})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Converted models and event logs go to a fresh cache, not the user's."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's server on 127.0.0.1: the real AWS API over HTTP, with fake credentials
    and a pinned region so no test can reach or bill real AWS."""
    from moto.server import ThreadedMotoServer

    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"  # `emr up` attaches AmazonEMRServicePolicy_v2
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    fake = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    saved = {key: os.environ.get(key) for key in (*fake, "AWS_PROFILE", "AWS_ENDPOINT_URL")}
    os.environ.update(fake)
    os.environ.pop("AWS_PROFILE", None)
    endpoint = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    events = tmp_path_factory.mktemp("spark-events")
    session = get_spark(Config(master="local[2]", driver_memory="2g", event_log_dir=str(events)))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def weights() -> Path:
    return require(WEIGHTS, "MobileNetV2 weights")


def copy_classes(target: Path, step: int, count: int | None = None) -> Path:
    """Copy every ``step``-th real class (Training 60 + Test 20 images each)."""
    data = require(DATA, "Fruits-360 data")
    classes = sorted(p.name for p in (data / "Training").iterdir())[::step][:count]
    for split in ("Training", "Test"):
        for name in classes:
            shutil.copytree(data / split / name, target / split / name)
    return target


@pytest.fixture(scope="session")
def real_subset(tmp_path_factory) -> Path:
    """A copy of 20 real classes (1,600 images)."""
    return copy_classes(tmp_path_factory.mktemp("fruits360-subset"), REAL_CLASSES_STEP, REAL_CLASSES)


@pytest.fixture(scope="session")
def guard_subset(tmp_path_factory) -> Path:
    """A copy of 47 real classes (3,760 images)."""
    return copy_classes(tmp_path_factory.mktemp("fruits360-guard"), GUARD_CLASSES_STEP)
