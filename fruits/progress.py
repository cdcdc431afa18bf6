"""Spark progress for notebooks, where the console progress bar is not shown."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession


@contextmanager
def spark_progress(spark: SparkSession, label: str, every: float = 10.0, out=None) -> Iterator[None]:
    """Print the active stages' finished/total tasks every ``every`` seconds
    while the block runs, then the block's wall time, to ``out`` (default: the
    sys.stdout of the moment each line is written: Livy gives every notebook
    statement a new one and closes it afterwards)."""
    tracker = spark.sparkContext.statusTracker()
    done = threading.Event()

    def report() -> None:
        while not done.wait(every):
            stages = [tracker.getStageInfo(stage) for stage in tracker.getActiveStageIds()]
            parts = [f"stage {s.stageId}: {s.numCompletedTasks}/{s.numTasks} tasks" for s in stages if s]
            if parts:
                print(f"{label}: {'; '.join(parts)}", file=out or sys.stdout, flush=True)

    reporter = threading.Thread(target=report, daemon=True)
    started = time.perf_counter()
    reporter.start()
    try:
        yield
    finally:
        done.set()
        reporter.join()
        print(f"{label}: done in {time.perf_counter() - started:.1f} s", file=out or sys.stdout, flush=True)
