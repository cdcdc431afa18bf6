"""A class-data-sharing (AppCDS) archive for local Spark drivers.

A local session's JVM parses some 11,000 classes out of pyspark's jars
before the first job ends; Java 17 can instead map them from one archive file
written by an earlier run (``-XX:ArchiveClassesAtExit``, then
``-XX:SharedArchiveFile``). Measured on 2 cores: a session starts in 3.6 s
instead of 8.4 s, and its first jobs take half as long. The archive is built
once (`python -m fruits.class_archive`, which `make` runs after the install;
the test suite too) under the user's cache, named after the Java and the
pyspark it was built with. Java checks the class path itself and, should it
differ, starts without the archive (``-Xshare:auto``), so a stale file costs
the speed-up, never the run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyspark

from fruits.config import cache_dir

# Set by `build` for the one process that writes the archive at its JVM's exit.
_DUMP_TO = "FRUITS_CLASS_ARCHIVE_DUMP"
# The warnings of a dump ("Skipping ...: Signed JAR") and of a mismatched archive say
# nothing a user can act on.
_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def java_binary() -> Path | None:
    """The java Spark will run: JAVA_HOME's, else the first on PATH (None if neither)."""
    home = os.environ.get("JAVA_HOME")
    found = Path(home) / "bin" / "java" if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).exists() else None


def _jars() -> Path:
    return Path(pyspark.__file__).parent / "jars"


def archive_path() -> Path | None:
    """Where the archive for this Java and this pyspark lives (None without Java)."""
    java, jars = java_binary(), _jars()
    if java is None or not jars.is_dir():  # no Java, or a pyspark without jars (SPARK_HOME's are used)
        return None
    facts = [str(java), str(java.stat().st_mtime_ns), pyspark.__version__, str(jars), str(jars.stat().st_mtime_ns)]
    key = hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]
    return Path(cache_dir()) / "jvm" / f"spark-{pyspark.__version__}-{key}.jsa"


def _record(archive: Path) -> Path:
    """Beside each archive: its size and the jars folder it was built for."""
    return archive.with_name(f"{archive.name}.json")


def usable(archive: Path | None) -> bool:
    """The archive is complete: Java validates its header and class path, but a
    truncated file (a full disk, an interrupted copy) crashes it (SIGBUS)."""
    try:
        return archive is not None and archive.stat().st_size == json.loads(_record(archive).read_text())["bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def java_options() -> str:
    """The driver's JVM options for the archive: map it, or write it at exit (`build`).
    Quoted: Spark splits these options at spaces, and a cache path may hold one."""
    if os.environ.get(_DUMP_TO):
        return f'"-XX:ArchiveClassesAtExit={os.environ[_DUMP_TO]}" {_QUIET}'
    archive = archive_path()
    return f'"-XX:SharedArchiveFile={archive}" {_QUIET}' if usable(archive) else ""


def _forget_other_venvs(folder: Path) -> None:
    """Archives of venvs that are gone (`make clean`, another checkout): 190 MB each."""
    for record in folder.glob("*.jsa.json"):
        try:
            if not Path(json.loads(record.read_text())["jars"]).is_dir():
                record.with_suffix("").unlink(missing_ok=True)
                record.unlink()
        except (OSError, ValueError, KeyError, TypeError):
            continue


def _workload() -> None:
    """What a run's driver loads classes for: a binaryFile scan, Arrow Python
    UDFs, Parquet written and read back, a collect to pandas, Spark ML."""
    from pyspark.sql import functions as F

    from fruits.config import Config
    from fruits.images import read_images
    from fruits.pca import fit_pca, project
    from fruits.probe import linear_probe
    from fruits.sample_data import make_sample
    from fruits.session import FLOAT_VECTOR, get_spark

    with tempfile.TemporaryDirectory() as scratch:
        make_sample(Path(scratch) / "images")
        spark = get_spark(Config(master="local[2]", event_log_dir=str(Path(scratch) / "events")))
        fake_features = F.udf(lambda data: [float(byte) for byte in data[:64]], FLOAT_VECTOR, useArrow=True)
        images = read_images(spark, Path(scratch, "images").as_uri())
        features = images.select("path", "label", "split", fake_features("content").alias("features"))
        features.write.parquet(Path(scratch, "features").as_uri())
        written = spark.read.parquet(Path(scratch, "features").as_uri())
        project(fit_pca(written, k=2).model, written).write.parquet(Path(scratch, "pca").as_uri())
        projected = spark.read.parquet(Path(scratch, "pca").as_uri())
        projected.groupBy("label").count().toPandas()
        linear_probe(projected, max_iter=3)  # Spark ML, as `fruits train` and the notebooks' probe
        driver = spark.sparkContext._gateway.proc
        spark.stop()
    driver.stdin.close()  # the JVM exits when its stdin closes, and writes the archive as it does
    raise SystemExit(driver.wait())


def build(force: bool = False) -> Path | None:
    """Write the archive unless it exists; None where it cannot be (no Java, a
    Java that cannot write one, a cache it cannot write to: the workload's
    output is then in ``jvm/build.log``). Takes about a minute."""
    archive = archive_path()
    if archive is None or (usable(archive) and not force):
        return archive
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
        with open(archive.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (parallel test workers); the others reuse it
            if usable(archive) and not force:
                return archive
            partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")
            environment = {**os.environ, _DUMP_TO: str(partial)}
            command = [sys.executable, "-m", "fruits.class_archive", "--workload"]
            try:
                done = subprocess.run(command, env=environment, capture_output=True, check=False, timeout=600)
            except subprocess.TimeoutExpired as expired:
                done = subprocess.CompletedProcess(command, -1, expired.stdout or b"", expired.stderr or b"")
            if done.returncode != 0 or not partial.is_file():
                (archive.parent / "build.log").write_bytes(done.stdout + done.stderr)
                partial.unlink(missing_ok=True)
                return None
            record = partial.with_suffix(".json")
            record.write_text(json.dumps({"bytes": partial.stat().st_size, "jars": str(_jars())}))
            os.replace(partial, archive)
            os.replace(record, _record(archive))
            _forget_other_venvs(archive.parent)
    except OSError:
        return None
    return archive


if __name__ == "__main__":
    if sys.argv[1:] == ["--workload"]:
        _workload()
    else:
        built, expected = build(force="--force" in sys.argv[1:]), archive_path()
        if built:
            print(built)
        else:
            why = f"Java's output is in {expected.parent / 'build.log'}" if expected else "no Java, or no pyspark jars"
            print(f"no class archive ({why}); Spark starts without one", file=sys.stderr)
