"""PCA benchmark, side by side on the same real features; prints JSON.

    .venv/bin/python bench/pca.py --features OUT [--repeat 2]

OUT is a `fruits featurize` output (the README measures the 11,280 shared
Fruits-360 images). In one local[*] SparkSession, best of ``--repeat``:

* fruits: `fruits.pca.fit_pca` (covariance per partition, numpy eigh on the
  driver, k from the curve), then the centred projection written as Parquet;
* spark_ml: what the project did before: Spark ML `PCA` fitted over all
  components for the curve, again with k, then `transform` written as Parquet
  (the JVM's LAPACK: native when the system has one, pure Java otherwise);
* sklearn (reference only, if scikit-learn is installed): the features
  collected to the driver, `sklearn.decomposition.PCA` (full SVD) and its
  `transform`; it needs every vector in the driver's memory, which does not
  scale to a cluster.

Each reports fit_s, project_s, total_s, k and the largest difference of its
explained-variance curve from fruits' one. Also: whether the JVM found a native
LAPACK, and the machine's load average.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANCE = 0.95


def best_of(repeat: int, run) -> dict:
    results = [run() for _ in range(repeat)]
    return min(results, key=lambda result: result["total_s"])


def fruits_pca(features, scratch: Path) -> dict:
    from fruits.pca import fit_pca, project

    started = time.perf_counter()
    fit = fit_pca(features, variance=VARIANCE)
    fitted = time.perf_counter()
    project(fit.model, features).write.mode("overwrite").parquet(str(scratch / "fruits"))
    done = time.perf_counter()
    return {
        "fit_s": fitted - started,
        "project_s": done - fitted,
        "total_s": done - started,
        "k": fit.k,
        "curve": fit.explained_variance,
    }


def spark_ml_pca(features, scratch: Path) -> dict:
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    from fruits.pca import choose_k

    vectors = features.where(F.col("features").isNotNull()).select(array_to_vector("features").alias("vector")).cache()
    started = time.perf_counter()
    dim = len(vectors.first()["vector"])
    full = PCA(k=dim, inputCol="vector", outputCol="pca").fit(vectors)
    curve = full.explainedVariance.toArray()
    k = choose_k(curve, VARIANCE)
    model = PCA(k=k, inputCol="vector", outputCol="pca").fit(vectors)
    fitted = time.perf_counter()
    model.transform(vectors).select("pca").write.mode("overwrite").parquet(str(scratch / "spark_ml"))
    done = time.perf_counter()
    vectors.unpersist()
    return {"fit_s": fitted - started, "project_s": done - fitted, "total_s": done - started, "k": k, "curve": curve}


def sklearn_pca(features) -> dict:
    from pyspark.sql import functions as F
    from sklearn.decomposition import PCA

    started = time.perf_counter()
    matrix = np.stack(features.where(F.col("features").isNotNull()).select("features").toPandas()["features"])
    collected = time.perf_counter()
    model = PCA(svd_solver="full").fit(matrix.astype(np.float64))
    curve = model.explained_variance_ratio_
    k = int(np.searchsorted(np.cumsum(curve), VARIANCE - 1e-9) + 1)
    fitted = time.perf_counter()
    model.transform(matrix)[:, :k]
    done = time.perf_counter()
    return {
        "collect_s": collected - started,
        "fit_s": fitted - collected,
        "project_s": done - fitted,
        "total_s": done - started,
        "k": k,
        "curve": curve,
    }


def native_lapack(spark) -> str:
    return str(spark.sparkContext._jvm.dev.ludovic.netlib.lapack.LAPACK.getInstance().getClass().getName())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="an output folder of `fruits featurize`")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from fruits.config import Config
    from fruits.output import literal_path
    from fruits.session import get_spark

    load_before = os.getloadavg()
    spark = get_spark(Config(master="local[*]"))
    features = spark.read.parquet(literal_path(str(Path(args.features).resolve() / "features")))
    rows = features.where("features IS NOT NULL").count()
    scratch = Path(tempfile.mkdtemp(prefix="fruits-bench-pca-"))
    try:
        results = {
            "fruits": best_of(args.repeat, lambda: fruits_pca(features, scratch)),
            "spark_ml": best_of(args.repeat, lambda: spark_ml_pca(features, scratch)),
        }
        if importlib.util.find_spec("sklearn"):
            results["sklearn"] = best_of(args.repeat, lambda: sklearn_pca(features))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    curve = results["fruits"]["curve"]
    for result in results.values():
        for key, value in result.items():
            result[key] = round(value, 3) if isinstance(value, float) else value
        result["curve_max_abs_diff"] = float(f"{np.abs(result.pop('curve') - curve).max():.2e}")
    report = {
        "rows": rows,
        "dimensions": len(curve),
        "variance_target": VARIANCE,
        "jvm_lapack": native_lapack(spark),
        "results": results,
        "fruits_vs_spark_ml": round(results["spark_ml"]["total_s"] / results["fruits"]["total_s"], 1),
        "machine": {"cores": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg()},
    }
    if "sklearn" in results:
        report["fruits_vs_sklearn"] = round(results["sklearn"]["total_s"] / results["fruits"]["total_s"], 2)
    print(json.dumps(report, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
