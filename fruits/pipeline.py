"""The stages behind `fruits featurize`, `fruits pca` and `fruits run`.

Each stage validates everything it can before writing anything, so a bad
argument or input leaves no partial output behind.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
import time
import uuid
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import fruits
from fruits import engines, output
from fruits.config import Config, ConfigError, cache_dir, to_uri
from fruits.features import FEATURE_DIM, MODEL_NAME, featurize, file_sha256, resolve_weights, task_count
from fruits.images import (
    empty_file_rows,
    limit_per_class,
    listed_files,
    read_image_files,
    read_images,
    sample_contents,
    skipped_by_scan,
)
from fruits.pca import fit_pca, project, save_model, variance_csv

FEATURES = "features"
PCA = "pca"
PCA_MODEL = "pca_model"
VARIANCE_CSV = "explained_variance.csv"
PCA_CSV = "pca_csv"
FEATURIZE_OUTPUTS = (FEATURES,)
MODEL_FILE = "_model.json"  # in features/: the weights that made them (readers skip "_" files)
CALIBRATION_IMAGES = 256  # int8 calibration sample, spread over the input
PCA_OUTPUTS = (PCA, PCA_MODEL, VARIANCE_CSV, PCA_CSV)
PCA_MANIFEST_KEYS = ("pca_k", "explained_variance", "pca_variance_target", "pca_standardized")
PCA_PARAMETERS = ("pca_k", "pca_variance", "standardize", "csv")
STAGING = "_staging"  # chunks being written (ignored by readers: leading underscore)


def _prepare(spark: SparkSession, root: str, names: tuple[str, ...], mode: str) -> None:
    """Refuse existing results (mode error), or withdraw the manifest, then remove
    them. Only the project's own result names are removed, never other files."""
    existing = [name for name in names if output.exists(spark, f"{root}/{name}")]
    if existing and mode == "error":
        raise ConfigError(f"output already exists: {root}/{existing[0]} (use --mode overwrite to replace it)")
    output.withdraw_manifest(spark, root)
    _delete_results(spark, root, existing)


def _delete_results(spark: SparkSession, root: str, names) -> None:
    for name in names:
        output.delete(spark, f"{root}/{name}")


def new_manifest(spark: SparkSession, config: Config) -> dict:
    return {
        "run_id": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8],
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "fruits_version": fruits.__version__,
        "spark_version": spark.version,
        "python_version": platform.python_version(),
        "cores": spark.sparkContext.defaultParallelism,  # for throughput per core (fruits emr cost)
        "parameters": config.as_dict(),
        "seconds": {},
    }


def featurize_stage(spark: SparkSession, config: Config, manifest: dict) -> str:
    """Images under config.input -> <output>/features; returns the output URI."""
    if not config.input or not config.output:
        raise ConfigError("--input and --output are required")
    source, root = to_uri(config.input), to_uri(config.output)
    if root == source or root.startswith(source + "/"):
        raise ConfigError(f"output {config.output} must not be inside input {config.input}")
    models = Path(cache_dir()) / "models"
    weights_path, weights_sha256 = _weights(spark, config, models)
    if not output.exists(spark, source):
        raise ConfigError(f"input not found: {config.input}")
    if config.mode == "error" and output.exists(spark, root):
        raise ConfigError(f"output already exists: {config.output} (use --mode overwrite to replace its results)")
    images = read_images(spark, source)
    listed = listed_files(images)
    input_files = len(listed)
    if config.limit_per_class and input_files:
        images, input_files = limit_per_class(images, config.limit_per_class)
        listed = []  # only scanned (non-empty) files can be chosen
    empty = skipped_by_scan(images, listed) if listed else []
    if input_files == 0:
        raise ConfigError(f"no .jpg/.jpeg/.png images found under {config.input}")
    calibration = sample_contents(images, CALIBRATION_IMAGES) if config.precision == "int8" else ()
    backbone = engines.prepare(
        config.engine,
        weights_path,
        weights_sha256,
        models,
        precision=config.precision,
        calibration=calibration,
        image_size=config.image_size,
    )
    model = {
        "model": MODEL_NAME,
        "weights_sha256": weights_sha256,
        "precision": backbone.precision,
        "image_size": backbone.image_size,
    }
    done = _features_to_add_to(spark, root, model) if config.mode == "incremental" else None
    if config.mode == "overwrite":  # also the chunks a killed incremental run left aside
        _prepare(spark, root, (*FEATURIZE_OUTPUTS, *PCA_OUTPUTS, STAGING), config.mode)
    else:  # error: nothing there yet; incremental: features/ changes in place
        output.withdraw_manifest(spark, root)

    started = time.perf_counter()
    model_json = json.dumps(model, sort_keys=True)
    dropped = 0
    if config.mode == "incremental":
        added, dropped = _featurize_new(
            spark, config, images, backbone, empty, done=done, root=root, run_id=manifest["run_id"], model=model_json
        )
    else:
        tasks = config.partitions or task_count(spark.sparkContext.defaultParallelism, input_files)
        rows = featurize(images, backbone, tasks, config.batch_size)
        if empty:
            rows = rows.unionByName(empty_file_rows(spark, empty))
        rows.write.parquet(f"{root}/{FEATURES}")  # one job: _SUCCESS marks it whole
        output.write_text(spark, f"{root}/{FEATURES}/{MODEL_FILE}", model_json)
        added = input_files
    counts = (
        spark.read.parquet(output.literal_path(f"{root}/{FEATURES}"))
        .agg(F.count("features").alias("featurized"), F.count("error").alias("failed"))
        .first()
    )
    seconds = time.perf_counter() - started
    manifest.update(
        input=source,
        output=root,
        input_files=input_files,
        featurized=counts["featurized"],
        failed=counts["failed"],
        feature_dim=FEATURE_DIM,
        model=MODEL_NAME,
        weights=config.weights,
        weights_sha256=weights_sha256,
        engine=backbone.engine,
        engine_versions=backbone.versions,
        precision=backbone.precision,
        image_size=backbone.image_size,
        calibration=backbone.calibration,
        added=added,
        dropped=dropped,
        images_per_second=round(added / seconds, 2),
    )
    manifest["seconds"]["featurize"] = round(seconds, 2)
    return root


def _weights(spark: SparkSession, config: Config, models: Path) -> tuple[Path | None, str]:
    """The Keras weights file and its SHA-256; with --onnx-model, no weights file
    (the model says which weights it was converted from)."""
    if not config.onnx_model:
        weights_path = resolve_weights(config.weights)
        return weights_path, file_sha256(weights_path)
    uri = to_uri(config.onnx_model)
    if not output.exists(spark, uri):
        raise ConfigError(f"ONNX model not found: {config.onnx_model}")
    return None, engines.seed_onnx_cache(output.read_bytes(spark, uri), config.onnx_model, models)


def _features_to_add_to(spark: SparkSession, root: str, model: dict) -> DataFrame | None:
    """--mode incremental: the features already in <root>, checked before anything
    changes: they must carry file sizes and times, and come from the same weights."""
    features_uri = f"{root}/{FEATURES}"
    if not output.has_data_files(spark, features_uri):  # also a first run killed before its first commit
        return None
    done = spark.read.parquet(output.literal_path(features_uri))
    if not {"size", "modified"} <= set(done.columns):
        raise ConfigError(f"{features_uri} was written without file sizes and times; use --mode overwrite once")
    model_uri = f"{features_uri}/{MODEL_FILE}"
    recorded = (
        {"image_size": 224} | json.loads(output.read_text(spark, model_uri))
        if output.exists(spark, model_uri)
        else model
    )
    if recorded != model:  # (features written before --image-size existed are 224)
        raise ConfigError(f"{features_uri} was made with other weights, precision or image size; use --mode overwrite")
    return done


def _featurize_new(
    spark: SparkSession,
    config: Config,
    images: DataFrame,
    backbone: engines.Backbone,
    empty: list[str],
    *,
    done: DataFrame | None,
    root: str,
    run_id: str,
    model: str,
) -> tuple[int, int]:
    """--mode incremental: featurize only images not in ``done`` (<root>/features)
    with the same path, size and modification time, drop the rows of files
    changed, deleted or emptied since, and commit the new rows in chunks of
    config.commit_every images. A chunk is written aside, then its files are
    moved into features/ one by one: whatever a killed run committed counts as
    done, so a rerun adds every image exactly once. The model file (``model``)
    is in features/ before the first commit, so a rerun with another model is
    refused even then. Returns how many rows were added and dropped."""
    features_uri = f"{root}/{FEATURES}"
    listing = images.select("path", "size", "modified")
    todo = listing
    if done is not None:  # everything read from it is collected before it is rewritten
        known = ["path", "size", "modified"]
        todo = listing.join(done.select(known), known, "left_anti")
    paths = sorted(row["path"] for row in todo.select("path").collect())
    dropped = 0
    if done is not None:
        recorded_empty = F.col("path").isin(empty) & (F.col("size") == 0)
        empty = sorted(set(empty) - {row["path"] for row in done.where(recorded_empty).select("path").collect()})
        stale = done.select(known).join(listing, known, "left_anti").where(~recorded_empty)
        dropped = stale.count()
        if dropped:
            _drop_rows(spark, root, run_id, stale.select("path"))
    output.write_text(spark, f"{features_uri}/{MODEL_FILE}", model)
    if empty:  # no bytes to featurize: their error rows are one small commit
        staging = f"{root}/{STAGING}/{run_id}-empty"
        empty_file_rows(spark, empty).write.parquet(staging)
        output.move_data_files(spark, staging, features_uri)
    chunks = [paths[start : start + config.commit_every] for start in range(0, len(paths), config.commit_every)]
    print(f"fruits: {len(paths)} new or changed images, {len(chunks)} commit(s)", file=sys.stderr)
    for number, chunk in enumerate(chunks, 1):
        staging = f"{root}/{STAGING}/{run_id}-{number}"
        tasks = config.partitions or task_count(spark.sparkContext.defaultParallelism, len(chunk))
        featurize(read_image_files(spark, chunk), backbone, tasks, config.batch_size).write.parquet(staging)
        output.move_data_files(spark, staging, features_uri)
        print(f"fruits: committed {number}/{len(chunks)} ({len(chunk)} images)", file=sys.stderr)
    output.delete(spark, f"{root}/{STAGING}")  # also what a killed run left there
    return len(paths) + len(empty), dropped


def _drop_rows(spark: SparkSession, root: str, run_id: str, paths: DataFrame) -> None:
    """Rewrite features/ without the rows of ``paths`` (files changed, deleted or
    emptied since they were featurized)."""
    features_uri = f"{root}/{FEATURES}"
    kept = f"{root}/{STAGING}/{run_id}-kept"
    spark.read.parquet(output.literal_path(features_uri)).join(paths, "path", "left_anti").write.parquet(kept)
    output.delete(spark, features_uri)
    output.move_data_files(spark, kept, features_uri)
    output.delete(spark, kept)


def pca_stage(spark: SparkSession, config: Config, root: str, manifest: dict) -> None:
    """<root>/features -> <root>/pca, pca_model, explained_variance.csv (and pca_csv)."""
    features_uri = f"{root}/{FEATURES}"
    if not output.exists(spark, features_uri):
        raise ConfigError(f"no features at {features_uri}: run `fruits featurize` first")
    started = time.perf_counter()
    features = spark.read.parquet(output.literal_path(features_uri))
    featurized = features.where(F.col("features").isNotNull()).limit(2).count()
    if featurized < 2:  # checked before anything is replaced
        raise ConfigError(f"PCA needs at least 2 images with features, {featurized} in {features_uri}")
    _prepare(spark, root, PCA_OUTPUTS, config.mode)
    fit = fit_pca(features, k=config.pca_k, variance=config.pca_variance, standardize=config.standardize)
    save_model(spark, fit.model, f"{root}/{PCA_MODEL}")
    projected = project(fit.model, features)
    projected.write.parquet(f"{root}/{PCA}")
    output.write_text(spark, f"{root}/{VARIANCE_CSV}", variance_csv(fit.explained_variance))
    if config.csv:
        pca_columns = [F.col("pca")[i].alias(f"pc{i + 1}") for i in range(fit.k)]
        (
            spark.read.parquet(output.literal_path(f"{root}/{PCA}"))
            .select("path", "label", "split", *pca_columns)
            .coalesce(1)
            .write.option("header", "true")
            .csv(f"{root}/{PCA_CSV}")
        )
    manifest.update(
        pca_k=fit.k,
        explained_variance=round(float(fit.cumulative[fit.k - 1]), 6),
        pca_variance_target=None if config.pca_k else config.pca_variance,
        pca_standardized=config.standardize,
    )
    manifest["seconds"]["pca"] = round(time.perf_counter() - started, 2)


def run_featurize(spark: SparkSession, config: Config) -> dict:
    manifest = new_manifest(spark, config)
    root = featurize_stage(spark, config, manifest)
    _delete_results(spark, root, PCA_OUTPUTS)  # incremental: a PCA of the earlier features would outlive them
    manifest["seconds"]["total"] = manifest["seconds"]["featurize"]
    output.write_manifest(spark, root, manifest)
    return manifest


def run_pca(spark: SparkSession, config: Config, root: str | None = None) -> dict:
    """PCA on a `fruits featurize` output folder (``root``, default config.input
    as in `fruits pca --input`), written next to its features; its manifest is updated."""
    location = root or config.input
    if not location:
        raise ConfigError("--input (a folder written by `fruits featurize`) is required")
    root = to_uri(location)
    if not output.exists(spark, root):
        raise ConfigError(f"input not found: {location}")
    manifest = output.read_manifest(spark, root)
    # What a killed run leaves: Spark's _temporary (one job) or chunks aside (incremental).
    leftovers = [f"{root}/{FEATURES}/_temporary", f"{root}/{STAGING}"]
    if not manifest and any(output.exists(spark, uri) for uri in leftovers):
        raise ConfigError(
            f"{location} has no manifest and holds a killed run's leftovers: its features are not whole "
            "(rerun `fruits featurize`; --mode incremental completes them)"
        )
    manifest = manifest or new_manifest(spark, config)
    manifest.setdefault("output", root)
    pca_stage(spark, config, root, manifest)
    manifest["seconds"]["total"] = round(sum(manifest["seconds"].get(s, 0) for s in ("featurize", "pca")), 2)
    output.write_manifest(spark, root, manifest)
    return manifest


def run_all(spark: SparkSession, config: Config) -> dict:
    """Featurize then PCA; the manifest is written last, once both succeeded."""
    started = time.perf_counter()
    manifest = new_manifest(spark, config)
    incremental = config.mode == "incremental" and config.output
    previous = output.read_manifest(spark, to_uri(config.output)) if incremental else {}
    root = featurize_stage(spark, config, manifest)
    same_pca = all(previous.get("parameters", {}).get(name) == getattr(config, name) for name in PCA_PARAMETERS)
    unchanged = manifest["added"] == manifest["dropped"] == 0
    if unchanged and "pca_k" in previous and same_pca:  # the same features: keep the PCA as it is
        manifest.update({key: previous[key] for key in PCA_MANIFEST_KEYS if key in previous})
        manifest["seconds"]["pca"] = 0.0
    else:
        try:
            pca_stage(spark, config, root, manifest)
        except ConfigError as exc:  # the features are whole: kept as `fruits featurize` keeps them
            _delete_results(spark, root, PCA_OUTPUTS)  # (incremental: a PCA of earlier features)
            manifest["seconds"]["total"] = manifest["seconds"]["featurize"]
            output.write_manifest(spark, root, manifest)
            raise ConfigError(f"{exc}; the features are written") from exc
    manifest["seconds"]["total"] = round(time.perf_counter() - started, 2)
    output.write_manifest(spark, root, manifest)
    return manifest
