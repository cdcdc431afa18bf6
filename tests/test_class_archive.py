"""Local sessions map Spark's classes from the archive; an incomplete one is never used."""

import os
import subprocess
import sys
from pathlib import Path

from fruits import class_archive


def test_a_local_session_loads_most_classes_from_the_archive(tmp_path):
    loaded = tmp_path / "classes.log"
    script = "from fruits.session import get_spark; print(get_spark().range(7).count())"
    environment = {**os.environ, "JAVA_TOOL_OPTIONS": f"-Xlog:class+load=info:file={loaded}"}
    run = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=False)
    assert (run.returncode, run.stdout.strip()) == (0, "7"), run.stderr[-2000:]
    sources = loaded.read_text().splitlines()
    shared = sum(line.endswith("source: shared objects file (top)") for line in sources)
    from_jars = sum("source: jar:" in line or "source: file:" in line for line in sources)
    assert shared > 5000, (shared, from_jars)
    assert from_jars < shared / 4, (shared, from_jars)


def test_an_incomplete_archive_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    archive = class_archive.archive_path()
    assert class_archive.java_options() == ""
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"\0" * 1000)  # as a copy cut short, which crashes Java (SIGBUS)
    Path(f"{archive}.bytes").write_text("195145728")
    assert not class_archive.usable(archive)
    assert "SharedArchiveFile" not in class_archive.java_options()
    Path(f"{archive}.bytes").write_text("1000")
    assert class_archive.java_options() == f"-XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off"
