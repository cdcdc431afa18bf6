"""One settings object shared by the CLI, the notebooks and EMR steps."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import tempfile
from dataclasses import dataclass, field
from importlib import metadata

MODES = ("error", "overwrite", "incremental")
ENGINES = ("onnx", "keras")
PRECISIONS = ("fp32", "int8")
# --image-size: sides whose linear-probe accuracy on the full shared split stays
# within 0.5 point of 224's (README, "Smaller inputs"): 160 and 128 lose 1.0 and 2.1.
IMAGE_SIDES = (192, 224)
FEATURE_DIM = 1280  # MobileNetV2's pooled features: the most components a PCA can keep
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^file:")


class ConfigError(ValueError):
    """A user-facing problem with settings or inputs: one line, exit code 2."""


def default_weights() -> str:
    return os.environ.get("FRUITS_WEIGHTS", "imagenet")


def _can_write(path: str) -> bool:
    """Whether ``path`` is, or could be made, a writable folder (nothing is made here)."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    return os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK)


def cache_dir() -> str:
    """The user's cache for fruits: converted models, local event logs.

    Under YARN, HOME is the NodeManager's `yarn.nodemanager.user-home-dir`
    (default /home/), which the container's user cannot write: the cache then
    lives in a private folder of the system's temporary directory instead.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    preferred = os.path.join(cache, "fruits")
    if _can_write(preferred):
        return preferred
    return _private_temporary_folder()


def _private_temporary_folder() -> str:
    """<tmp>/fruits-cache-<uid>, made 0700 and checked to be this user's alone (it
    holds models that runs trust); a fresh folder if someone else's is in the way."""
    folder = os.path.join(tempfile.gettempdir(), f"fruits-cache-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    status = os.lstat(folder)
    if status.st_uid == os.getuid() and not status.st_mode & 0o077 and os.path.isdir(folder):
        return folder
    return tempfile.mkdtemp(prefix="fruits-cache-")


def default_event_log_dir() -> str:
    """Spark event logs of local runs, for the History Server."""
    return os.path.join(cache_dir(), "spark-events")


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def default_engine() -> str:
    """onnx (ONNX Runtime, ~3x faster on CPU, same features) when installed, else keras."""
    return "onnx" if importlib.util.find_spec("onnxruntime") else "keras"


@dataclass(frozen=True)
class Config:
    """Everything a run needs; validated once, before any work starts."""

    input: str | None = None
    output: str | None = None
    weights: str = field(default_factory=default_weights)
    engine: str = field(default_factory=default_engine)
    precision: str = "fp32"
    image_size: int = 224  # side of the square MobileNetV2 input; 224 is the reference
    master: str | None = None
    mode: str = "error"
    pca_k: int | None = None
    pca_variance: float = 0.95
    standardize: bool = False
    batch_size: int = 64
    commit_every: int = 5000
    arrow_batch_size: int = 256
    partitions: int | None = None
    driver_memory: str = "4g"
    csv: bool = False
    limit_per_class: int | None = None
    event_log_dir: str = field(default_factory=default_event_log_dir)
    onnx_model: str | None = None  # a model converted by fruits elsewhere, instead of converting the weights

    def __post_init__(self) -> None:
        for name, choices in (
            ("mode", MODES),
            ("engine", ENGINES),
            ("precision", PRECISIONS),
            ("image_size", IMAGE_SIDES),
        ):
            if getattr(self, name) not in choices:
                option = "--" + name.replace("_", "-")
                raise ConfigError(
                    f"{option} must be one of {', '.join(map(str, choices))}, got {getattr(self, name)!r}"
                )
        if self.precision == "int8" and self.engine != "onnx":
            raise ConfigError("--precision int8 needs --engine onnx")
        if self.onnx_model and self.engine != "onnx":
            raise ConfigError("--onnx-model needs --engine onnx")
        if self.precision == "int8" and self.mode == "incremental":
            raise ConfigError("--precision int8 calibrates on each run's input, so --mode incremental cannot add to it")
        if not 0.0 < self.pca_variance <= 1.0:
            raise ConfigError(f"--pca-variance must be in (0, 1], got {self.pca_variance}")
        if self.pca_k is not None and not 1 <= self.pca_k <= FEATURE_DIM:
            raise ConfigError(f"--pca-k must be from 1 to {FEATURE_DIM} (the features' dimension), got {self.pca_k}")
        if self.limit_per_class and self.mode == "incremental":
            raise ConfigError("--limit-per-class with --mode incremental would drop the rows of the images left out")
        for name in ("batch_size", "arrow_batch_size", "commit_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        for name in ("partitions", "limit_per_class"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")

    @classmethod
    def from_params(cls, **params) -> Config:
        """Settings from CLI arguments or notebook parameters; None means the default."""
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**{key: value for key, value in params.items() if value is not None})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def to_uri(location: str) -> str:
    """Turn a bare local path into an absolute file: URI; pass URIs through.

    Bare paths always mean the local file system (use hdfs:// for HDFS), so a
    relative path resolves against the caller's working directory, not Spark's.
    """
    if _SCHEME.match(location):
        return location.rstrip("/") or location
    return "file://" + os.path.abspath(os.path.expanduser(location))
