"""The one SparkSession builder used by the CLI, notebooks, tests and EMR steps."""

from __future__ import annotations

import os
import shutil
import sys

from pyspark.sql import SparkSession

from fruits.config import Config, ConfigError


def runtime_conf(config: Config) -> dict[str, str]:
    """SQL settings that can be applied to a session that already exists."""
    return {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(config.arrow_batch_size),
        "spark.sql.parquet.compression.codec": "snappy",
    }


def get_spark(config: Config | None = None) -> SparkSession:
    """Reuse the active session (EMR Studio, JupyterHub, tests) or start one.

    A new session runs on ``config.master`` (default ``local[*]``). Python
    workers run this interpreter unless PYSPARK_PYTHON says otherwise (EMR sets
    it to the bootstrap's venv), so they import the same stack as the driver.
    """
    config = config or Config()
    spark = SparkSession.getActiveSession()
    if spark is None:
        if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
            raise ConfigError("Java not found: Spark needs Java 17 (install it, or set JAVA_HOME)")
        builder = (
            SparkSession.builder.appName("fruits")
            .master(config.master or "local[*]")
            .config("spark.driver.memory", config.driver_memory)
            .config("spark.ui.showConsoleProgress", "true")
        )
        # PySpark takes the workers' interpreter from this variable (default:
        # whatever `python3` is on PATH, which lacks this venv's packages).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
    for key, value in runtime_conf(config).items():
        spark.conf.set(key, value)
    return spark
