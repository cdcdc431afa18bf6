import io
import os
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql.types import StringType, StructField, StructType

from fruits.config import Config, ConfigError, cache_dir
from fruits.progress import spark_progress
from fruits.session import FLOAT_VECTOR, PLAIN_FLOAT_COLUMNS, environment, get_spark, history_server_command


def test_get_spark_reuses_the_active_session(spark):
    assert get_spark(Config(master="local[1]", arrow_batch_size=128)) is spark
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == "128"
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"
    get_spark(Config())  # back to the default for the other tests


def test_local_sessions_write_event_logs(spark):
    spark.range(10).count()
    folder = spark.conf.get("spark.eventLog.dir").removeprefix("file://")
    assert spark.conf.get("spark.eventLog.enabled") == "true"
    assert any(name.startswith("local-") for name in os.listdir(folder))


def test_history_server_command_points_at_the_event_logs(tmp_path):
    command = history_server_command(str(tmp_path))
    assert f"spark.history.fs.logDirectory=file://{tmp_path}" in command
    assert command.endswith("sbin/start-history-server.sh")


def test_environment_reports_versions(spark):
    report = environment(spark)
    assert report["spark"].startswith("3.5.")
    assert report["java"].startswith("17")
    assert report["keras"].startswith("3.")
    assert report["spark master"] == "local[2]"


def test_config_from_params_ignores_none_and_rejects_unknown_names():
    assert Config.from_params(batch_size=None, pca_variance=0.9).batch_size == Config().batch_size
    with pytest.raises(ConfigError, match="unknown setting"):
        Config.from_params(pca_varianse=0.9)


class SignallingStream(io.StringIO):
    """Creates ``signal`` once a stage line has been written."""

    def __init__(self, signal: Path) -> None:
        super().__init__()
        self.signal = signal

    def write(self, text: str) -> int:
        if ": stage " in text:
            self.signal.touch()
        return super().write(text)


def test_spark_progress_reports_running_stages(spark, tmp_path):
    """The tasks wait until the reporter has shown their stage, so the test does
    not race a sleep against the polling interval."""
    signal = tmp_path / "reported"
    out = SignallingStream(signal)

    def wait_for_report(rows):
        deadline = time.monotonic() + 60
        while not signal.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return rows

    with spark_progress(spark, "demo", every=0.2, out=out):
        spark.sparkContext.parallelize(range(4), 2).mapPartitions(wait_for_report).count()
    lines = out.getvalue().splitlines()
    assert signal.exists()
    assert any(line.startswith("demo: stage ") and "/2 tasks" in line for line in lines)
    assert lines[-1].startswith("demo: done in ")


def test_the_cache_falls_back_to_a_temporary_folder_when_home_is_not_writable(monkeypatch, tmp_path):
    """Under YARN, HOME is /home/ (not the container user's); here HOME is a file."""
    home = tmp_path / "home"
    home.write_text("")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tempfile.tempdir = None  # gettempdir() caches its answer
    try:
        assert cache_dir() == str(tmp_path / "tmp" / f"fruits-cache-{os.getuid()}")
    finally:
        tempfile.tempdir = None
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == str(tmp_path / ".cache" / "fruits")  # a writable HOME: nothing changes


def test_float_vectors_are_one_plain_repeated_float_column(spark, tmp_path):
    # Repeated values: Parquet keeps a dictionary for them unless told not to.
    vectors = [StructField(name, FLOAT_VECTOR) for name in PLAIN_FLOAT_COLUMNS]
    schema = StructType([StructField("label", StringType()), *vectors])
    rows = spark.createDataFrame([("apple", *[[0.5] * 8] * len(PLAIN_FLOAT_COLUMNS))] * 100, schema)
    rows.coalesce(1).write.parquet(str(tmp_path / "vectors"))
    (part,) = (tmp_path / "vectors").glob("part-*.parquet")
    chunks = pq.ParquetFile(part).metadata.row_group(0)
    encodings = {chunks.column(i).path_in_schema: chunks.column(i).encodings for i in range(chunks.num_columns)}
    assert "PLAIN_DICTIONARY" in encodings["label"]
    for name in PLAIN_FLOAT_COLUMNS:
        assert "PLAIN_DICTIONARY" not in encodings[f"{name}.array"], encodings  # the float itself repeats
    assert pq.read_table(part).column("features").to_pylist()[0] == [0.5] * 8
