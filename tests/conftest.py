"""One Spark session for the whole run, real data through FRUITS_DATA / FRUITS_WEIGHTS.

Without the shared data, tests that need it skip on a laptop and fail in CI.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import fruits
from fruits import class_archive
from fruits.config import Config
from fruits.session import get_spark
from tests.iam_policy import decision

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
# The real-image pipeline run and its int8 accuracy guard: every 3rd class (47 classes, 940 test images, so one
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
    """Converted models and event logs go to a fresh cache, not the user's; the
    JVM class archive is the user's (built here when `make` has not)."""
    archive = class_archive.build()
    cache = tmp_path_factory.mktemp("cache")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    if archive:
        (cache / "fruits").mkdir()
        (cache / "fruits" / archive.parent.name).symlink_to(archive.parent)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, so the tests speak TLS to moto as clients do to AWS."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "moto.pem", folder / "moto.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def bucket_policy_with_conditions(bucket, action: str, resource: str):
    """moto 5.2 applies bucket policies but ignores their Conditions, so a
    deny-without-TLS statement would deny everything: evaluate them as AWS does,
    for requests that came over TLS (as the tests' do)."""
    from moto.iam.access_control import PermissionResult

    if bucket.policy is None:
        return PermissionResult.NEUTRAL
    verdict = decision(json.loads(bucket.policy), action, resource, {"aws:SecureTransport": "true"})
    return {"Deny": PermissionResult.DENIED, "Allow": PermissionResult.PERMITTED}.get(verdict, PermissionResult.NEUTRAL)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """moto's server on 127.0.0.1, TLS only: the real AWS API, with fake credentials
    and a pinned region so no test can reach or bill real AWS. Every request it
    answers came over TLS, as to AWS, so the bucket policy's aws:SecureTransport
    condition is evaluated as "true" (bucket_policy_with_conditions)."""
    import threading

    from moto.s3.models import FakeBucket
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"  # `emr up` attaches AmazonEMRServicePolicy_v2
    moto_get_permission, FakeBucket.get_permission = FakeBucket.get_permission, bucket_policy_with_conditions
    cert_file, key_file = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=(str(cert_file), str(key_file)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_CA_BUNDLE": str(cert_file),
    }
    saved = {key: os.environ.get(key) for key in (*fake, "AWS_PROFILE", "AWS_ENDPOINT_URL")}
    os.environ.update(fake)
    os.environ.pop("AWS_PROFILE", None)
    endpoint = f"https://127.0.0.1:{server.port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    yield endpoint
    server.shutdown()
    FakeBucket.get_permission = moto_get_permission
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def forget_a_forked_parents_gateway() -> None:
    """pyspark keeps its JVM gateway in class attributes, which a forked process
    (`make mutation`'s test runs) inherits with the parent's open sockets: start
    a JVM of this process's own instead of sharing them."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if getattr(SparkContext, "_fruits_gateway_pid", os.getpid()) != os.getpid():
        SparkContext._gateway = SparkContext._jvm = SparkContext._active_spark_context = None
        SparkSession._instantiatedSession = SparkSession._activeSession = None
    SparkContext._fruits_gateway_pid = os.getpid()


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    forget_a_forked_parents_gateway()
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


def without_tensorflow(folder: Path) -> Path:
    """A PYTHONPATH entry on which `import tensorflow` (or keras, tf2onnx) fails, as
    on the EMR nodes, whose lean stack has none of them."""
    for name in ("tensorflow", "keras", "tf2onnx"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('no {name} on the EMR nodes')\n")
    return folder


def modification_times(*folders: Path, skip_suffix: str | None = None) -> dict[str, int]:
    """Every file under ``folders`` and its modification time (ns): unchanged means untouched."""
    files = (path for folder in folders for path in folder.rglob("*") if path.is_file())
    return {str(path): path.stat().st_mtime_ns for path in files if skip_suffix is None or path.suffix != skip_suffix}
