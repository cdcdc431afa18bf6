"""Python workers: stop rereading pyspark.zip before every task.

PySpark 3.5's worker calls ``importlib.invalidate_caches()`` before each task,
and from Python 3.10 every zipimporter then rereads its whole archive there
and then (CPython gh-103200, made lazy in a later Python; Spark calls it only
when needed from SPARK-54744 on). Workers import pyspark from pyspark.zip,
with one importer per package folder: 150-230 ms of CPU per task here (about
0.1 ms once patched), 1-2 s of a 2,000-image featurize in 8 tasks. Patched
once per worker, an importer rereads only an archive that changed since.
"""

from __future__ import annotations

import os
import zipimport


def _signature(archive: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(archive)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def skip_rereading_unchanged_zips() -> None:
    """Make zipimporter.invalidate_caches reread only archives that changed
    (once per process; Pythons before 3.10 have no such method)."""
    reread = getattr(zipimport.zipimporter, "invalidate_caches", None)
    if reread is None or getattr(reread, "skips_unchanged", False):
        return

    def invalidate_caches(self) -> None:
        signature = _signature(self.archive)
        if signature is None or signature != getattr(self, "_read_signature", None):
            reread(self)
            self._read_signature = signature

    invalidate_caches.skips_unchanged = True
    zipimport.zipimporter.invalidate_caches = invalidate_caches
