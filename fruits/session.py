"""The one SparkSession builder used by the CLI, notebooks, tests and EMR steps."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql.types import ArrayType, FloatType

from fruits import class_archive
from fruits.config import Config, ConfigError, package_version, to_uri

# How float vectors (features, pca) are written, both measured with JFR and
# side by side on 2,000 images, warm:
# - Parquet's standard list layout makes each element a group of its own (a
#   start and end per float, 1280 per image); Spark's legacy layout writes
#   lists whose elements cannot be null as one repeated float column. JVM
#   CPU 3.6 -> 2.6 s, throughput +5%. Spark, pandas and pyarrow read both
#   layouts, also mixed in one folder (features written before this).
# - Float vectors almost never repeat a value, yet Parquet tries a dictionary
#   for each column chunk first and falls back to plain only when it
#   overflows: off for these columns, JVM CPU 5.0 -> 3.6 s.
# Session settings reach the Parquet writer's Hadoop configuration.
FLOAT_VECTOR = ArrayType(FloatType(), containsNull=False)
PLAIN_FLOAT_COLUMNS = ("features", "pca")


def runtime_conf(config: Config) -> dict[str, str]:
    """SQL settings that can be applied to a session that already exists."""
    return {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(config.arrow_batch_size),
        "spark.sql.parquet.compression.codec": "snappy",
        "spark.sql.parquet.writeLegacyFormat": "true",  # for FLOAT_VECTOR columns: see above
        **{f"parquet.enable.dictionary#{name}.array": "false" for name in PLAIN_FLOAT_COLUMNS},
    }


# A local run's JVM shares the cores with the inference workers; the C2 JIT
# compiler alone took 13 s of CPU in a 35 s run of 2,000 images. C1 only: the
# featurize stage ran ~20% faster here (JVM work is light: file reads, Arrow).
# Its logging: warnings on stderr, without start-up notices (fruits/log4j2.properties).
LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
LOCAL_JVM_OPTIONS = f'-XX:TieredStopAtLevel=1 "-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}"'


def get_spark(config: Config | None = None) -> SparkSession:
    """Reuse the active session (EMR Studio, JupyterHub, tests) or start one.

    A new session runs on ``config.master`` (default ``local[*]``). Python
    workers run this interpreter unless PYSPARK_PYTHON says otherwise (EMR sets
    it to the bootstrap's venv), so they import the same stack as the driver.
    """
    config = config or Config()
    spark = SparkSession.getActiveSession()
    if spark is None:
        if class_archive.java_binary() is None:
            raise ConfigError("Java not found: Spark needs Java 17 (install it, or set JAVA_HOME)")
        master = config.master or "local[*]"
        builder = (
            SparkSession.builder.appName("fruits")
            .master(master)
            .config("spark.driver.memory", config.driver_memory)
            .config("spark.ui.showConsoleProgress", "true")
        )
        if master.startswith("local"):  # clusters (EMR) keep their own event logs and JVM options
            builder = (
                # Over 32 folders (Fruits-360: 2 per class) Spark lists files with a
                # job; on one machine the driver alone lists 2,000 images in 0.3 s
                # instead of 3 s. Clusters keep the parallel listing (S3, HDFS).
                builder.config("spark.sql.sources.parallelPartitionDiscovery.threshold", "100000")
                .config("spark.eventLog.enabled", "true")
                .config("spark.eventLog.dir", _event_log_uri(config.event_log_dir))
                .config("spark.driver.extraJavaOptions", f"{LOCAL_JVM_OPTIONS} {class_archive.java_options()}")
            )
        # PySpark takes the workers' interpreter from this variable (default:
        # whatever `python3` is on PATH, which lacks this venv's packages).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
    for key, value in runtime_conf(config).items():
        spark.conf.set(key, value)
    return spark


def _event_log_uri(location: str) -> str:
    uri = to_uri(location)
    if uri.startswith("file://"):
        os.makedirs(uri.removeprefix("file://"), exist_ok=True)  # Spark will not create it
    return uri


def history_server_command(event_log_dir: str) -> str:
    """Shell command that serves the event logs at http://localhost:18080
    (the same UI EMR shows), with the History Server pyspark ships."""
    import pyspark

    script = Path(pyspark.__file__).parent / "sbin" / "start-history-server.sh"
    return f'SPARK_HISTORY_OPTS="-Dspark.history.fs.logDirectory={_event_log_uri(event_log_dir)}" {script}'


def environment(spark: SparkSession) -> dict[str, str]:
    """Versions and resources a run depends on, for notebooks and bug reports."""
    return {
        "python": platform.python_version(),
        "java": spark.sparkContext._jvm.System.getProperty("java.version"),
        "spark": spark.version,
        **{name: package_version(name) for name in ("pyspark", "tensorflow-cpu", "keras", "onnxruntime", "pillow")},
        "cores": str(os.cpu_count()),
        "spark master": spark.sparkContext.master,
        "default parallelism": str(spark.sparkContext.defaultParallelism),
        "Spark UI": spark.sparkContext.uiWebUrl or "disabled",
        "event logs": spark.conf.get("spark.eventLog.dir", "not enabled"),
    }
