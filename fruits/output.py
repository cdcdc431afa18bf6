"""Where results go: Hadoop file-system helpers (local, HDFS, S3 alike) and the manifest."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `fruits predict` and the AWS commands run without pyspark
    from pyspark.sql import SparkSession

from fruits.config import ConfigError, to_uri

MANIFEST = "manifest.json"
_GLOB_CHARS = re.compile(r"([\[\]{}*?\\])")


def literal_path(uri: str) -> str:
    """Escape glob characters so Spark's readers take ``uri`` literally
    (an output named ``run-local[2]`` must not be read as a pattern)."""
    return _GLOB_CHARS.sub(r"\\\1", uri)


def read_parquet(spark: SparkSession, root: str, name: str):
    """A result folder of a finished run (``features``, ``pca``) as a DataFrame.

    A run withdraws the manifest before it changes any result and writes it
    last, so without one the folders may be half-written: refused.
    """
    uri = to_uri(root)
    if not exists(spark, f"{uri}/{MANIFEST}"):
        raise ConfigError(f"{root} has no {MANIFEST}: a run is still writing there, or did not finish")
    return spark.read.parquet(literal_path(f"{uri}/{name}"))


def _fs_path(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def _java_error(exc: Exception) -> str:
    message = str(getattr(exc, "java_exception", exc))
    return message.strip().splitlines()[0] if message.strip() else type(exc).__name__


def exists(spark: SparkSession, uri: str) -> bool:
    try:
        fs, path = _fs_path(spark, uri)
        return bool(fs.exists(path))
    except Exception as exc:  # py4j wraps every Java failure
        raise ConfigError(f"cannot access {uri}: {_java_error(exc)}") from exc


def delete(spark: SparkSession, uri: str) -> None:
    fs, path = _fs_path(spark, uri)
    fs.delete(path, True)


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    write_bytes(spark, uri, text.encode("utf-8"))


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Write a whole file: a reader sees a whole file or none, never half of one
    (written beside, then renamed into place once the old file is deleted, as
    Hadoop's rename does not replace; on S3 an object PUT is atomic anyway)."""
    fs, path = _fs_path(spark, uri)
    partial = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(f"{uri}.partial")
    stream = fs.create(partial, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()
    fs.delete(path, False)
    if not fs.rename(partial, path):
        raise OSError(f"cannot rename {uri}.partial to {uri}")


def has_data_files(spark: SparkSession, uri: str) -> bool:
    """Whether folder ``uri`` exists and holds a data file (not _ or . files)."""
    fs, path = _fs_path(spark, uri)
    if not fs.exists(path):
        return False
    return any(status.isFile() and not _is_hidden(status.getPath().getName()) for status in fs.listStatus(path))


def _is_hidden(name: str) -> bool:
    return name.startswith(("_", "."))  # as Spark's readers: _SUCCESS, _model.json, .crc files


def move_data_files(spark: SparkSession, source: str, target: str) -> int:
    """Move the data files (not _SUCCESS, .crc or hidden files) of folder ``source``
    into folder ``target``, one rename each; returns how many were moved."""
    fs, source_path = _fs_path(spark, source)
    _, target_path = _fs_path(spark, target)
    fs.mkdirs(target_path)
    moved = 0
    for status in fs.listStatus(source_path):
        name = status.getPath().getName()
        if status.isFile() and not _is_hidden(name):
            destination = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(target_path, name)
            if not fs.rename(status.getPath(), destination):
                raise OSError(f"cannot move {status.getPath()} to {destination}")
            moved += 1
    return moved


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    fs, path = _fs_path(spark, uri)
    stream = fs.open(path)
    try:
        return bytes(spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def read_text(spark: SparkSession, uri: str) -> str:
    return read_bytes(spark, uri).decode("utf-8")


def read_manifest(spark: SparkSession, output: str) -> dict:
    uri = f"{output}/{MANIFEST}"
    return json.loads(read_text(spark, uri)) if exists(spark, uri) else {}


def withdraw_manifest(spark: SparkSession, output: str) -> None:
    """Remove the manifest before a run changes the results it describes."""
    delete(spark, f"{output}/{MANIFEST}")


def write_manifest(spark: SparkSession, output: str, manifest: dict) -> None:
    write_text(spark, f"{output}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
